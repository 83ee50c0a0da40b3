"""segrec's Prometheus metrics, beside BentoML's own request counts and latencies per
endpoint (``bentoml_service_request_total``, ``..._duration_seconds``) on ``/metrics``.

``bentoml.metrics`` rather than ``prometheus_client``: BentoML sets up the multiprocess
registry that several workers need, and creates the metrics lazily.
"""

from __future__ import annotations

import bentoml

FALLBACKS = bentoml.metrics.Counter(
    name="segrec_fallbacks_total",
    documentation="Answers that were not fully personalised, by endpoint and reason.",
    labelnames=["endpoint", "reason"],
)
SEGMENT_REQUESTS = bentoml.metrics.Counter(
    name="segrec_segment_requests_total",
    documentation="Recommendation requests by the customer's segment ('none' when unknown).",
    labelnames=["segment"],
)
EVENTS = bentoml.metrics.Counter(
    name="segrec_events_total",
    documentation="Storefront events posted, by outcome (accepted, rejected, duplicate).",
    labelnames=["outcome"],
)
FEATURE_READ_SECONDS = bentoml.metrics.Histogram(
    name="segrec_feature_read_seconds",
    documentation="Online feature read time per request (all customers of a batch).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
MISSING_FEATURES = bentoml.metrics.Counter(
    name="segrec_missing_features_total",
    documentation="Feature values defaulted because the store had none fresh, by view.",
    labelnames=["view"],
)
BUNDLE_INFO = bentoml.metrics.Gauge(
    name="segrec_bundle_info",
    documentation="1 for the bundle version being served (0 for versions served before).",
    labelnames=["version", "segments_version"],
)
RELOADS = bentoml.metrics.Counter(
    name="segrec_reloads_total",
    documentation="Bundle reload attempts by outcome (swapped, unchanged, rejected).",
    labelnames=["outcome"],
)
