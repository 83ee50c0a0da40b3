"""Online read latency of the serving feature service, SQLite and Redis in one run.

For each store: apply and materialise the current features into a fresh store (Redis is
started on a free loopback port), warm up, then time ``reads`` single-customer reads,
``repeats`` times; the figures are medians over the repeats. Two paths are timed: Feast's
``get_online_features(...).to_dict()`` alone, and segrec's reader on top of it (ttl
checks and defaults), which is what serving pays.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from contextlib import ExitStack
from typing import Any

import numpy as np
import pandas as pd

from segrec.feature_store import open_store
from segrec.online_features import OnlineFeatureReader
from segrec.settings import Settings
from training.features.local_redis import redis_server
from training.features.materialize import apply_and_materialise

WARMUP_READS = 50


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def _time_reads(call: Any, ids: list[str]) -> dict[str, float]:
    samples = []
    for customer_id in ids:
        started = time.perf_counter()
        call(customer_id)
        samples.append(time.perf_counter() - started)
    return _percentiles(samples)


def measure_store(settings: Settings, ids: list[str], reads: int, repeats: int) -> dict:
    materialised = apply_and_materialise(settings)
    store = open_store(settings)
    reader = OnlineFeatureReader(store, "customer_serving_v1", "customer_id")
    service = reader.service
    rng = random.Random(0)

    def feast_only(customer_id: str) -> None:
        store.get_online_features(
            features=service, entity_rows=[{"customer_id": customer_id}]
        ).to_dict()

    for customer_id in ids[:WARMUP_READS]:
        reader.read(customer_id)
    runs: dict[str, list[dict[str, float]]] = {"feast_to_dict": [], "segrec_reader": []}
    for _ in range(repeats):
        sample = [rng.choice(ids) for _ in range(reads)]
        runs["feast_to_dict"].append(_time_reads(feast_only, sample))
        runs["segrec_reader"].append(_time_reads(reader.read, sample))
    return {
        "features": len(reader.features),
        "entities": materialised.materialised.get("customer_profile", 0),
        "materialise_seconds": materialised.seconds.get("materialise"),
        **{
            path: {
                key: round(statistics.median(r[key] for r in results), 3)
                for key in ("p50_ms", "p99_ms", "mean_ms")
            }
            for path, results in runs.items()
        },
    }


def run_online_benchmark(settings: Settings, reads: int = 1000, repeats: int = 3) -> dict:
    customers = pd.read_parquet(
        settings.features_dir / "customer_features.parquet", columns=["customer_id"]
    )
    ids = customers["customer_id"].drop_duplicates().tolist()
    results: dict[str, Any] = {"reads_per_run": reads, "runs": repeats}
    bench_root = settings.data_dir / "bench"
    with ExitStack() as stack:
        for store in ("sqlite", "redis"):
            # A private registry and online store per store, beside the real ones.
            overrides: dict[str, Any] = {
                "online_store": store,
                "feast_state_dir": bench_root / store,
            }
            if store == "redis":
                overrides["redis_url"] = stack.enter_context(redis_server(bench_root))
            results[store] = measure_store(
                settings.model_copy(update=overrides), ids, reads, repeats
            )
    out = settings.reports_dir / "bench" / "online.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results
