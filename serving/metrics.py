"""segrec's Prometheus metrics, beside BentoML's own request counts and latencies per
endpoint (``bentoml_service_request_total``, ``..._duration_seconds``) on ``/metrics``.

Plain ``prometheus_client`` (BentoML 1.4 deprecates its ``bentoml.metrics`` wrapper):
BentoML starts every worker with ``PROMETHEUS_MULTIPROC_DIR`` set, so these metrics are
written in multiprocess mode and its ``/metrics`` endpoint collects them from all workers.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FALLBACKS = Counter(
    name="segrec_fallbacks_total",
    documentation="Answers that were not fully personalised, by endpoint and reason.",
    labelnames=["endpoint", "reason"],
)
SEGMENT_REQUESTS = Counter(
    name="segrec_segment_requests_total",
    documentation="Recommendation requests by the customer's segment ('none' when unknown).",
    labelnames=["segment"],
)
EVENTS = Counter(
    name="segrec_events_total",
    documentation="Storefront events posted, by outcome (accepted, rejected, duplicate).",
    labelnames=["outcome"],
)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
FEATURE_READ_SECONDS = Histogram(
    name="segrec_feature_read_seconds",
    documentation="Online-store read time per call (all customers of a batch), including "
    "reads that finished after their request gave up on them.",
    buckets=LATENCY_BUCKETS,
)
ENGINE_SECONDS = Histogram(
    name="segrec_engine_seconds",
    documentation="Time in the recommendation engine per call (read, score, blend, rank), "
    "by endpoint; the rest of the request time is HTTP and BentoML.",
    labelnames=["endpoint"],
    buckets=LATENCY_BUCKETS,
)
MISSING_FEATURES = Counter(
    name="segrec_missing_features_total",
    documentation="Feature values defaulted because the store had none fresh, by view.",
    labelnames=["view"],
)
BUNDLE_INFO = Gauge(
    name="segrec_bundle_info",
    documentation="1 for the bundle version being served (0 for versions served before).",
    labelnames=["version", "segments_version"],
    # Per worker 0 or 1; across live workers the largest (a version still served anywhere).
    multiprocess_mode="livemax",
)
RELOADS = Counter(
    name="segrec_reloads_total",
    documentation="Bundle reload attempts by outcome (swapped, unchanged, rejected).",
    labelnames=["outcome"],
)
ERASURES = Counter(
    name="segrec_erasures_total",
    documentation="Customers erased through /admin/erase (the audit log has the pseudonyms).",
)
TACTIC_RULES = Counter(
    name="segrec_tactic_rules_total",
    documentation="Tactics rules applied to recommendation answers, by rule id.",
    labelnames=["rule"],
)
EXPOSURES = Counter(
    name="segrec_experiment_exposures_total",
    documentation="Answers served within an experiment, by experiment and variant.",
    labelnames=["experiment", "variant"],
)
CONFIG_RELOADS = Counter(
    name="segrec_config_reloads_total",
    documentation="Tactics/experiments file changes picked up, by outcome (swapped, rejected).",
    labelnames=["outcome"],
)
