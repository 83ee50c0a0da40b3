"""The load test: its sampler, budgets, profiles and capacity arithmetic on hand-made
inputs, the runner's answers to bad input, and the smoke profile as a gate against a real
``bentoml serve`` started by the runner (it passes), and the gate failing on an impossible
budget against a stand-in for the service. The soak: its verdict on hand-made samples, and
a short real run of ``loadtests.soak`` against its own server.

Nothing here imports Locust: it monkey-patches the whole process with gevent. No
assertion times the server; the smoke budgets are generous on purpose.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from loadtests import run as runner
from loadtests.capacity import Step, capacity_model, find_knee, pods_needed, round_up
from loadtests.soak import Watch, server_errors, verdict
from loadtests.workload import (
    Budgets,
    IdSet,
    ProfileError,
    ZipfSampler,
    check_budgets,
    load_profile,
    percentile,
)
from segrec.pseudonym import CUSTOMER_ID_PATTERN
from segrec.service_process import free_port
from segrec.settings import PROJECT_ROOT, Settings
from tests.conftest import serving_workspace
from training.train.pipeline import TrainingRun


# ---- the Zipf sampler ---------------------------------------------------------------------
def test_sampler_weights_follow_the_rank_zipf_like() -> None:
    sampler = ZipfSampler(["a", "b", "c", "d"], exponent=1.0, seed=3)
    # Weights 1, 1/2, 1/3, 1/4 over the harmonic number 25/12.
    chances = [sampler.probabilities()[i] for i in sampler.ranked]
    assert chances == pytest.approx([12 / 25, 6 / 25, 4 / 25, 3 / 25])
    rng = random.Random(0)
    drawn = Counter(sampler.draw(rng) for _ in range(20_000))
    assert [drawn[i] / 20_000 for i in sampler.ranked] == pytest.approx(chances, abs=0.015)


def test_exponent_zero_draws_uniformly() -> None:
    sampler = ZipfSampler(list("abcde"), exponent=0.0)
    assert list(sampler.probabilities().values()) == pytest.approx([0.2] * 5)


def test_unknown_customers_are_well_formed_and_new() -> None:
    known = [f"c_{i:016x}" for i in range(50)]
    sampler = ZipfSampler(known, unknown_share=0.25, seed=1)
    rng = random.Random(7)
    draws = [sampler.draw(rng) for _ in range(8_000)]
    unknown = [d for d in draws if d not in set(known)]
    assert len(unknown) / len(draws) == pytest.approx(0.25, abs=0.02)
    assert all(re.fullmatch(CUSTOMER_ID_PATTERN, d) for d in unknown)
    assert sum(sampler.probabilities().values()) == pytest.approx(0.75)


def test_sampler_is_seeded() -> None:
    ids = [f"p{i}" for i in range(100)]
    one, same, other = ZipfSampler(ids, seed=5), ZipfSampler(ids, seed=5), ZipfSampler(ids, seed=6)
    assert one.ranked == same.ranked != other.ranked
    first = [one.draw(random.Random(2)) for _ in range(5)]
    assert first == [same.draw(random.Random(2)) for _ in range(5)]


def test_sampler_refuses_what_it_cannot_draw_from() -> None:
    with pytest.raises(ValueError, match="no ids"):
        ZipfSampler([])
    with pytest.raises(ValueError, match="unknown_share"):
        ZipfSampler(["a"], unknown_share=1.5)


# ---- budgets and profiles -----------------------------------------------------------------
def test_breaches_name_the_budget_and_by_how_much() -> None:
    budgets = Budgets(p95_ms=50, p99_ms=100, max_failure_ratio=0.01)
    breaches = check_budgets(requests=100, failures=2, p95_ms=40, p99_ms=150, budgets=budgets)
    assert [b.budget for b in breaches] == ["p99_ms", "max_failure_ratio"]
    assert breaches[0].message() == (
        "p99 latency budget broken: 150 ms > 100 ms (over by 50 ms, 1.5x)"
    )
    assert "2.00% of requests failed, budget 1.00%" in breaches[1].message()
    assert not check_budgets(requests=10, failures=0, p95_ms=50, p99_ms=100, budgets=budgets)
    nothing = check_budgets(requests=0, failures=0, p95_ms=0, p99_ms=0, budgets=budgets)
    assert [b.budget for b in nothing] == ["requests"]


def test_percentile_interpolates_between_order_statistics() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile(list(range(1, 102)), 99) == 100.0
    assert percentile([], 99) != percentile([], 99)  # NaN


def test_profiles_take_overrides_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    smoke = load_profile("smoke")
    assert smoke.pacing == "think" and smoke.duration_s and smoke.duration_s <= 15
    steady = load_profile("steady", overrides={"rps": 200, "duration_s": 600, "users": 10})
    assert (steady.rps, steady.duration_s, steady.users, steady.planned_seconds) == (
        200,
        600,
        10,
        600,
    )
    # Rate-paced users are sized to the rate unless given; think-paced ones are fixed.
    assert load_profile("steady").users_at(100) == 100 and smoke.users_at(None) == smoke.users
    assert steady.users_at(100) == 10
    monkeypatch.setenv("SEGREC_LOADTEST_P99_MS", "7")
    assert load_profile("steady").budgets.p99_ms == 7
    assert load_profile("steady", overrides={"p99_ms": 3}).budgets.p99_ms == 3  # flag wins
    step = load_profile("step", overrides={"rps": 200, "step_s": 10})
    assert step.step is not None and step.step.rates() == [50, 100, 150, 200]
    assert step.planned_seconds == 40


def test_bad_profiles_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"unknown profile 'nope': choose one of smoke, st"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="step profile's length is its steps"):
        load_profile("step", overrides={"duration_s": 10})
    bad = tmp_path / "profiles.toml"
    bad.write_text(
        '[profiles.x]\npacing = "think"\nduration_s = 5\nusers = 0\nthink_min_s = 1\n'
        "think_max_s = 0\n[profiles.x.budgets]\np95_ms = 1\np99_ms = 1\n"
        "max_failure_ratio = 0\n"
    )
    with pytest.raises(ProfileError, match="users must be at least 1; think times"):
        load_profile("x", bad)
    bad.write_text("[profiles.y]\npacing = 'rate'\n")
    with pytest.raises(ProfileError, match="missing setting 'budgets'"):
        load_profile("y", bad)


# ---- the capacity model -------------------------------------------------------------------
def _step(rps: float, ok: bool, cpu_ms: float = 5.0) -> Step:
    return Step(rps, rps, 20.0 if ok else 900.0, ok, cpu_ms, rps * cpu_ms / 1000)


def test_the_knee_survives_one_noisy_step_but_not_two_failures() -> None:
    steps = [_step(25, True), _step(50, True), _step(75, False), _step(100, True)]
    steps += [_step(125, False), _step(150, False), _step(175, True)]
    knee, broke = find_knee(steps)
    assert knee is steps[3] and broke is steps[4]
    assert find_knee([_step(25, True), _step(50, False)]) == (steps[0], _step(50, False))
    assert find_knee([_step(25, False), _step(50, False)])[0] is None
    assert find_knee([_step(25, True)]) == (_step(25, True), None)


def test_capacity_arithmetic_on_a_hand_made_ladder() -> None:
    # Knee at 100 req/s, 6 ms of CPU per request: 0.6 cores there.
    steps = [_step(50, True, 6.0), _step(100, True, 6.0), _step(150, False, 6.0)]
    model = capacity_model(steps, p99_budget_ms=100, server_rss_mb=400)
    assert model["knee_rps"] == 100 and model["cpu_ms_per_request"] == 6.0
    assert model["cpu_cores_at_knee"] == pytest.approx(0.6)
    assert model["cpu_request_cores"] == 0.6 and model["cpu_limit_cores"] == 0.9
    assert model["hpa_cpu_target_percent"] == 70  # 0.7 x 0.6 / 0.6
    assert model["per_pod_design_rps"] == 70
    assert [row["pods"] for row in model["pods_for"]] == [15, 143, 1429]
    assert model["pods_for"][0]["arithmetic"] == "ceil(1000 / 70) = ceil(14.29) = 15 -> 15 pods"
    assert model["pods_for"][0]["cpu_request_cores_total"] == 9.0
    assert (model["memory_request_mib"], model["memory_limit_mib"]) == (512, 640)
    assert model["breaks_first"].startswith("at 150 req/s")
    assert model["bottleneck"].startswith("not CPU: 0.60 cores")
    assert capacity_model([_step(25, False)], p99_budget_ms=100)["knee_rps"] is None


def test_rounding_and_the_minimum_pod_count() -> None:
    assert round_up(0.349, 0.1) == pytest.approx(0.4)
    assert round_up(0.6, 0.1) == pytest.approx(0.6)
    assert round_up(0.01, 0.1) == pytest.approx(0.1)
    assert pods_needed(50, 70)["pods"] == 2  # one pod is no availability
    assert pods_needed(140, 70)["pods"] == 2 and pods_needed(141, 70)["pods"] == 3


# ---- the runner's answers to bad input ----------------------------------------------------
def test_unknown_profile_is_a_message_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["--profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nope'" in err and "Traceback" not in err


def test_unreachable_host_is_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert runner.main(["--profile", "smoke", "--host", url.removeprefix("http://")]) == 2
    assert f"no service answers at {url}/readyz" in capsys.readouterr().err


def test_no_data_is_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEGREC_DATA_DIR", str(tmp_path / "nothing"))
    assert runner.main(["--profile", "smoke", "--start-server"]) == 2
    assert "customer_segments.parquet" in capsys.readouterr().err


# ---- against a real server ----------------------------------------------------------------
@dataclass
class Workspace:
    settings: Settings
    env: dict[str, str]


def _workspace(trained_small: tuple[Settings, TrainingRun], root: Path) -> Workspace:
    trained, run = trained_small
    assert run.export is not None
    settings = serving_workspace(trained, root, Path(run.export.bundle_dir))
    env = {
        "SEGREC_DATA_DIR": str(settings.data_dir),
        "SEGREC_FEAST_REPO": str(trained.feast_repo),
        "SEGREC_FEATURE_CLOCK": "data",
        "SEGREC_SERVING_TIMEOUT_MS": "500",  # a busy 2-core CI box
        "BENTOML_HOME": str(root / "bentoml_home"),
    }
    return Workspace(settings, env)


@pytest.fixture(scope="module")
def workspace(
    trained_small: tuple[Settings, TrainingRun], tmp_path_factory: pytest.TempPathFactory
) -> Workspace:
    """A data directory for the runner to start its own server over."""
    return _workspace(trained_small, tmp_path_factory.mktemp("loadtest"))


def _run_loadtest(
    workspace: Workspace, reports: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {**os.environ, **workspace.env, "SEGREC_REPORTS_DIR": str(reports)}
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.run", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    profile = args[args.index("--profile") + 1]
    summary_path = reports / "loadtest" / f"{profile}.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return done, summary


@pytest.mark.slow
@pytest.mark.integration
def test_smoke_starts_its_own_server_pins_it_and_passes(
    workspace: Workspace, tmp_path: Path
) -> None:
    done, summary = _run_loadtest(
        workspace, tmp_path / "reports", "--profile", "smoke", "--start-server"
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "(started here)" in output and "gate PASS" in output
    if len(os.sched_getaffinity(0)) >= 2:
        assert "pinning: server (bentoml serve and its worker) on core" in output
        assert summary["runner"]["server_core"] != summary["runner"]["load_generator_core"]
    out = tmp_path / "reports" / "loadtest"
    for name in ("smoke.html", "smoke_stats.csv", "smoke.json", "smoke-server.log"):
        assert (out / name).stat().st_size > 0, name
    assert summary["passed"] and summary["failures"] == 0 and summary["requests"] > 20
    assert {"/recommend [home]", "/recommend [product]", "/similar", "/events [view]"} <= set(
        summary["endpoints"]
    )
    assert summary["total"]["p99_ms"] >= summary["total"]["p50_ms"] > 0
    assert summary["server"]["cpu_ms_per_request"] > 0 and summary["runner"]["server_started"]
    # The server ran over a scratch copy: the load's events did not land in the data.
    assert not (workspace.settings.data_dir / "events").exists()


class _StubStorefront(BaseHTTPRequestHandler):
    """The service's API shape with canned answers, recording what it was sent."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the real server
    seen: ClassVar[list[tuple[str, Any]]] = []

    def do_GET(self) -> None:
        self._send({"ok": True} if self.path == "/readyz" else None)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, body))
        items = [{"product_id": "P000001", "score": 1.0}]
        if self.path == "/events":
            self._send({"accepted": len(body["events"]), "duplicates": 0, "rejected": []})
        elif self.path == "/recommend/batch":
            self._send({"results": [{"items": items}] * len(body["requests"])})
        else:
            self._send({"items": items, "fallback": None})

    def _send(self, answer: Any) -> None:
        data = json.dumps(answer).encode()
        self.send_response(200 if answer is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub_api() -> Iterator[str]:
    """A stand-in for the service in a thread of this process: the gate's verdict does
    not depend on the real service, so no server start is paid for it."""
    _StubStorefront.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _StubStorefront)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
@pytest.mark.integration
def test_the_gate_fails_on_an_impossible_budget(stub_api: str, tmp_path: Path) -> None:
    customers = [f"c_{i:016x}" for i in range(200)]
    ids = IdSet(customers, [f"P{i:06d}" for i in range(1, 51)], "hand-made").write(
        tmp_path / "ids.json"
    )
    env = {**os.environ, "SEGREC_REPORTS_DIR": str(tmp_path / "reports")}
    command = [sys.executable, "-m", "loadtests.run", "--profile", "smoke", "--host", stub_api]
    command += ["--ids", str(ids), "--duration", "3", "--p99-ms", "0.001"]
    command += ["--server-pid", str(os.getpid())]
    done = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]
    assert "BUDGET BROKEN: p99 latency budget broken" in output and "> 0.001 ms" in output
    assert "gate FAIL" in output and "pinning: not pinned" in output
    summary = json.loads((tmp_path / "reports" / "loadtest" / "smoke.json").read_text())
    assert not summary["passed"] and summary["budgets"]["p99_ms"] == 0.001
    assert summary["failures"] == 0 and summary["server"]["cpu_seconds"] is not None
    assert [b.split(":")[0] for b in summary["breaches"]] == ["p99 latency budget broken"]
    # The traffic the stub saw: every page kind, well-formed ids, the catalogue's products.
    seen = _StubStorefront.seen
    placements = {b.get("placement") for p, b in seen if p == "/recommend"}
    assert placements >= {"home", "product", "cart"}
    assert {p for p, _ in seen} >= {"/recommend", "/similar", "/events", "/recommend/batch"}
    events = [e for p, b in seen if p == "/events" for e in b["events"]]
    assert all(re.fullmatch(CUSTOMER_ID_PATTERN, e["customer_id"]) for e in events)
    assert {e["product_id"] for e in events} <= {f"P{i:06d}" for i in range(1, 51)}


# ---- the soak ---------------------------------------------------------------------------
MB = 2**20


def test_the_soak_verdict_holds_memory_and_descriptors_from_mid_run_to_the_end() -> None:
    steady = Watch(probes=30, samples=[(0.0, {7: (100 * MB, 40)}), (5.0, {7: (200 * MB, 50)})])
    steady.samples += [(10.0, {7: (204 * MB, 52)})]
    held = verdict(steady, max_rss_growth=0.05, max_fd_growth=10)
    assert held["broken"] == []
    assert held["workers"][7] == {
        "rss_mb_mid": 200.0,
        "rss_mb_end": 204.0,
        "rss_growth": 0.02,
        "fds_mid": 50,
        "fds_end": 52,
        "fds_max": 52,
    }
    leaking = Watch(probes=30, samples=[(0.0, {7: (100 * MB, 40)}), (5.0, {7: (200 * MB, 50)})])
    leaking.samples += [(10.0, {7: (212 * MB, 61)})]
    broken = verdict(leaking, max_rss_growth=0.05, max_fd_growth=10)["broken"]
    assert broken == [
        "worker 7: RSS grew 6.0% from mid-run (budget 5%)",
        "worker 7: 11 more descriptors (budget 10)",
    ]


def test_the_soak_verdict_catches_probes_restarts_and_missing_samples() -> None:
    restarted = Watch(probes=9, probe_failures=[(3.0, "HTTPError: HTTP Error 503")])
    restarted.samples = [(0.0, {7: (MB, 4)}), (5.0, {7: (MB, 4)}), (10.0, {8: (MB, 4)})]
    assert verdict(restarted, 0.05, 10)["broken"] == [
        "/readyz failed 1 times",
        "worker 8 appeared after mid-run (a restart?)",
    ]
    assert verdict(Watch(probes=3), 0.05, 10)["broken"] == [
        "no worker samples (server pid unknown?)"
    ]


def test_only_5xx_failures_count_as_server_errors(tmp_path: Path) -> None:
    failures = tmp_path / "steady_failures.csv"
    failures.write_text(
        "Method,Name,Error,Occurrences\n"
        "POST,/recommend [home],HTTP 503: unavailable,3\n"
        "POST,/events [view],HTTP 429: too many,5\n"
        "POST,/similar,HTTP 500: boom,1\n"
    )
    assert server_errors(failures) == 4
    assert server_errors(tmp_path / "absent.csv") == 0


@pytest.mark.slow
@pytest.mark.integration
def test_a_short_soak_starts_a_pinned_server_watches_it_and_passes(
    workspace: Workspace, tmp_path: Path
) -> None:
    out = tmp_path / "soak"
    env = {
        **os.environ,
        **workspace.env,
        "SEGREC_REPORTS_DIR": str(tmp_path / "reports"),
        # Correctness, not speed, on a shared CI box: the latency budgets are the steady
        # profile's business (make soak), the watcher's are checked here.
        "SEGREC_LOADTEST_P95_MS": "5000",
        "SEGREC_LOADTEST_P99_MS": "8000",
    }
    command = [sys.executable, "-m", "loadtests.soak", "--duration", "16", "--rps", "10"]
    done = subprocess.run(
        [*command, "--out", str(out)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    if len(os.sched_getaffinity(0)) >= 2:
        assert "pinning: server (bentoml serve and its worker) on core" in output
    result = json.loads((out / "soak.json").read_text())
    assert result["broken"] == [] and result["server_errors"] == 0
    assert result["readyz_probes"] >= 12 and result["readyz_failures"] == 0
    (worker,) = result["workers"].values()
    assert worker["rss_mb_end"] > 50 and worker["fds_end"] > 0
    summary = json.loads((out / "steady.json").read_text())
    assert summary["requests"] > 100 and summary["failures"] == 0
