"""``make bench``: which benches run, their knobs, and where each writes.

``segrec bench`` parses its options with :func:`parse_counts` (a bad value is a clear
error before any work) and runs the parts in order with :func:`run_parts`; every part
writes ``reports/bench/<part>.json`` and the ``report`` part gathers them into
``reports/bench.{json,html}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segrec.settings import Settings

PARTS = ("data", "online", "scale", "training", "report")


def parse_counts(text: str, option: str, *, minimum: int, maximum: int | None = None) -> list[int]:
    """``"1e5,1e6"`` or ``"10000,100000"`` as whole numbers within bounds, or a ValueError
    that names the option and what it takes."""
    above = f" and at most {maximum:,}" if maximum is not None else ""
    problem = ValueError(
        f"{option} takes comma-separated whole numbers of at least {minimum:,}{above} "
        f"(e.g. 1e5,1e6); got {text!r}"
    )
    counts = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise problem from None
        if not value.is_integer() or value < minimum or (maximum is not None and value > maximum):
            raise problem
        counts.append(int(value))
    if not counts:
        raise problem
    return sorted(set(counts))


def parse_parts(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise ValueError(f"--only takes parts from {', '.join(PARTS)}; got {text!r}")
    return [p for p in PARTS if p in chosen]


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def run_scale(
    settings: Settings,
    catalogues: Sequence[int],
    factors: Sequence[int],
    repeats: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from training.benchmarks.scale import run_scale_benchmark

    results = run_scale_benchmark(
        catalogues,
        factors,
        budget_ms=settings.bench_request_budget_ms,
        history_events=settings.online_history_events,
        seed=settings.seed,
        repeats=repeats,
        progress=progress,
    )
    write_json(results, settings.reports_dir / "bench" / "scale.json")
    return results


def run_training(
    settings: Settings,
    events: Sequence[int],
    repeats: int,
    time_box_minutes: float,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    import shutil

    from training.benchmarks.stages import run_training_benchmark

    workdir = settings.data_dir / "bench" / "training"
    out = settings.reports_dir / "bench" / "training.json"
    # Counts measured before with the same seed stay (delete the file to start afresh).
    earlier = json.loads(out.read_text()) if out.exists() else {}
    previous = (
        list(earlier.get("sizes", {}).values()) if earlier.get("seed") == settings.seed else []
    )
    try:
        results = run_training_benchmark(
            events,
            seed=settings.seed,
            workdir=workdir,
            repeats=repeats,
            time_box_minutes=time_box_minutes,
            progress=progress,
            checkpoint=lambda partial: write_json(partial, out),
            previous=previous,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_json(results, out)
    return results
