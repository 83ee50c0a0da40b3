"""The one settings object: every path and knob, from ``SEGREC_*`` environment variables.

Each field's description is its documentation; ``segrec settings`` prints them all with
their current values, and the README's configuration table is generated from the same.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "segrec-development-secret-change-me"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

SizeName = Literal["tiny", "small", "medium", "large"]


class Settings(BaseSettings):
    """Configuration for every segrec command; override any field with ``SEGREC_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SEGREC_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Root of raw, clean and set-aside data.")
    reports_dir: Path = Field(Path("reports"), description="Where reports are written.")
    seed: int = Field(42, description="Seed for every random process (generator, sampling).")
    size: SizeName = Field("small", description="Synthetic data size: tiny, small, medium, large.")
    synthetic_end: dt.date = Field(
        dt.date(2026, 10, 31),
        description="Last day of synthetic history; history spans the 540 days before it.",
    )
    pseudonymisation_secret: SecretStr = Field(
        SecretStr(DEVELOPMENT_SECRET),
        description="HMAC key for customer pseudonyms. Set it in production; the default is "
        "public and the quality report says when it was used.",
    )
    dedup_threshold: float = Field(
        85.0,
        ge=0,
        le=100,
        description="Fuzzy duplicate threshold: weighted name/email/address similarity (0-100) "
        "at or above which two customer records are merged.",
    )
    dedup_max_block: int = Field(
        2000,
        description="Largest blocking group compared pairwise in fuzzy dedup; larger groups "
        "are skipped and counted in the report.",
    )
    outlier_iqr_k: float = Field(3.0, description="IQR fence multiplier for outlier flags.")
    outlier_z: float = Field(4.0, description="Robust z-score limit for outlier flags.")
    dayfirst: bool = Field(
        True, description="Read ambiguous dates like 03/04/2026 as day-first (3 April)."
    )
    import_consent: Literal["granted", "denied"] = Field(
        "granted",
        description="Personalisation consent assumed for imported customers whose source has "
        "no consent field (counted in the quality report).",
    )
    chunk_rows: int = Field(
        500_000, ge=1000, description="Rows per chunk when streaming events and imports."
    )

    feature_snapshots: int = Field(
        6, ge=1, description="How many as-of snapshots of features to compute for training."
    )
    feature_snapshot_days: int = Field(
        30, ge=1, description="Days between feature snapshots (the newest is at the data end)."
    )
    feast_repo: Path = Field(
        PROJECT_ROOT / "feature_repo",
        description="The Feast feature repository (definitions + yaml); default: the "
        "project's feature_repo/.",
    )
    online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Feast online store: sqlite (embedded default) or redis."
    )
    redis_url: str = Field(
        "127.0.0.1:6379", description="Redis connection string when online_store=redis."
    )

    feast_state_dir: Path | None = Field(
        None,
        description="Where the Feast registry and SQLite online store live "
        "(default: <data_dir>/feast).",
    )
    feature_clock: Literal["wall", "data"] = Field(
        "wall",
        description="What 'now' is when judging online features stale against their ttl: "
        "wall (the real clock, for production) or data (the newest feature snapshot, for "
        "replaying historical exports).",
    )
    online_history_events: int = Field(
        100,
        ge=0,
        description="Newest events per customer that make train writes to the online store, "
        "for serving to profile the customer and fold the live session into their ALS "
        "factors (older events weigh little after recency decay).",
    )
    online_history_purchases: int = Field(
        200,
        ge=0,
        description="Newest distinct purchases per customer kept online for the "
        "already-bought filter.",
    )
    session_timeout_minutes: int = Field(
        30, ge=1, description="Minutes of inactivity after which a live session starts anew."
    )

    session_viewed_items: Literal["exclude", "boost", "keep"] = Field(
        "exclude",
        description="Items viewed in the live session, in carousels: exclude (show something "
        "new; the models already lean towards what was viewed), boost or keep.",
    )
    session_carted_items: Literal["exclude", "boost", "keep"] = Field(
        "exclude",
        description="Items in the live basket, in carousels (always excluded on the cart page).",
    )
    session_boost: float = Field(
        0.1, ge=0, le=1, description="Added to a boosted session item's blended score (0-1)."
    )
    placement_context_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of similarity to the page's product (placement=product) or basket "
        "(placement=cart), added to the blended score. 1.0 since the view mixture joined "
        "the blend: it concentrates a customer's blended scores on their own and trending "
        "items, and at 0.5 a product page of the trained small storefront held none of the "
        "product's 30 most similar items.",
    )
    serving_timeout_ms: float = Field(
        50.0,
        gt=0,
        description="Online feature read budget per request; a slower store answers with the "
        "store_unavailable fallback instead of waiting.",
    )
    bench_request_budget_ms: float = Field(
        15.0,
        gt=0,
        description="p99 goal of one /recommend on one worker (make bench-serving's goal at "
        "200 req/s); make bench reports the catalogue size at which scoring every item "
        "alone takes it all, past which candidates need approximate retrieval (ANN).",
    )
    max_request_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body the service accepts (413 above)."
    )
    max_batch_customers: int = Field(
        1000, ge=1, description="Most customers in one /recommend/batch request."
    )
    max_batch_events: int = Field(1000, ge=1, description="Most events in one /events request.")
    event_clock_skew_seconds: float = Field(
        300.0,
        ge=0,
        description="How far ahead of the server's clock an event's ts may be (storefront "
        "clock skew); /events rejects later ones.",
    )
    event_max_age_hours: float = Field(
        168.0,
        gt=0,
        description="Oldest event /events takes; older ones belong to a batch import, not "
        "a live session.",
    )
    request_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest a request may run; past it the service answers 504 and carries "
        "on. Kubernetes' terminationGracePeriodSeconds must cover the preStop sleep plus this.",
    )
    max_concurrency: int = Field(
        32,
        ge=1,
        description="In-flight API requests per pod (split across its BentoML workers) above "
        "which a new one is answered 429 at once instead of queueing; /livez, /readyz and "
        "/metrics are exempt. 32 carousels are about 0.2 s of one core's work, twice the "
        "p99 budget.",
    )
    retry_after_seconds: int = Field(
        1,
        ge=1,
        description="Retry-After (seconds) on a 429 over SEGREC_MAX_CONCURRENCY and on a 503 "
        "from /events while the shared suppression list cannot be checked.",
    )
    shared_state_timeout_seconds: float = Field(
        0.5,
        gt=0,
        description="Longest /events and erasure wait on the shared suppression list and "
        "event-id claims (Redis socket timeout, SQLite busy timeout). The list is read per "
        "call, not cached (only ids found erased are remembered, erasure being final), so "
        "an erasure on any pod holds on every pod from its answer on; with the store out of "
        "reach /events answers 503 with Retry-After and stores nothing (fails closed).",
    )
    event_dedupe_ttl_hours: float = Field(
        24.0,
        gt=0,
        description="How long an event id counts as seen across every worker and pod (Redis "
        "key expiry; SQLite rows pruned after it): the same event sent again within it is "
        "a duplicate, counted once.",
    )
    event_dedupe_local_ids: int = Field(
        100_000,
        ge=0,
        description="Event ids each worker keeps in memory in front of the shared claims: "
        "a retry of an event this worker claimed is a duplicate without a store round trip.",
    )
    tactics_file: Path = Field(
        PROJECT_ROOT / "serving" / "config" / "tactics.yaml",
        description="Personalisation rules (YAML, versioned): conditions over customer "
        "features, segment and live session mapped to offers, messages, boosts and filters.",
    )
    experiments_file: Path = Field(
        PROJECT_ROOT / "serving" / "config" / "experiments.yaml",
        description="A/B experiments (YAML): variants, traffic split, placements, segments, "
        "dates. A missing file means no experiments.",
    )
    config_poll_seconds: float = Field(
        5.0,
        gt=0,
        description="How often serving checks the tactics and experiments files for changes "
        "(a changed file is validated, then swapped in; an invalid one is refused).",
    )
    experiment_attribution_hours: float = Field(
        24.0,
        gt=0,
        description="An outcome (view, cart, purchase of a shown item) counts for the newest "
        "exposure that showed the item at most this many hours before.",
    )
    churn_band_edges: tuple[float, float] = Field(
        (0.3, 0.7),
        description="Churn risk below the first edge is the low band, from the second the "
        "high band, medium between; make ab-report breaks experiments down by these bands.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for /admin/* endpoints; unset disables them (403).",
    )

    segment_algorithm: Literal["kmeans", "gmm", "ward"] = Field(
        "kmeans",
        description="Clustering behind the segments: kmeans (MiniBatchKMeans above "
        "segment_minibatch_rows), gmm (Gaussian mixture, soft), ward (agglomerative on a sample).",
    )
    segment_features: tuple[str, ...] = Field(
        (
            "discount_affinity",
            "price_band_high_share",
            "price_band_low_share",
            "days_since_last_event",
            "missed_visits",
            "tenure_days",
            "novelty_share",
            "age",
            "interaction_rate_30d",
            "repeat_view_share",
            "views_per_session",
            "mean_basket_quantity",
        ),
        description="Customer features (from customer_training_v1) that segments are found in. "
        "Rates and shares, not totals: a total such as monetary_total mixes tenure, visit rate "
        "and basket value, which are here separately (it is still profiled).",
    )
    segment_profile_features: tuple[str, ...] = Field(
        ("monetary_total", "frequency", "avg_order_value", "rfm_score"),
        description="Extra features described in each segment's profile (and used by the "
        "naming rules) without shaping the segments.",
    )
    segment_log_features: tuple[str, ...] | Literal["auto"] = Field(
        (
            "monetary_total",
            "frequency",
            "avg_order_value",
            "days_since_last_event",
            "missed_visits",
            "tenure_days",
            "interaction_rate_30d",
            "views_per_session",
            "mean_basket_quantity",
        ),
        description="Features log1p-transformed before scaling (spend, counts, durations); "
        "'auto' picks non-negative features with skewness above 1.",
    )
    segment_k_min: int = Field(3, ge=2, description="Smallest number of segments tried.")
    segment_k_max: int = Field(10, ge=2, description="Largest number of segments tried.")
    segment_k: int | None = Field(
        None, ge=2, description="Fix the number of segments instead of choosing it by metrics."
    )
    segment_pca_components: int = Field(
        0,
        ge=0,
        description="Reduce the scaled features with PCA to this many components (0 = off).",
    )
    segment_sample_rows: int = Field(
        10_000,
        ge=500,
        description="Sample size for silhouette, Ward, HDBSCAN outliers and stability refits.",
    )
    segment_minibatch_rows: int = Field(
        200_000, ge=1000, description="Above this many customers K-Means runs mini-batch."
    )
    segment_bootstrap_rounds: int = Field(
        5, ge=2, description="Bootstrap refits for the stability (adjusted Rand) estimate."
    )
    segment_match_distance: float = Field(
        1.0,
        gt=0,
        description="Largest centroid distance (in scaled units) at which a new segment keeps "
        "the id and name of a previous version's segment.",
    )

    eval_k: int = Field(10, ge=1, le=100, description="Cut-off k of every ranking metric.")
    eval_protocol: Literal["temporal", "leave_last_n_out", "random_ratio"] = Field(
        "temporal",
        description="Evaluation protocol: temporal (a global cut-off, what production sees), "
        "leave_last_n_out (per customer), random_ratio (per customer, seeded; comparable "
        "with published MovieLens tables).",
    )
    eval_test_ratio: float = Field(
        0.25, gt=0, lt=1, description="random_ratio: share of each customer's items held out."
    )
    eval_last_n: int = Field(1, ge=1, description="leave_last_n_out: relevant events held out.")
    eval_test_days: float = Field(
        28.0, gt=0, description="Temporal protocol: the last days of events held out as test."
    )
    eval_validation_days: float = Field(
        28.0, gt=0, description="The days before the test window used to fit blend weights."
    )
    churn_horizon_days: int = Field(
        60,
        ge=1,
        description="Churn risk (make train) is the chance of no purchase in this many days "
        "after the newest feature snapshot.",
    )
    clv_horizon_days: int = Field(
        180,
        ge=1,
        description="Customer lifetime value (make train) is the expected spend over this many "
        "days after the newest feature snapshot.",
    )
    blend_min_customers: int = Field(
        30,
        ge=1,
        description="Validation customers a segment needs for its own blend weights; fewer "
        "back off to the global blend.",
    )
    blend_max_customers: int = Field(
        2000,
        ge=1,
        description="Most validation customers the blend weights are fitted on (and the "
        "hyperparameter search scores, in proportion to segments): above it, a "
        "sample seeded by SEGREC_SEED and stratified by segment (every segment keeps "
        "blend_min_customers). Their score stacks take about 2 x customers x models x "
        "items x 8 bytes (2000 customers: 1.1 GB at 3,700 items, 5.8 GB at 20,000).",
    )
    eval_oracle: bool = Field(
        True,
        description="On data from the synthetic generator, add the oracle rows (the "
        "generator's true preferences, and the observed-tastes oracle) to every evaluation "
        "table. Cheap on the default data; at 1e7 events they add about a minute and a half "
        "a view (20,000 customers x 20,256 products).",
    )
    eval_max_customers: int = Field(
        20000,
        ge=1,
        description="Most test customers evaluated per view; above it, a sample seeded by "
        "SEGREC_SEED in proportion to the blend groups (reports/evaluation.json, "
        "evaluation_sample, says how many of how many).",
    )
    stack_chunk_mb: int = Field(
        256,
        ge=1,
        description="Memory for one chunk of evaluation scores (customers x models x items "
        "x 8 bytes): the evaluation scores this many MB of customers at a time and keeps "
        "only their top-k lists.",
    )
    blend_validation_windows: int = Field(
        2,
        ge=1,
        description="Temporal protocol: rolling validation windows pooled for the blend fit "
        "(each SEGREC_EVAL_VALIDATION_DAYS long, ending where the next begins, scored by "
        "models refitted on the events before it), so small segments get more validation "
        "customers; 1 = the validation window only.",
    )
    blend_max_seconds: float = Field(
        60.0, gt=0, description="Time budget for fitting all blend weights."
    )
    blend_pools: tuple[PositiveInt, ...] = Field(
        (50, 400),
        description="Each model's best items per validation customer pooled for the blend "
        "fit's rankings, one nested level per size (training.models.validation_ndcg): exact, "
        "so they set only the fit's speed. A customer a pool cannot settle goes to the next "
        "wider one, then to the catalogue; a size is skipped on catalogues under twice it; "
        "empty = rank over the catalogue (1e7 events, 20,256 items: 43 ms instead of 1.2 s "
        "a weight vector).",
    )
    search_max_seconds: float = Field(
        90.0,
        ge=0,
        description="Safety cap on the time of the ALS, SVD and new-arrivals "
        "hyperparameter search on validation (0 = keep the defaults).",
    )
    search_max_trials: int = Field(
        8,
        ge=1,
        description="Candidates tried per searched model (defaults first, then a seeded "
        "order): what bounds the search, so reruns pick the same parameters.",
    )
    trending_half_life_days: float = Field(
        14.0, gt=0, description="Half-life of the trending popularity model."
    )
    interest_half_life_days: float = Field(
        180.0,
        gt=0,
        description="Recency half-life of the customer's own views and carts in the interest "
        "model (items viewed or carted again and again, not bought yet); its blend share is "
        "fitted on the validation view where seen items are candidates.",
    )
    new_arrivals_half_life_days: float = Field(
        21.0,
        gt=0,
        description="Days after launch (launch_ts, else the first event) at which the "
        "new-arrivals model finds a "
        "product half as fresh; the hyperparameter search on validation may pick 7 or 60.",
    )
    rerank: bool = Field(
        True,
        description="Fit boosted trees on validation that reorder the blend's top "
        "rerank_depth candidates per customer (training.models.reranker); kept, "
        "evaluated and served only when their cross-validated NDCG beats the blend's.",
    )
    rerank_depth: int = Field(
        50,
        ge=1,
        description="The blend's best candidates per customer the re-ranker reorders (in "
        "training, evaluation and serving alike); the rest keep the blend's order after them. "
        "Serving's cost of the re-ranker is proportional (cross-validated NDCG@10 on the "
        "default data: 0.1424 at 50, 0.1437 at 100 for twice the work).",
    )
    rerank_negatives: int = Field(
        100,
        ge=1,
        description="Other candidates drawn at random (seeded) per validation customer "
        "beside their purchases when fitting the re-ranker.",
    )
    rerank_bags: int = Field(
        5,
        ge=1,
        description="Re-rankers averaged into one, each fitted on its own seeded draw of "
        "negatives: one draw's noise moves a single fit (cross-validated NDCG@10 on the "
        "default data, top 50: 0.137 with one fit, 0.142 averaging 5; serving walks 5 times "
        "the trees).",
    )
    rerank_group_confidence: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="A blend group keeps the blend's order (is not re-ranked) when the "
        "re-ranker's cross-validated NDCG@k over its validation customers is below the "
        "blend's beyond the paired bootstrap interval at this confidence.",
    )
    rerank_cold_start: bool = Field(
        False,
        description="Re-rank cold-start customers too. Off: the re-ranker's customer "
        "features are history features they barely have, and on validation it lost there "
        "at every data size measured (cross-validated NDCG@10 0.101 -> 0.099 on the "
        "default data, 0.056 -> 0.046 at 20k customers, 0.074 -> 0.059 at 10M events).",
    )
    blend_new_arrivals_tolerance: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="New-product rule: the new-arrivals weight is raised to the largest floor "
        "(0 to 0.3) whose validation NDCG is within this share of the best floor's and no "
        "worse than the best single model's (0, the default: only floors that cost no "
        "validation NDCG; products launched after a window are not candidates in it).",
    )

    repeat_categories: tuple[str, ...] = Field(
        ("groceries", "pet_supplies", "health", "beauty"),
        description="Categories where buying again is normal: bought items stay recommendable.",
    )
    max_per_category: int = Field(
        4, ge=0, description="Diversity cap: most items of one category in a list (0 = none)."
    )
    bentoml_home: Path | None = Field(
        None,
        description="BentoML's model store for exported bundles, used when BENTOML_HOME is unset "
        "(default: <data_dir>/bentoml).",
    )

    @field_validator("churn_band_edges")
    @classmethod
    def _edges_rise_within_zero_one(cls, edges: tuple[float, float]) -> tuple[float, float]:
        low, high = edges
        if not 0.0 < low < high < 1.0:
            raise ValueError(f"need 0 < low < high < 1 (churn risk is a probability), got {edges}")
        return edges

    @property
    def bundles_dir(self) -> Path:
        return self.data_dir / "bundles"

    @property
    def bentoml_store(self) -> Path:
        return self.bentoml_home or self.data_dir / "bentoml"

    @property
    def segments_dir(self) -> Path:
        return self.data_dir / "segments"

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def feast_dir(self) -> Path:
        return self.feast_state_dir or self.data_dir / "feast"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def clean_dir(self) -> Path:
        return self.data_dir / "clean"

    @property
    def set_aside_dir(self) -> Path:
        return self.data_dir / "set_aside"

    @property
    def event_log_dir(self) -> Path:
        """Where serving appends accepted live events (one JSON-lines file per writer and
        day) and where ``train`` ingests them from; shared by every serving pod."""
        return self.data_dir / "events" / "live"

    @property
    def privacy_dir(self) -> Path:
        """The suppression list and the admin audit log (``segrec.erasure``,
        ``segrec.audit``): keyed pseudonyms only, never raw ids. Erasure leaves it alone."""
        return self.data_dir / "privacy"

    @property
    def suppression_file(self) -> Path:
        """The offline record of erased customers that imports read (``segrec.suppression``)."""
        return self.privacy_dir / "suppressed.txt"

    @property
    def shared_state_file(self) -> Path:
        """SQLite online store only: the suppression list and event-id claims every worker
        of the pod shares (``segrec.shared_state``; Redis keeps both as keys)."""
        return self.privacy_dir / "shared_state.db"

    @property
    def audit_log_file(self) -> Path:
        return self.privacy_dir / "audit.jsonl"

    @property
    def consent_file(self) -> Path:
        """Consent changes since the last import (``segrec.consent``)."""
        return self.privacy_dir / "consent.jsonl"

    @property
    def exposure_log_dir(self) -> Path:
        """Where serving logs which experiment variant each customer was shown
        (``segrec.experiments``); ``make ab-report`` reads it with the event log."""
        return self.data_dir / "events" / "exposures"

    @property
    def uses_development_secret(self) -> bool:
        return self.pseudonymisation_secret.get_secret_value() == DEVELOPMENT_SECRET


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
