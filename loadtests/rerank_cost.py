"""What the re-ranker costs the engine: CPU time per request with each bundle's trees and
with none.

``python -m loadtests.rerank_cost BUNDLE_DIR [BUNDLE_DIR ...] [--customers 200]
[--rounds 9]``

Every bundle gets an engine as serving builds it, plus one engine without the re-ranker
(the first bundle with its ``rerank`` group left out); each answers ``POST /recommend``'s
request (home page, k = 10) for the same customers, features read once beforehand, so
only the engine's work is timed. Engines take turns round after round in one process and
the medians are reported with their ratio to the engine without trees: on a shared
machine the ratio is what carries over, not the milliseconds. CPU time, not wall time,
so another tenant's load counts less. A benchmark: never part of ``make test``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from segrec.bundle import read_bundle
from segrec.online_features import FeatureVector, OnlineFeatureReader
from segrec.settings import Settings
from serving.engine import RecommendationEngine, RecommendRequest
from serving.loading import build_engine, open_reader

WITHOUT = "no re-ranker"


def engines(
    settings: Settings, bundle_dirs: Sequence[Path], reader: OnlineFeatureReader
) -> dict[str, RecommendationEngine]:
    """An engine per bundle as serving builds it, named by its trees, and one without
    the re-ranker."""
    out: dict[str, RecommendationEngine] = {}
    for directory in bundle_dirs:
        bundle = read_bundle(directory)
        rerank = bundle.arrays.get("rerank")
        if rerank is None:
            name = f"{directory.name} (no trees: the blend won on validation)"
        else:
            name = (
                f"{directory.name}: {rerank['tree_feature'].shape[0]} trees of depth "
                f"{int(rerank['tree_depth'])} over the top {int(rerank['depth'])}"
            )
        out[name] = build_engine(settings, bundle, reader)
        if WITHOUT not in out:
            plain = {k: v for k, v in bundle.arrays.items() if k != "rerank"}
            out[WITHOUT] = build_engine(settings, dataclasses.replace(bundle, arrays=plain), reader)
    return out


def cpu_ms_per_request(engine: RecommendationEngine, features: dict[str, FeatureVector]) -> float:
    started = time.process_time()
    for customer, vector in features.items():
        engine.recommend_many([RecommendRequest(customer, 10, "home")], {customer: vector})
    return (time.process_time() - started) / len(features) * 1000


def measure(
    named: dict[str, RecommendationEngine], features: dict[str, FeatureVector], rounds: int
) -> dict[str, float]:
    """Median CPU ms per request of each engine over ``rounds`` interleaved rounds."""
    for engine in named.values():
        cpu_ms_per_request(engine, features)  # warm-up: first-call allocations
    times: dict[str, list[float]] = {name: [] for name in named}
    for _ in range(rounds):
        for name, engine in named.items():
            times[name].append(cpu_ms_per_request(engine, features))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", type=Path, nargs="+", help="bundle directories")
    parser.add_argument("--customers", type=int, default=200, help="customers per round")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    args = parser.parse_args(argv)
    settings = Settings()
    reader = open_reader(settings)
    path = settings.features_dir / "customer_features.parquet"
    ids = pd.read_parquet(path, columns=["customer_id"])["customer_id"].drop_duplicates()
    customers = ids.iloc[: args.customers].tolist()
    features = dict(zip(customers, reader.read_many(customers), strict=True))
    medians = measure(engines(settings, args.bundles, reader), features, args.rounds)
    base = medians[WITHOUT]
    for name, value in medians.items():
        print(f"{value:6.2f} ms  x{value / base:4.2f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
