"""Training benchmark: time and peak memory of each training stage by event count.

For each event count, the seeded generator writes a storefront of about that many events
(:func:`training.data.synthetic.generator.size_for_events`); then each stage runs
``repeats`` times, every run in its own process so its peak resident memory (``ru_maxrss``,
which includes the interpreter, the imports and the stage's inputs) is its own:

- ``import``: validate, clean and pseudonymise the raw export (``make data``);
- ``features``: customer and product feature snapshots (``make features``, without Feast);
- ``segmentation``: choose k, fit, profile, version (``make segments``, without Feast);
- ``svd``, ``als``, ``content``: one model's ``fit`` on every event, default settings;
- ``blend``: score the validation customers with every model and fit the blend weights
  per segment (``make train``'s step 1, :func:`training.train.pipeline.fit_blend`, with
  its earlier validation windows; the models of every window are fitted first, untimed,
  in the same process). ``Settings.blend_max_customers`` caps the customers scored (a
  seeded sample, stratified by segment, above it) and ``Settings.blend_max_seconds`` the
  weight search.

``seconds`` is the stage's own work, from inputs loaded to outputs written (interpreter
start and imports excluded); ``OPENBLAS_NUM_THREADS=1`` as for training (multi-threaded
OpenBLAS slows ALS). Growth exponents come from :mod:`training.benchmarks.growth` over
the measured event counts, and sizes not measured are extrapolated from them.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segrec.settings import Settings
from training.benchmarks.growth import fit_growth, spread

STAGES = ("import", "features", "segmentation", "svd", "als", "content", "blend")
SPREAD_FIGURES = ("seconds", "wall_seconds", "peak_mb")
MODELS = ("svd", "als", "content")
EVENTS = (100_000, 1_000_000)
TIME_BOX_MINUTES = 25.0  # default: a size is run only if its extrapolated run fits in this


def workspace(root: Path, seed: int) -> Settings:
    return Settings(data_dir=root / "data", reports_dir=root / "reports", seed=seed)


def stage_generate(settings: Settings, events: int) -> dict[str, Any]:
    from training.data.synthetic.generator import generate, size_for_events

    spec = size_for_events(events)
    started = time.perf_counter()
    summary = generate(
        settings.raw_dir / "synthetic", spec, settings.seed, settings.synthetic_end, progress=False
    )
    return {
        "seconds": time.perf_counter() - started,
        "events": summary.events,
        "customers": summary.customers,
        "products": summary.products,
    }


def stage_import(settings: Settings, events: int) -> dict[str, Any]:
    from training.data.pipeline import clean_dataset
    from training.data.raw import RawDataset

    started = time.perf_counter()
    summary = clean_dataset(RawDataset(settings.raw_dir / "synthetic"), settings)
    return {"seconds": time.perf_counter() - started, "rows_out": summary.rows}


def stage_features(settings: Settings, events: int) -> dict[str, Any]:
    from training.features.build import build_features

    started = time.perf_counter()
    built = build_features(settings, progress=False)
    return {"seconds": time.perf_counter() - started, "customer_rows": built.customer_rows}


def stage_segmentation(settings: Settings, events: int) -> dict[str, Any]:
    from training.segmentation.pipeline import run_segmentation

    # Every run starts from no previous version, so repeats do the same work.
    shutil.rmtree(settings.segments_dir, ignore_errors=True)
    started = time.perf_counter()
    run = run_segmentation(settings, online=False, progress=False)
    return {
        "seconds": time.perf_counter() - started,
        "customers": len(run.assignments),
        "k": run.model.n_segments,
    }


def _training_data(settings: Settings, side: str) -> Any:
    """Interactions of every event (``side="all"``) or of the validation split's training
    side, built as ``make train`` builds them."""
    import pandas as pd

    from training.models.interactions import Interactions
    from training.train.pipeline import _interactions, _split, load_segments, segments_at

    events = pd.read_parquet(settings.clean_dir / "events.parquet")
    products = pd.read_parquet(settings.clean_dir / "products.parquet")
    if side == "all":
        return Interactions.from_events(
            events,
            products=products,
            reference_time=pd.Timestamp(events["ts"].max()),
            segments=load_segments(settings)["segment_id"].astype("int64"),
        ), None
    split = _split(settings, events)
    segment_of = segments_at(settings, split.validation)["segment_id"]
    return _interactions(split.validation, products, segment_of), split


def stage_model(settings: Settings, name: str) -> dict[str, Any]:
    from training.train.stacks import make_models

    started = time.perf_counter()
    data, _ = _training_data(settings, "all")
    loaded = time.perf_counter()
    make_models(settings)[name].fit(data)
    return {
        "seconds": time.perf_counter() - loaded,
        "load_seconds": loaded - started,
        "customers": data.n_customers,
        "items": data.n_items,
    }


def stage_blend(settings: Settings, events: int) -> dict[str, Any]:
    import pandas as pd

    from training.train.pipeline import earlier_windows, fit_blend, held_out
    from training.train.stacks import fit_models, make_models

    started = time.perf_counter()
    train, split = _training_data(settings, "validation")
    models = fit_models(make_models(settings), train)
    # The earlier validation windows make train pools, with their own models (untimed too).
    products = pd.read_parquet(settings.clean_dir / "products.parquet")
    earlier = earlier_windows(settings, split, products, {})
    prepared = time.perf_counter()
    main = held_out(split.validation, train, new_items_only=True, known_only=False)
    rep = held_out(split.validation, train, new_items_only=False, known_only=False)
    fitted = fit_blend(settings, models, train, main, rep, earlier)
    done = time.perf_counter()
    return {
        "seconds": done - prepared,
        "score_seconds": fitted.seconds["score"],
        "fit_seconds": fitted.seconds["fit"],
        "prepare_seconds": prepared - started,
        "validation_customers": len(main[0]),
        "sample": fitted.sample,
        "stack_mb": fitted.sample["stack_mb"],
        "segments_backed_off": len(fitted.blender.backed_off_),
    }


RUNNERS: dict[str, Callable[[Settings, int], dict[str, Any]]] = {
    "generate": stage_generate,
    "import": stage_import,
    "features": stage_features,
    "segmentation": stage_segmentation,
    "svd": lambda settings, _: stage_model(settings, "svd"),
    "als": lambda settings, _: stage_model(settings, "als"),
    "content": lambda settings, _: stage_model(settings, "content"),
    "blend": stage_blend,
}


def run_stage(stage: str, events: int, seed: int, root: Path) -> dict[str, Any]:
    """One stage in a fresh process; its JSON answer plus ``peak_mb``."""
    command = [
        sys.executable,
        "-m",
        "training.benchmarks.stages",
        stage,
        str(events),
        str(seed),
        str(root),
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(
            f"training stage {stage} at {events:,} events failed:\n{result.stderr[-3000:]}"
        )
    answer = dict(json.loads(result.stdout.strip().splitlines()[-1]))
    # The whole process (start, imports, inputs, untimed preparation): what a run costs.
    answer["wall_seconds"] = time.perf_counter() - started
    return answer


def measure_size(
    events: int,
    seed: int,
    root: Path,
    repeats: int,
    stages: Sequence[str] = STAGES,
    progress: Callable[[str], None] | None = None,
    checkpoint: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """Generate once, then every stage ``repeats`` times: spreads of seconds and peak MB.
    ``checkpoint`` gets the size as measured so far after each stage."""
    say = progress or (lambda _: None)
    say(f"training: {events:,} events: generate")
    generated = run_stage("generate", events, seed, root)
    size: dict[str, Any] = {
        "requested_events": events,
        "events": generated["events"],
        "customers": generated["customers"],
        "products": generated["products"],
        "generate_seconds": round(generated["seconds"], 2),
        "stages": {},
    }
    for stage in stages:
        runs = []
        for repeat in range(repeats):
            say(f"training: {events:,} events: {stage} ({repeat + 1}/{repeats})")
            runs.append(run_stage(stage, events, seed, root))
        size["stages"][stage] = {
            **{key: value for key, value in runs[-1].items() if key not in SPREAD_FIGURES},
            **{key: spread([r[key] for r in runs], 2) for key in SPREAD_FIGURES},
        }
        if checkpoint:
            checkpoint(size)
    return size


def growth_by_stage(sizes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: power-law fits in events of the median seconds, peak MB and (when
    measured) the whole process's seconds."""
    if len(sizes) < 2:
        return {}
    events = [s["events"] for s in sizes]
    return {
        stage: {
            metric: fit_growth(events, [s["stages"][stage][metric]["median"] for s in sizes])
            for metric in SPREAD_FIGURES
            if all(metric in s["stages"][stage] for s in sizes)
        }
        for stage in sizes[0]["stages"]
        if all(stage in s["stages"] for s in sizes)
    }


def extrapolate(
    growth: dict[str, Any], events: int, repeats: int, time_box_minutes: float = TIME_BOX_MINUTES
) -> dict[str, Any]:
    """Predicted seconds and peak MB per stage at ``events``, and whether a full run of
    every stage ``repeats`` times fits in ``time_box_minutes`` (0: judged against the
    default box)."""
    stages = {}
    for stage, fits in growth.items():
        seconds = fits["seconds"].predict(events)
        # The process's fixed start-up can fit a falling line on a shared machine; the
        # process never takes less than the stage inside it.
        wall = max(seconds, fits.get("wall_seconds", fits["seconds"]).predict(events))
        stages[stage] = {
            "seconds": round(seconds, 1),
            "wall_seconds": round(wall, 1),
            "peak_mb": round(fits["peak_mb"].predict(events)),
        }
    one_run = sum(s["wall_seconds"] for s in stages.values()) / 60
    box = time_box_minutes if time_box_minutes > 0 else TIME_BOX_MINUTES
    return {
        "stages": stages,
        "one_run_minutes": round(one_run, 1),
        "run_minutes": round(one_run * repeats, 1),
        "time_box_minutes": box,
        "fits_time_box": one_run * repeats <= box,
        "peak_mb": max((s["peak_mb"] for s in stages.values()), default=0),
    }


def one_run_minutes(measured: Sequence[dict[str, Any]], events: int) -> float | None:
    """Predicted minutes of one run of every stage (and the generation) at ``events``: from
    the growth fitted on two or more measured counts, else linear from the one measured
    (None before any)."""
    if not measured:
        return None
    if len(measured) >= 2:
        return extrapolate(growth_by_stage(measured), events, 1)["one_run_minutes"]
    (only,) = measured
    total = only["generate_seconds"] + sum(
        s.get("wall_seconds", s["seconds"])["median"] for s in only["stages"].values()
    )
    return total * events / only["events"] / 60


def training_results(
    measured: Sequence[dict[str, Any]],
    skipped: dict[str, Any],
    *,
    seed: int,
    repeats: int,
    time_box_minutes: float,
    extrapolate_to: Sequence[int],
) -> dict[str, Any]:
    measured = sorted(measured, key=lambda m: m["events"])
    growth = growth_by_stage(measured)
    done = [m["requested_events"] for m in measured]
    predicted = {
        str(count): skipped.get(str(count)) or extrapolate(growth, count, repeats, time_box_minutes)
        for count in sorted({*extrapolate_to, *map(int, skipped)})
        if growth and count not in done
    }
    return {
        "seed": seed,
        "repeats": repeats,
        "time_box_minutes": time_box_minutes,
        "openblas_threads": 1,
        "cpus": len(os.sched_getaffinity(0)),
        "sizes": {str(m["requested_events"]): m for m in measured},
        "growth": {
            stage: {metric: fit.as_dict() for metric, fit in metrics.items()}
            for stage, metrics in growth.items()
        },
        "extrapolated": predicted,
    }


def run_training_benchmark(
    events: Sequence[int],
    *,
    seed: int,
    workdir: Path,
    repeats: int = 3,
    time_box_minutes: float = TIME_BOX_MINUTES,
    extrapolate_to: Sequence[int] = (10_000_000,),
    progress: Callable[[str], None] | None = None,
    checkpoint: Callable[[dict[str, Any]], object] | None = None,
    previous: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Measure each event count in turn, smallest first, and extrapolate the rest.

    ``previous`` are sizes measured by an earlier run (same seed); those of counts not
    asked for again are kept, so a slow count can be added later without measuring the
    others again.

    With a time box (``time_box_minutes`` > 0), a count runs as many of its ``repeats``
    as the predicted minutes of one run allow (at least one), and none when one run alone
    would exceed the box: that count is extrapolated instead. ``checkpoint`` gets the
    results so far after each count, so a long run leaves what it measured.
    """
    say = progress or (lambda _: None)
    measured = [p for p in previous if p["requested_events"] not in set(events)]
    skipped: dict[str, Any] = {}

    def results() -> dict[str, Any]:
        return training_results(
            measured,
            skipped,
            seed=seed,
            repeats=repeats,
            time_box_minutes=time_box_minutes,
            extrapolate_to=extrapolate_to,
        )

    for count in sorted(events):
        runs = repeats
        minutes = one_run_minutes(measured, count)
        if time_box_minutes > 0 and minutes is not None:
            if minutes > time_box_minutes:
                say(
                    f"training: {count:,} events not run: one run predicted {minutes:.0f} min "
                    f"> {time_box_minutes:g} min (BENCH_TIME_BOX=0 runs it anyway)"
                )
                if len(measured) >= 2:
                    skipped[str(count)] = extrapolate(
                        growth_by_stage(measured), count, repeats, time_box_minutes
                    )
                continue
            runs = max(1, min(repeats, int(time_box_minutes // minutes)))
            say(f"training: {count:,} events: {runs} run(s), ~{minutes:.1f} min each predicted")
        root = workdir / f"events-{count}"

        def partial(size: dict[str, Any]) -> None:
            # A count cut short still leaves the stages it finished.
            if checkpoint:
                keep = [m for m in measured if m["requested_events"] != size["requested_events"]]
                measured[:] = [*keep, size]
                checkpoint(results())

        try:
            size = measure_size(count, seed, root, runs, progress=progress, checkpoint=partial)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        measured[:] = [*(m for m in measured if m["requested_events"] != count), size]
        if checkpoint:
            checkpoint(results())
    return results()


def main(argv: list[str]) -> None:
    stage, events, seed, root = argv[0], int(argv[1]), int(argv[2]), Path(argv[3])
    measured = RUNNERS[stage](workspace(root, seed), events)
    measured["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps(measured, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
