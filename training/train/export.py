"""Export a training run: the bundle (item side, for serving pods) and the customer-side
factors (to Feast, so pods hold no per-customer tables).

The exported models are refitted on every event (through the data end), with the blend
weights fitted on validation and the figures measured on test in the same run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segrec.blend import COLD_START, weights_for
from segrec.bundle import RERANK, Bundle, save_to_bentoml, unicode_ids, write_bundle
from segrec.erasure import SuppressionList
from segrec.filters import FilterRules
from segrec.scoring import PURCHASE
from segrec.settings import Settings
from training.features.inputs import price_bands
from training.models.base import Recommender
from training.models.blend_fit import SegmentBlender
from training.models.interactions import Interactions
from training.segmentation.versioning import load_current

EMBEDDINGS_FILE = "customer_embeddings.parquet"
EMBEDDING_VIEW = "customer_embedding"
TOP_LIST = 100
EMBEDDINGS_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        pa.field("event_timestamp", pa.timestamp("ns", tz="UTC")),
        pa.field("als_factors", pa.list_(pa.float32())),
        pa.field("svd_factors", pa.list_(pa.float32())),
        pa.field("svd_bias", pa.float64()),
        pa.field("model_version", pa.string()),
        pa.field("history_items", pa.list_(pa.string())),
        pa.field("history_types", pa.list_(pa.int64())),
        pa.field("history_unix", pa.list_(pa.int64())),
        pa.field("history_purchases", pa.list_(pa.string())),
    ]
)


@dataclass(frozen=True)
class Export:
    bundle_version: str
    bundle_dir: str
    bentoml_tag: str
    customers_written: int
    profiles_removed: int = 0  # online rows of customers without consent, removed


def items_and_filters(
    data: Interactions, settings: Settings
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    products = data.products
    if products is None:
        raise ValueError("export needs interactions built with products")
    categories, category = np.unique(
        products["category"].fillna("unknown").astype(str).to_numpy(), return_inverse=True
    )
    band_codes = {"low": 0, "mid": 1, "high": 2}  # anything else (unknown): 3
    items = {
        "product_ids": unicode_ids(data.items.ids(np.arange(data.n_items))),
        "category": category.astype(np.int64),
        "in_stock": products["in_stock"].fillna(False).to_numpy(dtype=bool),
        "price_band": price_bands(products).map(band_codes).fillna(3).to_numpy(dtype=np.int64),
        "price": products["price"].to_numpy(dtype=np.float64),
    }
    filters = {
        "categories": unicode_ids(categories),
        "repeat_category": np.isin(categories, list(settings.repeat_categories)),
        "max_per_category": np.asarray(settings.max_per_category, dtype=np.int64),
    }
    return items, filters


def filter_rules(data: Interactions, settings: Settings) -> FilterRules:
    items, filters = items_and_filters(data, settings)
    return FilterRules(
        in_stock=items["in_stock"],
        category=items["category"],
        repeat_category=filters["repeat_category"],
        max_per_category=int(filters["max_per_category"]),
    )


def _next_bundle_version(settings: Settings) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"bundle-{stamp}"


def build_bundle(
    settings: Settings,
    models: dict[str, Recommender],
    data: Interactions,
    blender: SegmentBlender,
    metrics: dict[str, Any],
    *,
    rerank: Mapping[str, np.ndarray] | None = None,
) -> Bundle:
    segment_model = load_current(settings.segments_dir)
    if segment_model is None:
        raise FileNotFoundError("no segment model: run `make segments` before `make train`")
    version = _next_bundle_version(settings)
    items, filters = items_and_filters(data, settings)
    arrays: dict[str, dict[str, np.ndarray]] = {"items": items, "filters": filters}
    for name, model in models.items():
        group = {k: np.asarray(v) for k, v in model.export_arrays().items()}
        group["kind"] = np.asarray(model.kind)
        arrays[f"models/{name}"] = group
    # Bundle rows: every fitted segment that the segment model knows, then the global row.
    known = set(segment_model.segment_ids.tolist())
    rows = [i for i, s in enumerate(blender.segment_ids_.tolist()) if s in known]
    arrays["blend"] = {
        "weights": np.vstack([blender.segment_weights_[rows], blender.global_weights_]),
        "segment_ids": blender.segment_ids_[rows].astype(np.int64),
        "models": unicode_ids(list(models)),
        # Customers with fewer than COLD_START_EVENTS events use these, whatever their segment.
        "cold_weights": weights_for(
            COLD_START, blender.segment_ids_, blender.segment_weights_, blender.global_weights_
        ),
    }
    if rerank:
        # Launch ages (the new-arrivals model's) are as of the data's end: serving shifts
        # them by the time since, so "launched within trend_days of a view" holds as here.
        arrays[RERANK] = {
            **{name: np.asarray(value) for name, value in rerank.items()},
            "reference_unix": np.asarray(data.reference_time.timestamp()),
            "unseen": np.bincount(data.item, minlength=data.n_items) == 0,
        }
    popularity = models["popularity"].export_arrays()["item_scores"]
    segment_rows = models["segment_popularity"].export_arrays()["segment_scores"]
    segment_ids = segment_model.segment_ids
    arrays["popularity"] = {
        "global_top": np.argsort(-popularity, kind="stable")[:TOP_LIST].astype(np.int64),
        "segment_ids": segment_ids.astype(np.int64),
        "segment_top": np.vstack(
            [
                np.argsort(-segment_rows[s], kind="stable")[:TOP_LIST]
                if 0 <= s < len(segment_rows)
                else np.argsort(-popularity, kind="stable")[:TOP_LIST]
                for s in segment_ids
            ]
        ).astype(np.int64),
    }
    clean = json.loads((settings.clean_dir / "manifest.json").read_text())
    features = json.loads((settings.features_dir / "manifest.json").read_text())
    return Bundle(
        version=version,
        arrays=arrays,
        segment_model=segment_model,
        versions={
            "data": clean["data_version"],
            "features": f"{features['features_version']}:{features['data_version']}",
            "models": version,
            # Erased customers the training data excludes (cleaning withholds them and
            # erasure purged them): how many, and which list, never who.
            "suppression": "{suppressed_customers}:{suppression_sha256}".format(
                **SuppressionList(settings.suppression_file).fingerprint()
            ),
        },
        seeds={"seed": settings.seed},
        metrics=metrics,
    )


def recent_history(data: Interactions, events: int, purchases: int) -> dict[str, list[Any]]:
    """Per customer (vocabulary order): the newest ``events`` events, newest first, as
    product ids, event type codes and unix seconds, and the newest ``purchases`` distinct
    purchased product ids."""
    product_ids = data.items.ids(np.arange(data.n_items)).astype(str)
    reference = data.reference_time.timestamp()
    unix = np.round(reference - data.age_days * 86_400.0).astype(np.int64)
    history: dict[str, list[Any]] = {
        "history_items": [],
        "history_types": [],
        "history_unix": [],
        "history_purchases": [],
    }
    for u in range(data.n_customers):
        start, end = int(data.indptr[u]), int(data.indptr[u + 1])
        newest = np.arange(max(start, end - events), end)[::-1]
        items = data.item[newest]
        history["history_items"].append(product_ids[items].tolist())
        history["history_types"].append(data.type_code[newest].astype(np.int64).tolist())
        history["history_unix"].append(unix[newest].tolist())
        bought = data.item[start:end][data.type_code[start:end] == PURCHASE][::-1]
        distinct = list(dict.fromkeys(bought.tolist()))[:purchases]
        history["history_purchases"].append(product_ids[distinct].tolist())
    return history


def write_customer_factors(
    settings: Settings,
    models: dict[str, Recommender],
    data: Interactions,
    version: str,
    personal: pd.Index,
) -> tuple[int, int]:
    """ALS and SVD customer vectors and recent history as the ``customer_embedding``
    view's offline source (one row per customer in ``personal``, those who consent to
    personalisation, stamped at the data end), then loaded online. Nobody else gets a
    profile: serving answers them with global popularity and reads none, and the online
    rows of the others are removed. Returns (rows written, rows removed)."""
    als = models["als"].export_customer_arrays()["user_factors"].astype(np.float32)
    svd = models["svd"].export_customer_arrays()
    frame = pd.DataFrame(
        {
            "customer_id": data.customers.ids(np.arange(data.n_customers)).astype(str),
            "event_timestamp": data.reference_time,
            "als_factors": list(als),
            "svd_factors": list(svd["user_factors"].astype(np.float32)),
            "svd_bias": svd["user_bias"].astype(np.float64),
            "model_version": version,
            **recent_history(
                data, settings.online_history_events, settings.online_history_purchases
            ),
        }
    )
    consenting = frame["customer_id"].isin(personal)
    refused = frame.loc[~consenting, "customer_id"].tolist()
    frame = frame[consenting].reset_index(drop=True)
    path = settings.features_dir / EMBEDDINGS_FILE
    staging = path.with_suffix(".tmp")
    pq.write_table(
        pa.Table.from_pandas(frame, schema=EMBEDDINGS_SCHEMA, preserve_index=False), staging
    )
    staging.replace(path)
    from segrec.erasure import erase_online
    from training.features.materialize import load_view_online

    written = load_view_online(settings, EMBEDDING_VIEW)
    # Rows an earlier run wrote, before the customer withdrew consent, go too.
    return written, erase_online(None, settings, refused, views=[EMBEDDING_VIEW])


def export(
    settings: Settings,
    models: dict[str, Recommender],
    data: Interactions,
    blender: SegmentBlender,
    metrics: dict[str, Any],
    *,
    rerank: Mapping[str, np.ndarray] | None = None,
    personal: pd.Index,
) -> Export:
    """The bundle (directory and BentoML model) and the customer features of the
    ``personal`` customers (:func:`write_customer_factors`)."""
    bundle = build_bundle(settings, models, data, blender, metrics, rerank=rerank)
    directory = write_bundle(bundle, settings.bundles_dir / bundle.version)
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_store.resolve()))
    tag = save_to_bentoml(bundle)
    written, removed = write_customer_factors(settings, models, data, bundle.version, personal)
    return Export(bundle.version, str(directory), tag, written, removed)
