"""The benchmark machinery (make bench): growth fits, the scale bench on a tiny catalogue,
the training bench's stages and extrapolation, the one report, and the CLI's errors.
Timings are printed, never asserted."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.benchmarks.growth import crossing, fit_growth, spread
from training.benchmarks.report import build_report, collect, write_report
from training.benchmarks.scale import (
    STAGES,
    K,
    make_catalogue,
    make_customers,
    numpy_bound,
    run_scale_benchmark,
    score_request,
)
from training.benchmarks.stages import (
    extrapolate,
    growth_by_stage,
    measure_size,
    one_run_minutes,
    run_training_benchmark,
)
from training.benchmarks.suite import parse_counts
from training.data.benchmark import _median_run
from training.data.synthetic.generator import generate, size_for_events

SEGREC = [sys.executable, "-m", "segrec.cli"]


# ---- growth ---------------------------------------------------------------------------------
def test_growth_fit_recovers_a_known_power_law() -> None:
    sizes = [1e3, 1e4, 1e5, 1e6]
    fit = fit_growth(sizes, [0.5 * n**1.5 for n in sizes])
    assert fit.exponent == pytest.approx(1.5)
    assert fit.coefficient == pytest.approx(0.5)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.predict(1e7) == pytest.approx(0.5 * 1e7**1.5)
    assert fit.size_at(0.5 * 1e8**1.5) == pytest.approx(1e8)


def test_growth_fit_is_least_squares_on_log_log() -> None:
    # By hand: log2 costs 0, 2, 3 at log2 sizes 0, 1, 2 -> slope 1.5, intercept 1/6.
    fit = fit_growth([1, 2, 4], [1, 4, 8])
    assert fit.exponent == pytest.approx(1.5)
    assert fit.coefficient == pytest.approx(2 ** (1 / 6))
    assert 0 < fit.r2 < 1
    flat = fit_growth([10, 100], [3.0, 3.0])
    assert flat.exponent == pytest.approx(0.0)
    assert math.isinf(flat.size_at(5.0))


@pytest.mark.parametrize(
    ("sizes", "costs", "message"),
    [
        ([10, 10], [1, 2], "two distinct sizes"),
        ([10, 100], [1, 0], "positive"),
        ([10, 100, 1000], [1, 2], "one cost per size"),
    ],
)
def test_growth_fit_refuses_what_it_cannot_fit(
    sizes: list[float], costs: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_growth(sizes, costs)


def test_crossing_uses_the_growth_between_the_sizes_around_the_budget() -> None:
    # A fixed 1 ms plus a linear part: the local slope, not one line, finds the crossing.
    sizes, costs = [1e4, 1e5, 1e6], [1.0, 2.0, 20.0]
    assert crossing(sizes, costs, 10.0) == pytest.approx(5e5)  # between 1e5 and 1e6
    assert crossing(sizes, costs, 100.0) == pytest.approx(5e6)  # past the largest
    low = 1e4 * 10 ** (math.log(1.5) / math.log(2))  # between 1e4 and 1e5
    assert crossing(sizes[::-1], costs[::-1], 1.5) == pytest.approx(low)
    assert fit_growth(sizes, costs).size_at(1.5) < 0.8 * low


def test_spread_is_median_min_max() -> None:
    assert spread([3.0, 1.0, 10.0, 2.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "runs": 4}
    with pytest.raises(ValueError, match="no samples"):
        spread([])


def test_data_bench_keeps_the_median_run_and_its_range() -> None:
    runs = [
        {"rows": 10, "seconds": 2.0, "rows_per_second": 5, "peak_mb": 100},
        {"rows": 10, "seconds": 1.0, "rows_per_second": 10, "peak_mb": 120},
        {"rows": 10, "seconds": 4.0, "rows_per_second": 2, "peak_mb": 110},
    ]
    combined = _median_run(runs)
    assert combined["seconds"] == 2.0 and combined["seconds_range"] == [1.0, 4.0]
    assert combined["peak_mb"] == 110 and combined["peak_mb_range"] == [100, 120]
    assert combined["runs"] == 3 and combined["rows"] == 10


# ---- scale ----------------------------------------------------------------------------------
def test_scale_request_ranks_real_items_and_times_every_stage() -> None:
    catalogue = make_catalogue(500, 8, seed=1)
    assert catalogue.arrays["als"]["item_factors"].shape == (500, 8)
    assert np.allclose(np.linalg.norm(catalogue.arrays["content"]["item_vectors"], axis=1), 1)
    customer = make_customers(catalogue, 1, events=30, seed=1)[0]
    laps = dict.fromkeys(STAGES, 0.0)
    best = score_request(catalogue, customer, laps)
    assert len(best) == 4 * K == len(set(best.tolist()))
    assert ((best >= 0) & (best < 500)).all()
    assert all(seconds > 0 for seconds in laps.values())
    bound = numpy_bound(catalogue, customer)
    scores = catalogue.arrays["svd"]["item_factors"] @ customer.svd_factors
    assert set(bound.tolist()) == set(np.argsort(-scores)[: 4 * K].tolist())


def test_scale_bench_on_a_tiny_catalogue() -> None:
    results = run_scale_benchmark(
        [200, 400, 800],
        [4, 8],
        budget_ms=1000.0,
        history_events=20,
        repeats=2,
        requests=8,
        seconds_per_run=0.01,
    )
    cells = results["cells"]
    assert [(c["items"], c["factors"]) for c in cells] == [
        (n, f) for n in (200, 400, 800) for f in (4, 8)
    ]
    for cell in cells:
        for figure in (*cell["request_ms"].values(), *cell["numpy_bound_ms"].values()):
            assert figure["runs"] == 2
            assert 0 < figure["min"] <= figure["median"] <= figure["max"]
        assert set(cell["stages_mean_ms"]) == set(STAGES)
        assert cell["ratio_to_bound"] > 0
        assert 5 <= cell["requests_per_run"] <= 8
    assert set(results["growth"]) == {"4", "8"}
    for found in results["growth"].values():
        assert found["request_p99_growth"]["points"] == 3
        limit = found["exhaustive_max_items"]
        assert limit is None or limit > 0
    print(json.dumps([(c["items"], c["factors"], c["request_ms"]["p50"]) for c in cells]))


# ---- training -------------------------------------------------------------------------------
def test_size_for_events_asks_the_generator_for_an_event_count(tmp_path: Path) -> None:
    spec = size_for_events(8000)
    summary = generate(tmp_path, spec, 3, dt.date(2026, 10, 31), progress=False)
    assert summary.products == spec.products
    assert 0.8 * 8000 < summary.events < 1.25 * 8000
    bigger = size_for_events(8_000_000)
    assert bigger.customers == pytest.approx(1000 * spec.customers, rel=0.01)
    assert spec.products < bigger.products < 1000 * spec.products  # sublinear, as named sizes
    with pytest.raises(ValueError, match="at least 1000 events"):
        size_for_events(10)


def _measured(events: int, seconds: dict[str, float], peak: dict[str, float]) -> dict[str, Any]:
    return {
        "requested_events": events,
        "events": events,
        "generate_seconds": 6.0,
        "stages": {
            stage: {
                "seconds": spread([seconds[stage] * 0.9, seconds[stage], seconds[stage] * 1.2]),
                "peak_mb": spread([peak[stage]]),
            }
            for stage in seconds
        },
    }


def test_growth_per_stage_and_extrapolation() -> None:
    sizes = [
        _measured(n, {"als": 1e-4 * n, "import": 1e-6 * n**1.5}, {"als": 200.0, "import": n / 1e3})
        for n in (100_000, 1_000_000)
    ]
    growth = growth_by_stage(sizes)
    assert growth["als"]["seconds"].exponent == pytest.approx(1.0)
    assert growth["import"]["seconds"].exponent == pytest.approx(1.5)
    assert growth["als"]["peak_mb"].exponent == pytest.approx(0.0, abs=1e-9)
    ahead = extrapolate(growth, 10_000_000, repeats=3, time_box_minutes=25)
    assert ahead["stages"]["als"]["seconds"] == pytest.approx(1000.0)
    assert ahead["stages"]["import"]["seconds"] == pytest.approx(1e-6 * 1e7**1.5, rel=1e-3)
    assert ahead["run_minutes"] == pytest.approx((1000 + 31622.8) * 3 / 60, rel=1e-3)
    assert not ahead["fits_time_box"]
    assert ahead["peak_mb"] == 10_000
    assert growth_by_stage(sizes[:1]) == {}
    # How long one run of every stage would take: linear from one count, fitted from two.
    assert one_run_minutes([], 1000) is None
    one = (6.0 + 10.0 + 1e-6 * 1e5**1.5) / 60
    assert one_run_minutes(sizes[:1], 1_000_000) == pytest.approx(10 * one, rel=1e-3)
    two = (1e-4 * 1e7 + 1e-6 * 1e7**1.5) / 60
    assert one_run_minutes(sizes, 10_000_000) == pytest.approx(two, rel=1e-3)


def test_training_results_keep_counts_measured_before(tmp_path: Path) -> None:
    sizes = [_measured(n, {"als": 1e-4 * n}, {"als": n / 1e3}) for n in (1_000_000, 100_000)]
    results = run_training_benchmark([], seed=1, workdir=tmp_path, previous=sizes)
    assert list(results["sizes"]) == ["100000", "1000000"]  # smallest first
    assert results["growth"]["als"]["seconds"]["exponent"] == pytest.approx(1.0)
    assert results["extrapolated"]["10000000"]["stages"]["als"]["peak_mb"] == 10_000


@pytest.mark.slow
def test_training_stages_run_in_their_own_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stages read settings from the environment, as make train does.
    monkeypatch.setenv("SEGREC_BLEND_MAX_CUSTOMERS", "12")
    seen: list[list[str]] = []
    measured = measure_size(
        8000,
        42,
        tmp_path,
        repeats=1,
        stages=("import", "als", "blend"),
        checkpoint=lambda size: seen.append(list(size["stages"])),
    )
    # What a run cut short would leave.
    assert seen == [["import"], ["import", "als"], ["import", "als", "blend"]]
    assert 0.75 * 8000 < measured["events"] < 1.25 * 8000
    for stage in ("import", "als"):
        figures = measured["stages"][stage]
        assert figures["seconds"]["runs"] == 1
        assert 0 < figures["seconds"]["median"] < figures["wall_seconds"]["median"]
        assert figures["peak_mb"]["min"] > 50  # an interpreter with pandas, at least
    assert measured["stages"]["als"]["customers"] > 100
    # The blend stage is make train's blend fit: a seeded sample of at most the cap.
    sample = measured["stages"]["blend"]["sample"]
    assert 0 < sample["customers"] <= 12 < sample["of_customers"]
    assert sample["seed"] == 42 and sample["max_customers"] == 12
    validation = measured["stages"]["blend"]["validation_customers"]
    assert 0 < validation <= sample["of_new_item_customers"]  # earlier windows pooled too
    print(json.dumps(measured["stages"], indent=1))


# ---- the report -----------------------------------------------------------------------------
def _results() -> dict[str, Any]:
    scale = run_scale_benchmark(
        [200, 400],
        [4],
        budget_ms=0.5,
        history_events=10,
        repeats=2,
        requests=6,
        seconds_per_run=0.01,
    )
    sizes = [
        _measured(n, {"als": 1e-4 * n, "blend": 2e-5 * n}, {"als": 300.0, "blend": n / 500})
        for n in (100_000, 1_000_000)
    ]
    growth = growth_by_stage(sizes)
    training = {
        "repeats": 3,
        "openblas_threads": 1,
        "sizes": {str(s["events"]): s for s in sizes},
        "growth": {
            stage: {metric: fit.as_dict() for metric, fit in metrics.items()}
            for stage, metrics in growth.items()
        },
        "extrapolated": {"10000000": extrapolate(growth, 10_000_000, 3)},
    }
    online = {"sqlite": {"segrec_reader": {"p50_ms": 0.4, "p50_ms_range": [0.3, 0.6]}}}
    return {"scale": scale, "training": training, "online": online}


def test_report_gathers_tables_plots_medians_and_ranges() -> None:
    document, page = build_report(_results(), {})
    assert document["sections"] == ["online", "scale", "training"]
    headline = document["headline"]
    assert headline["training"]["exponent_seconds"] == {"als": 1.0, "blend": 1.0}
    assert headline["training"]["extrapolated"]["10000000"]["run_minutes"] > 0
    assert headline["scale"]["budget_ms"] == 0.5
    cell = document["scale"]["cells"][0]["request_ms"]["p50"]
    assert set(cell) == {"median", "min", "max", "runs"}
    stage = document["training"]["sizes"]["100000"]["stages"]["als"]["seconds"]
    assert (stage["median"], stage["min"], stage["max"]) == (10.0, 9.0, 12.0)
    json.dumps(document, allow_nan=False)
    assert page.count("<img src='data:image/png;base64,") == 2  # scale and training
    for text in ("request / bound", "time exponent", "Extrapolated to 10,000,000 events"):
        assert text in page
    assert "10.00 [9.00-12.00]" not in page  # seconds shown to one decimal
    assert "10.0 [9.0-12.0]" in page
    assert "0.4 [0.3-0.6]" in page  # the online bench's median [min-max]


def test_report_files_from_the_bench_directory(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    for name, found in _results().items():
        (bench / f"{name}.json").write_text(json.dumps(found))
    (bench / "data.json").write_text(json.dumps({"sizes": {"tiny": {"clean": {"rows": 5}}}}))
    (bench / "data.png").write_bytes(b"\x89PNG not really")
    results, pngs = collect(bench)
    assert sorted(results) == ["data", "online", "scale", "training"] and list(pngs) == ["data"]
    json_path, html_path = write_report(tmp_path)
    assert json.loads(json_path.read_text())["data"]["sizes"]["tiny"]["clean"]["rows"] == 5
    assert html_path.read_text().count("data:image/png;base64,") == 3
    with pytest.raises(FileNotFoundError, match="no benchmark results"):
        write_report(tmp_path / "empty")


# ---- the command line -----------------------------------------------------------------------
def test_counts_parse_like_the_makefile_writes_them() -> None:
    assert parse_counts("1e6, 1e5,1e5", "--events", minimum=1000) == [100_000, 1_000_000]
    with pytest.raises(ValueError, match="--events takes comma-separated whole numbers"):
        parse_counts("1.5e3.2", "--events", minimum=1000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "1e5,lots"], "--events takes comma-separated whole numbers of at least"),
        (["--events", "500"], "--events takes comma-separated whole numbers of at least 1,000"),
        (["--catalogues", "10"], "--catalogues takes comma-separated whole numbers"),
        (["--catalogues", "1e8"], "at most 2,000,000"),
        (["--factors", "2.5"], "--factors takes comma-separated whole numbers"),
        (["--only", "scale,speed"], "--only takes parts from data, online, scale, training"),
        (["--repeats", "0"], "Invalid value for '--repeats'"),
    ],
)
def test_bench_command_refuses_bad_sizes_clearly(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [*SEGREC, "bench", *args],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()  # refused before any work
