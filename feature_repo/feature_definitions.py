"""segrec's Feast objects, in Feast's own order: entities, sources, feature views, services.

Source paths come from ``SEGREC_FEATURES_DIR`` (set by ``segrec.feature_store`` from the
settings), so the same definitions serve any data directory.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float32, Float64, Int64, String

FEATURES_DIR = Path(os.environ.get("SEGREC_FEATURES_DIR", "data/features")).resolve()

# ---- entities ------------------------------------------------------------------------
customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A shopper, by pseudonymous id (c_<16 hex>).",
)
product = Entity(
    name="product",
    join_keys=["product_id"],
    value_type=ValueType.STRING,
    description="A catalogue product.",
)

# ---- sources -------------------------------------------------------------------------
customer_features_source = FileSource(
    name="customer_features_source",
    path=str(FEATURES_DIR / "customer_features.parquet"),
    timestamp_field="event_timestamp",
    description="Customer feature snapshots from training/features (one row per as-of time).",
)
customer_segment_source = FileSource(
    name="customer_segment_source",
    path=str(FEATURES_DIR / "customer_segments.parquet"),
    timestamp_field="event_timestamp",
    description="Segment assignments written by training/segmentation.",
)
customer_embedding_source = FileSource(
    name="customer_embedding_source",
    path=str(FEATURES_DIR / "customer_embeddings.parquet"),
    timestamp_field="event_timestamp",
    description="Customer model state written by make train: latent factors and the recent "
    "history serving scores from.",
)
customer_value_source = FileSource(
    name="customer_value_source",
    path=str(FEATURES_DIR / "customer_value.parquet"),
    timestamp_field="event_timestamp",
    description="Churn risk and customer lifetime value written by make train "
    "(training/customer_value).",
)
product_features_source = FileSource(
    name="product_features_source",
    path=str(FEATURES_DIR / "product_features.parquet"),
    timestamp_field="event_timestamp",
    description="Product feature snapshots from training/features.",
)
customer_session_batch_source = FileSource(
    name="customer_session_batch_source",
    path=str(FEATURES_DIR / "customer_sessions.parquet"),
    timestamp_field="event_timestamp",
    description="Offline copy of live session aggregates (filled from the event log).",
)
customer_session_push = PushSource(
    name="customer_session_push",
    batch_source=customer_session_batch_source,
    description="Live session aggregates pushed by POST /events.",
)

# ---- feature views -------------------------------------------------------------------
customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=730),
    schema=[
        Field(name="age", dtype=Float64),
        Field(name="gender", dtype=String),
        Field(name="country", dtype=String),
        Field(name="city", dtype=String),
        Field(name="tenure_days", dtype=Float64),
        Field(name="consent_personalisation", dtype=Bool),
        Field(name="interactions", dtype=Int64),
    ],
    source=customer_features_source,
    online=True,
    tags={"owner": "segrec", "group": "customer"},
)

customer_behaviour = FeatureView(
    name="customer_behaviour",
    entities=[customer],
    ttl=timedelta(days=90),
    schema=[
        *[
            Field(name=name, dtype=Float64)
            for name in (
                "recency_days",
                "monetary_total",
                "avg_order_value",
                "purchase_gap_mean_days",
                "purchase_gap_std_days",
                "price_band_low_share",
                "price_band_mid_share",
                "price_band_high_share",
                "cart_rate_90d",
                "purchase_rate_90d",
                "abandonment_rate_90d",
                "discount_affinity",
                "mean_rating",
                "days_since_last_event",
                "missed_visits",
                "novelty_share",
                "interaction_rate_30d",
                "views_per_session",
                "repeat_view_share",
                "mean_basket_quantity",
            )
        ],
        *[
            Field(name=name, dtype=Int64)
            for name in (
                "frequency",
                "rfm_r",
                "rfm_f",
                "rfm_m",
                "rfm_score",
                "views_90d",
                "carts_90d",
                "purchases_90d",
                "sessions_90d",
                "active_days_90d",
                "ratings",
            )
        ],
        Field(name="rfm_cell", dtype=String),
        Field(name="top_category", dtype=String),
        Field(name="preferred_price_band", dtype=String),
        Field(name="category_shares", dtype=Array(Float32)),
    ],
    source=customer_features_source,
    online=True,
    tags={"owner": "segrec", "group": "customer"},
)

customer_segment = FeatureView(
    name="customer_segment",
    entities=[customer],
    ttl=timedelta(days=90),
    schema=[
        Field(name="segment_id", dtype=Int64),
        Field(name="segment_name", dtype=String),
        Field(name="segment_version", dtype=String),
        Field(name="lifecycle_stage", dtype=String),
        Field(name="segment_probability", dtype=Float64),
        Field(name="segment_outlier", dtype=Bool),
    ],
    source=customer_segment_source,
    online=True,
    tags={"owner": "segrec", "group": "customer", "filled_by": "make segments"},
)

customer_embedding = FeatureView(
    name="customer_embedding",
    entities=[customer],
    ttl=timedelta(days=90),
    schema=[
        Field(name="als_factors", dtype=Array(Float32)),
        Field(name="svd_factors", dtype=Array(Float32)),
        Field(name="svd_bias", dtype=Float64),
        Field(name="model_version", dtype=String),
        # The newest events at training time (newest first; event type codes as in
        # segrec.scoring.EVENT_TYPES), so serving can profile and fold the customer in
        # again when the live session adds to it; purchases for the already-bought filter.
        Field(name="history_items", dtype=Array(String)),
        Field(name="history_types", dtype=Array(Int64)),
        Field(name="history_unix", dtype=Array(Int64)),
        Field(name="history_purchases", dtype=Array(String)),
    ],
    source=customer_embedding_source,
    online=True,
    tags={"owner": "segrec", "group": "customer", "filled_by": "make train"},
)

customer_value = FeatureView(
    name="customer_value",
    entities=[customer],
    ttl=timedelta(days=90),
    schema=[
        # Chance of no purchase within SEGREC_CHURN_HORIZON_DAYS (calibrated, 0..1).
        Field(name="churn_risk", dtype=Float64),
        # Expected spend over SEGREC_CLV_HORIZON_DAYS, and its low/mid/high band.
        Field(name="clv_expected", dtype=Float64),
        Field(name="clv_band", dtype=String),
        Field(name="value_model_version", dtype=String),
    ],
    source=customer_value_source,
    online=True,
    tags={"owner": "segrec", "group": "customer", "filled_by": "make train"},
)

customer_session = FeatureView(
    name="customer_session",
    entities=[customer],
    ttl=timedelta(hours=2),
    schema=[
        Field(name="session_id", dtype=String),
        Field(name="session_views", dtype=Int64),
        Field(name="session_carts", dtype=Int64),
        Field(name="cart_value", dtype=Float64),
        Field(name="last_event_unix", dtype=Int64),
        Field(name="viewed_items", dtype=Array(String)),
        Field(name="carted_items", dtype=Array(String)),
        Field(name="categories_touched", dtype=Array(String)),
        Field(name="purchased_items", dtype=Array(String)),
    ],
    source=customer_session_push,
    online=True,
    tags={"owner": "segrec", "group": "session"},
)

product_stats = FeatureView(
    name="product_stats",
    entities=[product],
    ttl=timedelta(days=90),
    schema=[
        Field(name="category", dtype=String),
        Field(name="brand", dtype=String),
        Field(name="price", dtype=Float64),
        Field(name="price_band", dtype=String),
        Field(name="in_stock", dtype=Bool),
        *[
            Field(name=f"{kind}_{days}d", dtype=Int64)
            for kind in ("views", "carts", "purchases")
            for days in (7, 30, 90)
        ],
        Field(name="conversion_rate_90d", dtype=Float64),
        Field(name="trend_score", dtype=Float64),
        Field(name="distinct_buyers", dtype=Int64),
    ],
    source=product_features_source,
    online=True,
    tags={"owner": "segrec", "group": "product"},
)

# ---- feature services (versioned: a change of features is a new version) -------------
customer_training_v1 = FeatureService(
    name="customer_training_v1",
    features=[customer_profile, customer_behaviour],
    description="Point-in-time features for segmentation and model training.",
)
# Only what /recommend uses: every feature read costs time on the request path.
SERVING_PROFILE = ["age", "gender", "country", "tenure_days", "consent_personalisation"]
SERVING_BEHAVIOUR = [
    "recency_days",
    "frequency",
    "monetary_total",
    "rfm_score",
    "rfm_cell",
    "top_category",
    "preferred_price_band",
    "discount_affinity",
    "category_shares",
    "days_since_last_event",
    "views_90d",
    "purchases_90d",
    "abandonment_rate_90d",
]
# The rest of what the segment model reads, so serving can re-assign a segment live.
SEGMENT_INPUTS = [
    "price_band_low_share",
    "price_band_high_share",
    "missed_visits",
    "novelty_share",
    "interaction_rate_30d",
    "repeat_view_share",
    "views_per_session",
    "mean_basket_quantity",
]
customer_serving_v1 = FeatureService(
    name="customer_serving_v1",
    features=[
        customer_profile[SERVING_PROFILE],
        customer_behaviour[SERVING_BEHAVIOUR],
        customer_session,
    ],
    description="Everything /recommend reads for one customer.",
)
customer_serving_v2 = FeatureService(
    name="customer_serving_v2",
    features=[
        customer_profile[SERVING_PROFILE],
        customer_behaviour[SERVING_BEHAVIOUR + SEGMENT_INPUTS],
        customer_session,
        customer_segment,
        customer_embedding,
    ],
    description="v1 plus the segment (make segments), the model factors (make train) and "
    "the inputs to re-assign the segment live.",
)
customer_serving_v3 = FeatureService(
    name="customer_serving_v3",
    features=[
        customer_profile[SERVING_PROFILE],
        customer_behaviour[SERVING_BEHAVIOUR + SEGMENT_INPUTS],
        customer_session,
        customer_segment,
        customer_embedding,
        customer_value,
    ],
    description="v2 plus churn risk and CLV (make train), for personalisation rules.",
)
product_serving_v1 = FeatureService(
    name="product_serving_v1",
    features=[product_stats],
    description="Product statistics for candidate filtering and boosts.",
)
