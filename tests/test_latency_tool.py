"""The latency benchmark's own logic: statistics, workload, load loops, servers, report.

No assertion here times the system under test: the loops run against a tiny local app at
a low rate, and only counts and bookkeeping are checked; the stage-by-stage replay is
checked for answering what the engine answers, on the small trained storefront.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from loadtests.latency import (
    IdSampler,
    ServerSpec,
    StepResult,
    aiohttp_sender,
    client_session,
    closed_loop,
    median_of,
    open_loop,
    percentiles,
    summarise,
    summarise_steps,
    write_report,
)
from segrec.service_process import free_port, running_service

if TYPE_CHECKING:
    from segrec.settings import Settings
    from training.train.pipeline import TrainingRun


def test_percentiles_interpolate_between_order_statistics() -> None:
    # 1..101: the q-th percentile is exactly q + 1; 1..4: p50 halfway between 2 and 3.
    found = percentiles(list(range(1, 102)))
    assert (found["p50_ms"], found["p90_ms"], found["p99_ms"]) == (51.0, 91.0, 100.0)
    assert found["mean_ms"] == 51.0 and found["max_ms"] == 101.0
    assert percentiles([4.0, 1.0, 3.0, 2.0], (50,))["p50_ms"] == 2.5
    assert np.isnan(percentiles([])["p99_ms"])


def test_summary_counts_failures_and_degraded_answers_apart() -> None:
    result = StepResult(elapsed=2.0)
    for latency in (0.001, 0.002, 0.003):
        result.record(latency, 200, b'{"fallback":null}')
    result.record(0.004, 200, b'{"fallback":"store_unavailable"}')
    result.record(0.5, 503)
    result.record(0.5, "ClientConnectorError")
    summary = summarise(result)
    assert (summary["requests"], summary["ok"], summary["failed"]) == (6, 4, 2)
    assert summary["failures"] == {"503": 1, "ClientConnectorError": 1}
    assert summary["degraded"] == 1
    assert summary["achieved_rps"] == 2.0  # successes over the step's length
    assert summary["p50_ms"] == 2.5 and summary["max_ms"] == 4.0


def test_median_of_runs_keeps_the_range() -> None:
    runs = [{"p99_ms": 3.0}, {"p99_ms": 1.0}, {"p99_ms": 10.0}, {"p99_ms": float("nan")}]
    assert median_of(runs, ["p99_ms"]) == {"runs": 4, "p99_ms": 3.0, "p99_ms_range": [1.0, 10.0]}


def test_sampler_draws_known_ids_zipf_like_and_some_unknown() -> None:
    ids = [f"c_{i:04d}" for i in range(1000)]
    sampler = IdSampler(ids, unknown_share=0.05, seed=3)
    drawn = sampler.draw(20_000, np.random.default_rng(1))
    known = set(ids)
    unknown = [c for c in drawn if c not in known]
    assert 0.04 < len(unknown) / len(drawn) < 0.06
    counts = Counter(c for c in drawn if c in known).most_common()
    # A handful of busy customers, a long tail.
    assert counts[0][1] > 20 * np.median([n for _, n in counts])
    body = json.loads(sampler.bodies(1, np.random.default_rng(0))[0])
    assert set(body) == {"customer_id", "k"}


def test_server_specs_parse_knobs_into_config_and_patches(tmp_path: Path) -> None:
    spec = ServerSpec.parse("bentoml+nolog+threads4+inline_read+switch_1ms")
    assert spec.bentoml_config == {"logging": {"access": {"enabled": False}}, "threads": 4}
    assert spec.patches == ("inline_read", "switch_1ms")
    assert spec.command(3000)[1:3] == ["serve", "loadtests.bare_app:Segrec"]
    env = spec.environment(tmp_path)
    assert env["SEGREC_LATENCY_PATCHES"] == "inline_read,switch_1ms"
    written = json.loads(Path(env["BENTOML_CONFIG"]).read_text())
    assert written == {"services": {"Segrec": spec.bentoml_config}}
    assert ServerSpec.parse("bentoml").command(3000)[2] == "serving.service:Segrec"
    assert ServerSpec.parse("bare+inline_read").patches == ("inline_read",)
    for bad in ("bare+nolog", "bare+gc_freeze", "flask", "bentoml+turbo"):
        with pytest.raises(ValueError, match="server"):
            ServerSpec.parse(bad)


@pytest.fixture(scope="module")
def tiny_app() -> Iterator[tuple[str, list[float]]]:
    """A local Starlette app under uvicorn in a thread; records when requests arrive."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    arrivals: list[float] = []

    async def recommend(request: Request) -> JSONResponse:
        arrivals.append(time.monotonic())
        body = await request.json()
        if body["customer_id"] == "c_fail":
            return JSONResponse({"error": "no"}, status_code=500)
        return JSONResponse({"customer_id": body["customer_id"], "fallback": None})

    app = Starlette(routes=[Route("/recommend", recommend, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/recommend", arrivals
    server.should_exit = True
    thread.join(timeout=5)


def test_open_loop_sends_at_the_fixed_rate_whatever_the_answers(
    tiny_app: tuple[str, list[float]],
) -> None:
    url, arrivals = tiny_app
    bodies = [json.dumps({"customer_id": f"c_{i}"}).encode() for i in range(40)]
    bodies[7] = json.dumps({"customer_id": "c_fail"}).encode()

    async def run() -> StepResult:
        async with client_session() as session:
            return await open_loop(aiohttp_sender(session, url), bodies, rate=20.0)

    arrivals.clear()
    result = asyncio.run(run())
    assert len(result.latencies) == 39 and result.failures == {"500": 1}
    assert len(result.lags) == 40 and result.elapsed >= 40 / 20.0
    # Arrivals follow the schedule (1/20 s apart), not the answers: the span of 40
    # arrivals is about 39 intervals. Loose bounds: this checks the scheduler, not speed.
    span = arrivals[-1] - arrivals[0]
    assert 39 / 20.0 * 0.8 < span < 39 / 20.0 * 1.5


def test_closed_loop_keeps_its_clients_busy(tiny_app: tuple[str, list[float]]) -> None:
    url, _ = tiny_app
    bodies = [json.dumps({"customer_id": "c_1"}).encode()]

    async def run() -> StepResult:
        async with client_session() as session:
            return await closed_loop(aiohttp_sender(session, url), bodies, 3, 0.5)

    result = asyncio.run(run())
    assert len(result.latencies) >= 3 and not result.failures
    assert result.elapsed >= 0.5


def test_a_server_process_is_stopped_even_when_the_block_fails(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with (
        pytest.raises(RuntimeError, match="boom"),
        running_service(
            command,
            f"http://127.0.0.1:{port}",
            tmp_path / "server.log",
            ready_path="/",
            ready_timeout=20,
        ) as service,
    ):
        raise RuntimeError("boom")
    assert service.process.poll() is not None  # stopped by SIGTERM to its group


def test_report_has_medians_ratios_goals_and_a_plot(tmp_path: Path) -> None:
    specs = [ServerSpec.parse("bentoml"), ServerSpec.parse("bare")]
    steps = []
    for repeat in range(3):
        for rate, scale in ((50.0, 1.0), (200.0, 2.0)):
            for label, p99 in (("bentoml", 12.0 * scale), ("bare", 6.0 * scale)):
                steps.append(
                    {
                        "server": label,
                        "mode": "open",
                        "rate": rate,
                        "repeat": repeat,
                        "p50_ms": p99 / 2,
                        "p90_ms": p99 * 0.8,
                        "p99_ms": p99 + repeat,
                        "mean_ms": p99 / 2,
                        "achieved_rps": rate,
                        "failed": 0,
                        "degraded": 0,
                    }
                )
        for label, rps in (("bentoml", 100.0), ("bare", 180.0)):
            steps.append(
                {"server": label, "mode": "closed", "repeat": repeat, "achieved_rps": rps}
                | {"p50_ms": 5.0, "p99_ms": 9.0, "failed": 0, "degraded": 0}
            )
    summary = summarise_steps(steps, specs, (50.0, 200.0))
    assert summary["latency"]["bentoml"]["200"]["p99_ms"] == 25.0  # median of 24, 25, 26
    assert summary["throughput"]["bare"]["achieved_rps"] == 180.0
    ratios = summary["ratios"]["bentoml"]
    assert ratios["reference"] == "bare" and ratios["throughput_ratio_bare_over_this"] == 1.8
    assert ratios["p99_ratio_this_over_bare_at_50"] == pytest.approx(13 / 7, abs=1e-3)
    assert summary["goals"]["bentoml"] == {
        "p99_under_15ms_at_200": False,
        "throughput_within_1.5x_of_bare": False,
    }
    report = {"machine": {"pinning": "test"}, "steps": steps, "summary": summary}
    json_path, png_path = write_report(report, tmp_path / "bench")
    assert json.loads(json_path.read_text())["summary"]["throughput"]["bentoml"]["runs"] == 3
    assert png_path.stat().st_size > 1000


@pytest.mark.integration
@pytest.mark.slow
def test_the_stage_by_stage_replay_answers_what_the_engine_does(
    trained_small: tuple[Settings, TrainingRun], tmp_path: Path
) -> None:
    """On the small trained storefront, with a tactic that restricts one segment's home
    carousel to one category, a boost rule and the shipped experiments file: the replay,
    tactics stage included, gives every request the engine's own answer."""
    import pandas as pd
    import yaml

    from loadtests.latency import replay_breakdown, replay_failure
    from segrec.bundle import read_bundle
    from serving.feature_budget import BudgetedFeatureSource
    from serving.loading import build_engine, open_reader
    from serving.personalisation import Personalisation
    from serving.tactics import no_tactics

    settings, run = trained_small
    assert run.export is not None
    segments = pd.read_parquet(settings.features_dir / "customer_segments.parquet")
    segments = segments[segments["event_timestamp"] == segments["event_timestamp"].max()]
    segment = str(segments["segment_name"].value_counts().index[0])
    category = str(pd.read_parquet(settings.clean_dir / "products.parquet")["category"].mode()[0])
    rules = [
        {
            "id": "segment-filter",
            "priority": 10,
            "when": {"segment_name": segment, "placement": ["home"]},
            "then": {"offer": "segment-special", "filter": {"categories": [category]}},
        },
        {
            "id": "bargain-boost",
            "priority": 20,
            "when": {"discount_affinity": {"gte": 0.2}},
            "then": {"boost": {"price_bands": ["low"], "weight": 0.3}},
        },
    ]
    tactics = tmp_path / "tactics.yaml"
    tactics.write_text(yaml.safe_dump({"version": "replay-1", "rule_sets": {"default": rules}}))
    serving = settings.model_copy(update={"tactics_file": tactics})
    engine = build_engine(
        serving,
        bundle=read_bundle(Path(run.export.bundle_dir)),
        # A generous budget: a read past it on a busy machine would differ by design.
        features=BudgetedFeatureSource(open_reader(serving), 5000),
    )
    in_segment = segments.loc[segments["segment_name"] == segment, "customer_id"]
    others = segments.loc[segments["segment_name"] != segment, "customer_id"]
    ids = [*in_segment.head(8), *others.head(8), "c_ffffffffffffffff"]

    started = time.perf_counter()
    breakdown = replay_breakdown(engine, ids)
    print(f"replay of {len(ids)} requests: {time.perf_counter() - started:.2f}s")

    assert breakdown["replay_mismatches"] == 0, breakdown["mismatched_customers"]
    assert replay_failure({"requests": len(ids), "breakdown": breakdown}) is None
    stages = breakdown["stages"]
    assert stages["tactics (facts, rules)"]["calls_per_request"] == 1
    assert "experiment assignment" in stages
    assert breakdown["requests_with_tactics"] >= 1
    # The segment's filter fired and changed the answer: without tactics it would differ,
    # so a replay without the tactics stage would have mismatched.
    fired = [c for c in ids if "segment-filter" in engine.recommend(c, 10).tactics.rules]
    assert fired, "no request met the segment filter"
    with_tactics = engine.recommend(fired[0], 10)
    category_of = engine.categories_by_product()
    assert {category_of[item["product_id"]] for item in with_tactics.items} == {category}
    rules_in_force = engine.personalisation
    engine.personalisation = Personalisation(no_tactics(), rules_in_force.experiments)
    try:
        without = engine.recommend(fired[0], 10)
        assert [i["product_id"] for i in without.items] != [
            i["product_id"] for i in with_tactics.items
        ]
    finally:
        engine.personalisation = rules_in_force
    mismatch = {"requests": 5, "breakdown": {"replay_mismatches": 2, "mismatched_customers": ["a"]}}
    assert "REPLAY MISMATCH" in str(replay_failure(mismatch))


def test_the_rerank_cost_tool_times_each_bundles_engine_and_one_without_trees(
    trained_small: tuple[Settings, TrainingRun],
) -> None:
    """``python -m loadtests.rerank_cost``: an engine per bundle as serving builds it, one
    without the re-ranker, interleaved rounds of the same requests."""
    import pandas as pd

    from loadtests.rerank_cost import WITHOUT, engines, measure
    from serving.loading import open_reader

    settings, run = trained_small
    assert run.export is not None
    reader = open_reader(settings)
    named = engines(settings, [Path(run.export.bundle_dir)], reader)
    assert list(named)[-1] == WITHOUT and len(named) == 2
    with_trees = next(engine for name, engine in named.items() if name != WITHOUT)
    assert with_trees.rerank_arrays is not None and "walk_children" in with_trees.rerank_arrays
    assert named[WITHOUT].rerank_arrays is None
    assert "trees of depth" in next(iter(named))
    ids = pd.read_parquet(settings.features_dir / "customer_features.parquet")["customer_id"]
    customers = ids.drop_duplicates().head(5).tolist()
    features = dict(zip(customers, reader.read_many(customers), strict=True))
    medians = measure(named, features, rounds=2)
    assert set(medians) == set(named) and all(value > 0 for value in medians.values())
