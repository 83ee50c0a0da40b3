"""Online read latency of the serving feature service, SQLite and Redis in one run.

For each store: apply and materialise the current features into a fresh store (Redis is
started on a free loopback port), warm up, then time ``reads`` single-customer reads and
``reads / 50`` reads of 50 customers, ``repeats`` times, the paths taking turns within a
repeat; the figures are medians over the repeats, with min and max (``<figure>_range``).
Paths:

- ``feast_to_dict``: Feast's ``get_online_features(...).to_dict()`` alone;
- ``segrec_reader``: segrec's reader as serving runs it (ttl checks and defaults; every
  view in one SQLite query or one Redis pipeline, values decoded directly);
- ``segrec_reader_before``: the reader as it was, the provider's ``online_read`` per view
  and Feast's generic ``feast_value_type_to_python_type``.

``speedup`` is before over now, per customer and per batch, for wall time and for the
reading thread's CPU time (steadier on a shared machine: it leaves out time spent waiting
for a core).
"""

from __future__ import annotations

import copy
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import pandas as pd
from feast.type_map import feast_value_type_to_python_type

from segrec.feature_store import open_store
from segrec.online_features import FeatureVector, OnlineFeatureReader
from segrec.settings import Settings
from training.features.local_redis import redis_server
from training.features.materialize import apply_and_materialise

WARMUP_READS = 50
BATCH = 50
SERVICE = "customer_serving_v2"  # what /recommend reads
FIGURES = ("p50_ms", "p99_ms", "mean_ms", "cpu_p50_ms")


def _percentiles(walls: list[float], cpus: list[float]) -> dict[str, float]:
    ms = np.array(walls) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "cpu_p50_ms": float(np.median(cpus) * 1000),
    }


def _time_reads(call: Callable[[Any], Any], requests: Sequence[Any]) -> dict[str, float]:
    walls, cpus = [], []
    for request in requests:
        started, cpu = time.perf_counter(), time.thread_time()
        call(request)
        walls.append(time.perf_counter() - started)
        cpus.append(time.thread_time() - cpu)
    return _percentiles(walls, cpus)


def _reader_before(reader: OnlineFeatureReader) -> Callable[[list[str]], list[FeatureVector]]:
    """The reader before the direct reads: the provider's ``online_read`` once per view,
    Feast's generic decoding; the same ttl checks and defaults."""
    provider_only = copy.copy(reader)
    provider_only._sqlite = provider_only._redis = None

    def read_many(entity_ids: list[str]) -> list[FeatureVector]:
        rows = provider_only._provider_rows(entity_ids)
        return provider_only._vectors(entity_ids, rows, feast_value_type_to_python_type)

    return read_many


def _medians(results: list[dict[str, float]]) -> dict[str, Any]:
    """Each figure's median over the repeats, with ``<figure>_range`` [min, max] beside it."""
    out: dict[str, Any] = {"runs": len(results)}
    for key in FIGURES:
        values = [r[key] for r in results]
        out[key] = round(statistics.median(values), 3)
        out[f"{key}_range"] = [round(min(values), 3), round(max(values), 3)]
    return out


def measure_store(
    settings: Settings, ids: list[str], reads: int, repeats: int, service: str = SERVICE
) -> dict:
    materialised = apply_and_materialise(settings)
    store = open_store(settings)
    reader = OnlineFeatureReader(store, service, "customer_id")
    before = _reader_before(reader)
    rng = random.Random(0)

    def feast_only(customer_id: str) -> None:
        store.get_online_features(
            features=reader.service, entity_rows=[{"customer_id": customer_id}]
        ).to_dict()

    for customer_id in ids[:WARMUP_READS]:
        reader.read(customer_id)
        before([customer_id])
    one: dict[str, Callable[[Any], Any]] = {
        "feast_to_dict": feast_only,
        "segrec_reader": reader.read,
        "segrec_reader_before": lambda customer_id: before([customer_id]),
    }
    many: dict[str, Callable[[Any], Any]] = {
        "segrec_reader": reader.read_many,
        "segrec_reader_before": before,
    }
    runs: dict[str, list[dict[str, float]]] = {path: [] for path in one}
    batch_runs: dict[str, list[dict[str, float]]] = {path: [] for path in many}
    for _ in range(repeats):
        sample = [rng.choice(ids) for _ in range(reads)]
        for path, call in one.items():
            runs[path].append(_time_reads(call, sample))
        batches = [rng.sample(ids, min(BATCH, len(ids))) for _ in range(max(1, reads // BATCH))]
        for path, call in many.items():
            batch_runs[path].append(_time_reads(call, batches))
    single = {path: _medians(results) for path, results in runs.items()}
    batch = {path: _medians(results) for path, results in batch_runs.items()}

    def ratio(figures: dict[str, dict[str, float]], key: str) -> float:
        return round(figures["segrec_reader_before"][key] / figures["segrec_reader"][key], 2)

    return {
        "service": service,
        "features": len(reader.features),
        "one_call_for_all_views": reader._sqlite is not None or reader._redis is not None,
        "entities": materialised.materialised.get("customer_profile", 0),
        "materialise_seconds": materialised.seconds.get("materialise"),
        **single,
        f"batch_{BATCH}": batch,
        "speedup": {
            "per_customer_p50": ratio(single, "p50_ms"),
            "per_customer_cpu_p50": ratio(single, "cpu_p50_ms"),
            f"batch_{BATCH}_p50": ratio(batch, "p50_ms"),
            f"batch_{BATCH}_cpu_p50": ratio(batch, "cpu_p50_ms"),
        },
    }


def run_online_benchmark(settings: Settings, reads: int = 1000, repeats: int = 3) -> dict:
    customers = pd.read_parquet(
        settings.features_dir / "customer_features.parquet", columns=["customer_id"]
    )
    ids = customers["customer_id"].drop_duplicates().tolist()
    results: dict[str, Any] = {"reads_per_run": reads, "batch": BATCH, "runs": repeats}
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
