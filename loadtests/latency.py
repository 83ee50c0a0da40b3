"""Latency of ``POST /recommend``: BentoML against the same scoring behind bare Starlette.

``python -m loadtests.latency`` (``--help`` for the knobs):

1. **In process** (a subprocess pinned to the servers' core, before any server starts):
   ``engine.recommend`` alone, end to end, and the same request replayed stage by stage
   from outside the engine -- the online read (Feast's calls, segrec's decoding and ttl
   checks, the hop to the read-budget pool), the customer's state, the experiment
   assignment, the tactics rules, each model's scoring, the blend, the filters, the
   ranking -- then again with the engine prototypes of :mod:`loadtests.bare_app`
   (``inline_read``, ``switch_1ms``), with garbage-collector pauses counted. The replay
   must answer exactly what ``engine.recommend`` does (items, tactics, experiment arm,
   fallback); if it does not for any request the bench says so in red and exits with
   status 3 (``REPLAY_MISMATCH_EXIT``), after writing its report.
2. **Servers**: every ``--servers`` entry started as a subprocess (BentoML with one worker,
   the bare app under uvicorn with one worker), pinned to core 0, awaited on ``/readyz``,
   stopped with SIGTERM to its process group at the end, even on error.
3. **Open loop** (the client pinned to core 1): requests at a fixed arrival rate (50 and
   200 per second by default) for ``--duration`` seconds, latency counted from each
   request's *scheduled* start so queueing is included; keep-alive connections; customer
   ids drawn Zipf-like from the real id set plus ~5% unknown ids; servers alternate within
   a step and every configuration repeats ``--repeats`` times, and the report gives medians.
4. **Max throughput**: a closed loop of ``--concurrency`` clients for
   ``--throughput-seconds`` per server and repeat.

Writes ``<reports>/bench/serving_latency.{json,png}`` and prints the tables. A benchmark,
never part of ``make test``; on a shared machine compare ratios within one run.

Server specs are a kind plus knobs joined by ``+``: ``bentoml``, ``bare``,
``bentoml+nolog+notrace+threads2``, ``bare+inline_read``. BentoML knobs are
written to a ``BENTOML_CONFIG`` file (``nolog``: access log off, ``nometrics``: Prometheus
metrics off, ``notrace``: the read endpoints excluded from OpenTelemetry, ``threadsN``: N
threads for the sync API). The prototypes of :mod:`loadtests.bare_app` apply without
editing the service or engine: ``inline_read`` and ``switch_1ms``, to either kind.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.bare_app import ENGINE_PATCHES, KNOWN_PATCHES, PATCHES_ENV, SERVICE_PATCHES
from segrec.service_process import free_port, pin_to_core, running_service

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RATES = (50, 200)
DURATION_SECONDS = 20.0
REPEATS = 3
THROUGHPUT_SECONDS = 15.0
CONCURRENCY = 16
UNKNOWN_SHARE = 0.05  # requests for customers the store does not know
ZIPF_EXPONENT = 1.1  # a few customers are much busier than the rest, as on a storefront
SERVER_CORE, CLIENT_CORE = 0, 1
READY_TIMEOUT_SECONDS = 180.0
REQUEST_TIMEOUT_SECONDS = 30.0
MAX_CONNECTIONS = 256  # open loop: a slow server needs more connections, not fewer requests
PAUSE_SECONDS = 1.0  # between steps, so one step's tail does not land in the next
WARMUP_SECONDS = 3.0
INPROCESS_REQUESTS = 600
GOAL_P99_MS = 15.0  # at 200 requests per second
GOAL_THROUGHPUT_RATIO = 1.5  # bare throughput / BentoML throughput at most this
PERCENTILES = (50, 90, 99)
BENTOML_KNOBS = ("nolog", "nometrics", "notrace", "threadsN")
TRACE_EXCLUDED = "/recommend,/similar,/segment"
SERVICE_NAME = "Segrec"
FEAST_READ_DIRECT = "read: online store query (all views)"
REPLAY_MISMATCH_EXIT = 3  # the bench's exit status when the replay differs from the engine

Send = Callable[[bytes], Awaitable[tuple[int, bytes]]]
DEGRADED_MARK = b"store_unavailable"  # the fallback of a read past its time budget


# ---- statistics ---------------------------------------------------------------------------
def percentiles(samples_ms: Sequence[float], qs: Sequence[int] = PERCENTILES) -> dict[str, float]:
    """``p<q>_ms`` for each q (linear interpolation between order statistics, numpy's
    default), plus mean and max; NaN for no samples."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if not len(values):
        return {
            **{f"p{q}_ms": float("nan") for q in qs},
            "mean_ms": float("nan"),
            "max_ms": float("nan"),
        }
    found = np.percentile(values, qs)
    return {
        **{f"p{q}_ms": float(v) for q, v in zip(qs, found, strict=True)},
        "mean_ms": float(values.mean()),
        "max_ms": float(values.max()),
    }


@dataclass
class StepResult:
    """What one load step saw: per-request latencies (seconds, successful requests only),
    failures by reason, answers degraded to a fallback, how late the client sent, and how
    long the step took."""

    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    degraded: int = 0  # 200s that fell back because the feature read ran out of time

    def record(self, latency: float, status: int | str, body: bytes = b"") -> None:
        if status == 200:
            self.latencies.append(latency)
            self.degraded += DEGRADED_MARK in body
        else:
            self.failures[str(status)] += 1


def summarise(result: StepResult) -> dict[str, Any]:
    """Percentiles in ms, counts and achieved rate of one step."""
    ok = len(result.latencies)
    failed = sum(result.failures.values())
    lag = percentiles([x * 1000 for x in result.lags], (99,))["p99_ms"] if result.lags else 0.0
    return {
        "requests": ok + failed,
        "ok": ok,
        "failed": failed,
        "failures": dict(result.failures),
        "degraded": result.degraded,
        **{k: round(v, 3) for k, v in percentiles([x * 1000 for x in result.latencies]).items()},
        "achieved_rps": round(ok / result.elapsed, 1) if result.elapsed > 0 else 0.0,
        "client_lag_p99_ms": round(lag, 3),
    }


def median_of(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Median over runs of each key (NaN-free runs only), with min and max beside it."""
    answer: dict[str, Any] = {"runs": len(runs)}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None and r[key] == r[key]]
        if values:
            answer[key] = round(statistics.median(values), 3)
            answer[f"{key}_range"] = [round(min(values), 3), round(max(values), 3)]
    return answer


# ---- workload -----------------------------------------------------------------------------
@dataclass
class IdSampler:
    """Customer ids with Zipf-like popularity over a shuffled id list, plus unknown ids."""

    ids: Sequence[str]
    unknown_share: float = UNKNOWN_SHARE
    exponent: float = ZIPF_EXPONENT
    seed: int = 0

    def __post_init__(self) -> None:
        if not len(self.ids):
            raise ValueError("no customer ids to draw from")
        order = np.random.default_rng(self.seed).permutation(len(self.ids))
        self._ranked = [self.ids[i] for i in order]  # who is busiest is arbitrary
        weights = 1.0 / np.arange(1, len(self.ids) + 1) ** self.exponent
        self._p = weights / weights.sum()

    def draw(self, n: int, rng: np.random.Generator) -> list[str]:
        picks = rng.choice(len(self._ranked), size=n, p=self._p)
        unknown = rng.random(n) < self.unknown_share
        return [
            f"c_unknown{rng.integers(1 << 40):010x}" if u else self._ranked[i]
            for i, u in zip(picks, unknown, strict=True)
        ]

    def bodies(self, n: int, rng: np.random.Generator, k: int = 10) -> list[bytes]:
        """Encoded ``/recommend`` bodies (encoded up front: the client's CPU stays idle)."""
        return [json.dumps({"customer_id": c, "k": k}).encode() for c in self.draw(n, rng)]


def customer_ids(features_dir: Path) -> list[str]:
    """The real id set: every customer with a segment (``customer_segments.parquet``)."""
    import pyarrow.parquet as pq

    table = pq.read_table(features_dir / "customer_segments.parquet", columns=["customer_id"])
    return list(dict.fromkeys(table.column("customer_id").to_pylist()))


# ---- load generation ----------------------------------------------------------------------
async def open_loop(send: Send, bodies: Sequence[bytes], rate: float) -> StepResult:
    """Send ``bodies`` at ``rate`` per second whatever the answers do (open loop).

    Request i is due at ``start + i / rate``; its latency counts from then, so a server
    that falls behind shows its queue instead of slowing the client down (no coordinated
    omission). ``lags`` is how late the client actually sent: it must stay small.
    """
    loop = asyncio.get_running_loop()
    result = StepResult()
    start = loop.time() + 0.01

    async def one(body: bytes, due: float) -> None:
        result.lags.append(loop.time() - due)
        status: int | str
        answer = b""
        try:
            status, answer = await send(body)
        except Exception as error:  # any failure is a failed request, counted by kind
            status = type(error).__name__
        result.record(loop.time() - due, status, answer)

    tasks = []
    for i, body in enumerate(bodies):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body, due)))
    await asyncio.gather(*tasks)
    result.elapsed = max(loop.time() - start, len(bodies) / rate)
    return result


async def closed_loop(
    send: Send, bodies: Sequence[bytes], concurrency: int, duration: float
) -> StepResult:
    """``concurrency`` clients, each sending its next request as soon as the last is
    answered, for ``duration`` seconds: the server's maximum throughput."""
    loop = asyncio.get_running_loop()
    result = StepResult()
    start = loop.time()
    deadline = start + duration
    counter = iter(range(1 << 62))

    async def client() -> None:
        while loop.time() < deadline:
            body = bodies[next(counter) % len(bodies)]
            sent = loop.time()
            status: int | str
            answer = b""
            try:
                status, answer = await send(body)
            except Exception as error:
                status = type(error).__name__
            result.record(loop.time() - sent, status, answer)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.elapsed = loop.time() - start
    return result


def aiohttp_sender(session: Any, url: str) -> Send:
    """POST a pre-encoded JSON body to ``url`` over ``session``'s keep-alive pool."""
    headers = {"Content-Type": "application/json"}

    async def send(body: bytes) -> tuple[int, bytes]:
        async with session.post(url, data=body, headers=headers) as response:
            return int(response.status), await response.read()

    return send


def client_session(limit: int = MAX_CONNECTIONS) -> Any:
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, keepalive_timeout=120),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
    )


# ---- servers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerSpec:
    """A server to start: ``kind`` (bentoml or bare) plus knobs, e.g. ``bentoml+nolog``."""

    label: str
    kind: str
    bentoml_config: dict[str, Any] = field(default_factory=dict)
    patches: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> ServerSpec:
        kind, *knobs = spec.strip().split("+")
        if kind not in ("bentoml", "bare"):
            raise ValueError(f"server {spec!r}: kind must be bentoml or bare")
        config: dict[str, Any] = {}
        patches: list[str] = []
        for knob in knobs:
            if knob in ENGINE_PATCHES or (kind == "bentoml" and knob in SERVICE_PATCHES):
                patches.append(knob)
                continue
            if kind != "bentoml":
                raise ValueError(f"server {spec!r}: {knob!r} is a BentoML knob")
            if knob == "nolog":
                config.setdefault("logging", {})["access"] = {"enabled": False}
            elif knob == "nometrics":
                config["metrics"] = {"enabled": False}
            elif knob == "notrace":
                # Spans are never exported (no exporter, sample rate 0) yet still built
                # per request by the OpenTelemetry middleware, unless the URL is excluded.
                config["tracing"] = {"excluded_urls": TRACE_EXCLUDED}
            elif knob.startswith("threads") and knob[7:].isdigit():
                config["threads"] = int(knob[7:])
            else:
                known = ", ".join((*BENTOML_KNOBS, *KNOWN_PATCHES))
                raise ValueError(f"server {spec!r}: unknown knob {knob!r} (known: {known})")
        return cls(spec.strip(), kind, config, tuple(patches))

    def command(self, port: int) -> list[str]:
        python = sys.executable
        if self.kind == "bare":
            return [python, "-m", "loadtests.bare_app", "--host", "127.0.0.1", "--port", str(port)]
        # The patched module re-exports the real service built through the patched engine.
        target = "loadtests.bare_app:Segrec" if self.patches else "serving.service:Segrec"
        bentoml = str(Path(python).parent / "bentoml")
        return [bentoml, "serve", target, "--host", "127.0.0.1", "--port", str(port)]

    def environment(self, config_dir: Path) -> dict[str, str]:
        env = {PATCHES_ENV: ",".join(self.patches)}
        if self.kind == "bentoml":
            path = config_dir / f"bentoml-{abs(hash(self.label))}.yaml"
            # No "version" key: BentoML first reads the file as a v1 config at import (which
            # rejects version 2), then again as v2 for the service. JSON is YAML.
            body = {"services": {SERVICE_NAME: self.bentoml_config}}
            path.write_text(json.dumps(body))
            env["BENTOML_CONFIG"] = str(path)
            env["BENTOML_DO_NOT_TRACK"] = "true"
        return env


def affinity_of_tree(pid: int) -> dict[int, list[int]]:
    """CPU affinity of a process and all its descendants (what pinning really did)."""
    import psutil

    root = psutil.Process(pid)
    answer = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            answer[process.pid] = sorted(process.cpu_affinity() or [])
        except psutil.Error:
            continue
    return answer


# ---- in-process breakdown ---------------------------------------------------------------
class _Timers:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, seconds: float) -> None:
        self.samples[stage].append(seconds)

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - started)

        return timed


class _GcWatch:
    """Pauses of the garbage collector, by generation, while installed."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = defaultdict(list)
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    @contextmanager
    def watching(self) -> Iterator[_GcWatch]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)

    def summary(self, requests: int) -> dict[str, Any]:
        return {
            f"gen{g}": {
                "collections": len(p),
                "per_1000_requests": round(1000 * len(p) / max(requests, 1), 1),
                "mean_ms": round(1000 * float(np.mean(p)), 3),
                "max_ms": round(1000 * max(p), 3),
            }
            for g, p in sorted(self.pauses.items())
        }


def _time_recommend(engine: Any, ids: Sequence[str]) -> dict[str, Any]:
    watch = _GcWatch()
    samples = []
    with watch.watching():
        for customer_id in ids:
            started = time.perf_counter()
            engine.recommend(customer_id, 10)
            samples.append(time.perf_counter() - started)
    stats = {k: round(v, 3) for k, v in percentiles([s * 1000 for s in samples]).items()}
    return {**stats, "gc": watch.summary(len(ids))}


def _answer_key(answer: Any) -> tuple[Any, ...]:
    """What a replayed answer must share with ``engine.recommend``'s: the items in order,
    the tactics that fired (and their outputs) and the experiment arm. Not the scores:
    they decay with the clock, which moves on between the replay and the check."""
    experiment = None if answer.experiment is None else answer.experiment.as_json()
    tactics = json.dumps(answer.tactics.as_json(), sort_keys=True)
    return (
        tuple(item["product_id"] for item in answer.items),
        tactics,
        json.dumps(experiment, sort_keys=True),
        answer.fallback,
    )


def replay_breakdown(engine: Any, ids: Sequence[str]) -> dict[str, Any]:
    """Replays ``recommend_many`` for one request at a time, stage by stage, with timers
    around the engine's parts from outside (the engine is not edited), and checks the
    replay answers exactly what ``engine.recommend`` does (``replay_mismatches`` must be
    0, else the stages are not what the engine runs and the breakdown is wrong).

    Stages in the engine's order: the online read, the customer's state, the experiment
    assignment, the tactics rules (facts, then rules), each model's scoring, the blend
    (with the model an experiment arm or a rule chose), the re-ranker (when the bundle
    has one), the ranking with its filters and
    the tactics' boosts and filters, the JSON body."""
    import serving.engine as engine_module
    from segrec.blend import blend, normalise
    from serving.engine import RecommendRequest

    timers = _Timers()
    source = engine.features
    budgeted = hasattr(source, "reader")  # the service's BudgetedFeatureSource
    reader = source.reader if budgeted else source

    class Timed:
        """Stands in for the reader's store or provider: its read calls timed, the rest
        passed through (the reader may ask it for ``config`` and more)."""

        def __init__(self, real: Any) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def online_read(self, **kwargs: Any) -> Any:
            return timers.wrap(FEAST_READ_DIRECT, self.real.online_read)(**kwargs)

    class TimedRules:  # the business filters inside _rank
        def __init__(self, rules: Any) -> None:
            self.allowed = timers.wrap("filter: allowed (stock, bought)", rules.allowed)
            self.diversify = timers.wrap("filter: diversify", rules.diversify)

    timed_reader = copy.copy(reader)
    timed_reader._provider = Timed(reader._provider)  # the provider's online_read, per view
    for fast_path in ("_sqlite", "_redis"):  # the reader's one-query paths, when in use
        rows = getattr(reader, fast_path, None)
        if rows is not None:
            timed_rows = copy.copy(rows)
            timed_rows.read = timers.wrap(FEAST_READ_DIRECT, rows.read)
            setattr(timed_reader, fast_path, timed_rows)
    timed_reader.read_many = timers.wrap("read: reader", timed_reader.read_many)
    read_now = getattr(timed_reader, "read_many_now", None)  # over the timed rows
    if read_now is not None:
        # The budget's inline path (a local SQLite store read on the request's thread):
        # counted as the reader's work when it answered, else the pooled read follows.
        def timed_read_now(entity_ids: Sequence[str]) -> Any:
            started = time.perf_counter()
            vectors = read_now(entity_ids)
            if vectors is not None:
                timers.add("read: reader", time.perf_counter() - started)
            return vectors

        timed_reader.read_many_now = timed_read_now
    timed_source = timed_reader
    if budgeted:
        # The same pool and budget around the timed reader (swapped in, restored below:
        # BudgetedFeatureSource's __getattr__ makes copy.copy recurse).
        source.reader, timed_source = timed_reader, source
    original_score, original_rules = engine_module.score_candidates, engine.rules

    def score(kind: str, arrays: Any, state: Any) -> Any:
        return timers.wrap(f"score: {kind}", original_score)(kind, arrays, state)

    engine_module.score_candidates = score  # type: ignore[assignment]
    engine.rules = TimedRules(original_rules)
    replayed: list[tuple[Any, ...]] = []
    timeouts_before = getattr(source, "timeouts", 0)
    try:
        for customer_id in ids:
            request = RecommendRequest(customer_id, 10)
            started = time.perf_counter()
            vector = timed_source.read_many([customer_id])[0]
            read = time.perf_counter()
            moment = engine.clock()
            now = moment.timestamp()
            customer = engine._customer(vector, now)
            state = time.perf_counter()
            personalisation = engine.personalisation  # one version per request, as the engine
            assignment = (
                personalisation.assign(customer_id, request.placement, customer.segment, moment)
                if customer.personal
                else None
            )
            assigned = time.perf_counter()
            facts = engine._facts(request, customer, now)
            applied = personalisation.tactics.evaluate(
                facts,
                personal=customer.personal,
                rule_set=assignment.rule_set if assignment is not None else None,
            )
            tactics = time.perf_counter()
            scores = engine._scores(customer)[None]
            scored = time.perf_counter()
            model = engine_module._model_choice(assignment, applied)
            normalised = normalise(scores)
            totals, parts = blend(normalised, engine._weights(customer, model)[None])
            blended = time.perf_counter()
            lifts = engine._rerank_lifts(
                [customer], [engine.blend_answers(customer, model)], normalised, totals, now
            )
            reranked = time.perf_counter()
            answer = engine._rank(
                request,
                customer,
                totals[0],
                parts[0],
                applied,
                assignment,
                None if lifts is None else lifts[0],
            )
            ranked = time.perf_counter()
            json.dumps(answer.as_json(customer_id))
            done = time.perf_counter()
            timers.add("read: total", read - started)
            timers.add("customer state (fallback, history, segment)", state - read)
            timers.add("experiment assignment", assigned - state)
            timers.add("tactics (facts, rules)", tactics - assigned)
            timers.add("score: total", scored - tactics)
            timers.add("blend (normalise, weights)", blended - scored)
            timers.add("re-rank (trees over the blend's top candidates)", reranked - blended)
            timers.add("rank: total (filters, tactics, sort, item dicts)", ranked - reranked)
            timers.add("json encode", done - ranked)
            timers.add("total", done - started)
            replayed.append(_answer_key(answer))
    finally:
        engine_module.score_candidates = original_score
        engine.rules = original_rules
        if budgeted:
            source.reader = reader
    # Checked after the timers are gone, so the check's own reads are not counted.
    mismatched = [
        c
        for c, key in zip(ids, replayed, strict=True)
        if key != _answer_key(engine.recommend(c, 10))
    ]
    tactic_requests = sum(bool(json.loads(key[1])["rules"]) for key in replayed)
    samples = timers.samples
    # Derived stages from sums, not per-request differences: a read past the budget
    # finishes in the background, so its timings may land beside another request's.
    feast = sum(samples.get(FEAST_READ_DIRECT, []))
    derived = {
        "read: segrec decoding, ttl checks and defaults": sum(samples.get("read: reader", []))
        - feast
    }
    if budgeted:
        derived["read: time budget (inline check, or the hop to its pool and back)"] = sum(
            samples["read: total"]
        ) - sum(samples["read: reader"])
    samples.pop("read: reader", None)
    requests = len(ids)
    total = sum(samples["total"])
    # Per request: a model kind or filter may run several times in one request (three
    # popularity models), so sums per request, not means per call, add up to the total.
    stages = {
        stage: {
            "ms_per_request": round(1000 * seconds / requests, 3),
            "calls_per_request": round(calls / requests, 2),
            "share_of_total": round(seconds / total, 3),
        }
        for stage, seconds, calls in sorted(
            [(k, sum(v), len(v)) for k, v in samples.items()]
            + [(k, v, requests) for k, v in derived.items()]
        )
    }
    timeouts = getattr(source, "timeouts", 0) - timeouts_before
    return {
        "stages": stages,
        "replay_mismatches": len(mismatched),
        "mismatched_customers": list(dict.fromkeys(mismatched))[:20],
        "requests_with_tactics": tactic_requests,
        "read_budget_timeouts": timeouts,
    }


def replay_failure(inprocess: dict[str, Any] | None) -> str | None:
    """The loud message when the stage-by-stage replay differed from the engine (its
    stage figures then describe some other code path), else None."""
    found = inprocess or {}
    breakdown = found.get("breakdown", {})
    count = breakdown.get("replay_mismatches", 0)
    if not count:
        return None
    return (
        f"REPLAY MISMATCH: the stage-by-stage replay answered differently from "
        f"engine.recommend for {count} of {found.get('requests', '?')} requests "
        f"(e.g. {', '.join(breakdown.get('mismatched_customers', [])[:3])}): the replay "
        "no longer runs what the engine runs, so the stage breakdown is wrong. Update "
        "loadtests/latency.py:replay_breakdown to follow RecommendationEngine.recommend_many."
    )


def measure_inprocess(requests: int, seed: int, patches: Sequence[str] = ENGINE_PATCHES) -> dict:
    """``engine.recommend`` without HTTP: end to end, by stage, and with each prototype."""
    from loadtests.bare_app import apply_patches, build_service_engine
    from segrec.settings import Settings

    settings = Settings()
    started = time.perf_counter()
    engine = build_service_engine()
    load_seconds = time.perf_counter() - started
    sampler = IdSampler(customer_ids(settings.features_dir), seed=seed)
    ids = sampler.draw(requests, np.random.default_rng(seed))
    for customer_id in ids[:50]:  # warm caches (registry, first-touch of arrays)
        engine.recommend(customer_id, 10)
    answer: dict[str, Any] = {
        "requests": requests,
        "engine_load_seconds": round(load_seconds, 1),
        "gc_tracked_objects_after_load": len(gc.get_objects()),
        "breakdown": replay_breakdown(engine, ids),
        "variants": {"baseline": _time_recommend(engine, ids)},
    }
    applied: list[str] = []
    # gc_freeze last: it cannot be undone in this process.
    for patch in sorted(patches, key=lambda p: (p == "gc_freeze", p)):
        applied.append(patch)
        apply_patches(engine, [patch])
        for customer_id in ids[:50]:
            engine.recommend(customer_id, 10)
        answer["variants"]["+".join(applied)] = _time_recommend(engine, ids)
    return answer


def run_inprocess_subprocess(
    requests: int, seed: int, patches: Sequence[str], core: int | None, out_dir: Path
) -> dict:
    """:func:`measure_inprocess` in a fresh interpreter (pinned to the servers' core), so
    the load client never carries the engine's imports and heap."""
    out = out_dir / "inprocess.json"
    command = [
        sys.executable,
        "-m",
        "loadtests.latency",
        "inprocess",
        "--requests",
        str(requests),
        "--seed",
        str(seed),
        "--patches",
        ",".join(patches),
        "--out",
        str(out),
    ]
    out.unlink(missing_ok=True)
    with (out_dir / "inprocess.log").open("wb") as log:
        done = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin_to_core(core),
        )
    # A replay mismatch still writes its figures (and exits REPLAY_MISMATCH_EXIT): the
    # caller reports it; anything else is a crash.
    if done.returncode not in (0, REPLAY_MISMATCH_EXIT) or not out.exists():
        raise subprocess.CalledProcessError(done.returncode, command)
    return dict(json.loads(out.read_text()))


# ---- the HTTP run -------------------------------------------------------------------------
@dataclass
class RunConfig:
    rates: tuple[float, ...] = RATES
    duration: float = DURATION_SECONDS
    repeats: int = REPEATS
    throughput_seconds: float = THROUGHPUT_SECONDS
    concurrency: int = CONCURRENCY
    seed: int = 0


async def run_http(
    urls: dict[str, str],
    sampler: IdSampler,
    config: RunConfig,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Every (repeat, rate, server) open-loop step and every (repeat, server) throughput
    step; servers alternate order between repeats so drift on the machine hits both."""
    steps: list[dict[str, Any]] = []
    sessions = {label: client_session() for label in urls}
    senders = {
        label: aiohttp_sender(sessions[label], f"{url}/recommend") for label, url in urls.items()
    }
    try:
        warm = sampler.bodies(500, np.random.default_rng(config.seed + 999))
        for send in senders.values():
            await closed_loop(send, warm, 4, WARMUP_SECONDS)
        for repeat in range(config.repeats):
            order = list(urls) if repeat % 2 == 0 else list(reversed(urls))
            for rate in config.rates:
                # The same request sequence for every server within a repeat and rate.
                rng = np.random.default_rng([config.seed, repeat, int(rate)])
                bodies = sampler.bodies(int(rate * config.duration), rng)
                for label in order:
                    result = await open_loop(senders[label], bodies, rate)
                    summary = summarise(result)
                    steps.append(
                        {"server": label, "mode": "open", "rate": rate, "repeat": repeat, **summary}
                    )
                    progress(
                        f"repeat {repeat + 1}/{config.repeats} {label:>28} {rate:>5g}/s: "
                        f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
                        f"{summary['failed']} failed"
                    )
                    await asyncio.sleep(PAUSE_SECONDS)
            bodies = sampler.bodies(5000, np.random.default_rng([config.seed, repeat, 0]))
            for label in order:
                result = await closed_loop(
                    senders[label], bodies, config.concurrency, config.throughput_seconds
                )
                summary = summarise(result)
                steps.append(
                    {
                        "server": label,
                        "mode": "closed",
                        "concurrency": config.concurrency,
                        "repeat": repeat,
                        **summary,
                    }
                )
                progress(
                    f"repeat {repeat + 1}/{config.repeats} {label:>28} max: "
                    f"{summary['achieved_rps']:.0f} req/s at concurrency {config.concurrency}, "
                    f"p99 {summary['p99_ms']:.1f} ms"
                )
                await asyncio.sleep(PAUSE_SECONDS)
    finally:
        for session in sessions.values():
            await session.close()
    return steps


def summarise_steps(
    steps: Sequence[dict[str, Any]], specs: Sequence[ServerSpec], rates: Sequence[float]
) -> dict[str, Any]:
    """Medians over repeats per server and rate, throughput per server, and each server's
    ratios to the first bare server (the reference)."""
    keys = ["p50_ms", "p90_ms", "p99_ms", "mean_ms", "achieved_rps", "failed", "degraded"]
    latency = {
        spec.label: {
            f"{rate:g}": median_of(
                [s for s in steps if s["server"] == spec.label and s.get("rate") == rate], keys
            )
            for rate in rates
        }
        for spec in specs
    }
    throughput = {
        spec.label: median_of(
            [s for s in steps if s["server"] == spec.label and s["mode"] == "closed"],
            ["achieved_rps", "p50_ms", "p99_ms", "failed", "degraded"],
        )
        for spec in specs
    }
    reference = next((s.label for s in specs if s.kind == "bare"), None)
    ratios: dict[str, Any] = {}
    if reference is not None:
        for spec in specs:
            if spec.label == reference:
                continue
            entry: dict[str, Any] = {"reference": reference}
            ref_rps = throughput[reference].get("achieved_rps")
            rps = throughput[spec.label].get("achieved_rps")
            if ref_rps and rps:
                entry["throughput_ratio_bare_over_this"] = round(ref_rps / rps, 3)
            # Ratios within each repeat, then the median: robust to the machine's drift.
            for rate in rates:
                per_repeat = [
                    a["p99_ms"] / b["p99_ms"]
                    for a in steps
                    for b in steps
                    if a["server"] == spec.label
                    and b["server"] == reference
                    and a.get("rate") == rate == b.get("rate")
                    and a["repeat"] == b["repeat"]
                    and b["p99_ms"] > 0
                ]
                if per_repeat:
                    entry[f"p99_ratio_this_over_bare_at_{rate:g}"] = round(
                        statistics.median(per_repeat), 3
                    )
            ratios[spec.label] = entry
    goals: dict[str, dict[str, bool]] = {spec.label: {} for spec in specs}
    top = f"{max(rates):g}" if rates else None
    for spec in specs:
        if top is not None:
            p99 = latency[spec.label].get(top, {}).get("p99_ms")
            goal = f"p99_under_{GOAL_P99_MS:g}ms_at_{top}"
            goals[spec.label][goal] = p99 is not None and p99 < GOAL_P99_MS
        ratio = ratios.get(spec.label, {}).get("throughput_ratio_bare_over_this")
        if ratio is not None:
            goals[spec.label][f"throughput_within_{GOAL_THROUGHPUT_RATIO:g}x_of_bare"] = (
                ratio <= GOAL_THROUGHPUT_RATIO
            )
    return {"latency": latency, "throughput": throughput, "ratios": ratios, "goals": goals}


# ---- the report ---------------------------------------------------------------------------
def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``serving_latency.json`` and ``serving_latency.png`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "serving_latency.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    png_path = out_dir / "serving_latency.png"
    plot(report, png_path)
    return json_path, png_path


def plot(report: dict[str, Any], path: Path) -> None:
    """p50/p90/p99 per server at each rate (bars at the median, whiskers over repeats) and
    max throughput per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    servers = list(summary["latency"])
    rates = list(next(iter(summary["latency"].values()), {}))
    fig, axes = plt.subplots(1, len(rates) + 1, figsize=(4.5 * (len(rates) + 1), 4.2))
    axes = np.atleast_1d(axes)
    width = 0.8 / max(len(servers), 1)
    for ax, rate in zip(axes, rates, strict=False):
        for n, server in enumerate(servers):
            stats = summary["latency"][server][rate]
            xs = np.arange(len(PERCENTILES)) + n * width
            heights = [stats.get(f"p{q}_ms", np.nan) for q in PERCENTILES]
            ranges = [stats.get(f"p{q}_ms_range", [np.nan, np.nan]) for q in PERCENTILES]
            errors = np.array(
                [
                    [h - r[0] for h, r in zip(heights, ranges, strict=True)],
                    [r[1] - h for h, r in zip(heights, ranges, strict=True)],
                ]
            )
            ax.bar(xs, heights, width, yerr=np.clip(errors, 0, None), capsize=3, label=server)
        ax.axhline(GOAL_P99_MS, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(np.arange(len(PERCENTILES)) + width * (len(servers) - 1) / 2)
        ax.set_xticklabels([f"p{q}" for q in PERCENTILES])
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(f"open loop at {rate} req/s")
    ax = axes[-1]
    rps = [summary["throughput"][s].get("achieved_rps", 0) for s in servers]
    ax.bar(range(len(servers)), rps, color=[f"C{n}" for n in range(len(servers))])
    ax.set_xticks(range(len(servers)))
    ax.set_xticklabels([str(n + 1) for n in range(len(servers))])  # keys in the legend
    ax.set_xlabel("server")
    ax.set_ylabel("requests per second")
    ax.set_title("max throughput (closed loop)")
    # One legend under the panels: server labels are long and would cover the bars.
    handles = [plt.Rectangle((0, 0), 1, 1, color=f"C{n}") for n in range(len(servers))]
    fig.legend(
        handles,
        [f"{n + 1}: {s}" for n, s in enumerate(servers)],
        loc="lower center",
        ncol=min(len(servers), 3),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle("POST /recommend, one worker, server on one core (medians over repeats)")
    rows = (len(servers) + 2) // 3
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))  # server labels are long
    summary = report["summary"]
    table = Table(title="POST /recommend latency (median of repeats; min-max)")
    for column in ("server", "rate", "p50 ms", "p99 ms", "achieved/s", "failed", "degraded"):
        table.add_column(column, justify="right" if column != "server" else "left")
    for server, by_rate in summary["latency"].items():
        for rate, stats in by_rate.items():
            low, high = stats.get("p99_ms_range", [float("nan")] * 2)
            table.add_row(
                server,
                f"{rate}/s",
                f"{stats.get('p50_ms', float('nan')):.2f}",
                f"{stats.get('p99_ms', float('nan')):.1f} ({low:.1f}-{high:.1f})",
                f"{stats.get('achieved_rps', 0):.0f}",
                f"{stats.get('failed', 0):g}",
                f"{stats.get('degraded', 0):g}",
            )
    console.print(table)
    table = Table(title="max throughput (closed loop) and ratios to the bare server")
    for column in ("server", "req/s", "p99 ms", "bare/this req/s", "p99 this/bare by rate"):
        table.add_column(column)
    for server, stats in summary["throughput"].items():
        ratio = summary["ratios"].get(server, {})
        by_rate = ", ".join(
            f"{k.rsplit('_', 1)[-1]}/s: {v}" for k, v in ratio.items() if k.startswith("p99_ratio")
        )
        table.add_row(
            server,
            f"{stats.get('achieved_rps', 0):.0f}",
            f"{stats.get('p99_ms', float('nan')):.1f}",
            str(ratio.get("throughput_ratio_bare_over_this", "-")),
            by_rate or "-",
        )
    console.print(table)
    inprocess = report.get("inprocess")
    failure = replay_failure(inprocess)
    if failure:
        console.print(f"[bold white on red]{failure}")
    if inprocess:
        table = Table(title="engine.recommend in process (ms per request)")
        for column in ("stage", "ms per request", "calls", "share"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for stage, stats in inprocess["breakdown"]["stages"].items():
            table.add_row(
                stage,
                f"{stats['ms_per_request']:.3f}",
                f"{stats['calls_per_request']:g}",
                f"{stats['share_of_total']:.0%}",
            )
        console.print(table)
        table = Table(title="engine.recommend end to end, with the prototyped fixes")
        for column in ("variant", "p50 ms", "p99 ms", "mean ms", "gen2 collections / 1000 req"):
            table.add_column(column)
        for variant, stats in inprocess["variants"].items():
            gen2 = stats["gc"].get("gen2", {}).get("per_1000_requests", 0)
            table.add_row(
                variant,
                f"{stats['p50_ms']:.2f}",
                f"{stats['p99_ms']:.2f}",
                f"{stats['mean_ms']:.2f}",
                f"{gen2}",
            )
        console.print(table)
    console.print(report["machine"]["pinning"])


def code_state() -> dict[str, Any]:
    """The commit measured and the serving files changed since (a tree in flux)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "serving", "segrec", "feature_repo")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted": changed.splitlines()}


def machine_info(server_core: int | None, client_core: int | None) -> dict[str, Any]:
    cpus = os.cpu_count() or 1
    if server_core is None:
        pinning = f"not pinned ({cpus} cores): server and client share the cores"
    else:
        pinning = f"servers pinned to core {server_core}, load client to core {client_core}"
    return {
        "cpus": cpus,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "pinning": pinning,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from segrec.settings import Settings

    settings = Settings()
    # The data's own BentoML model store, for every server and the in-process run.
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_store.resolve()))
    specs = [ServerSpec.parse(s) for s in args.servers.split(",")]
    if len({s.label for s in specs}) != len(specs):
        raise ValueError("server specs must be distinct")
    pin = (os.cpu_count() or 1) >= 2 and not args.no_pin
    server_core, client_core = (SERVER_CORE, CLIENT_CORE) if pin else (None, None)
    out_dir = settings.reports_dir / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    config = RunConfig(
        rates=tuple(float(r) for r in args.rates.split(",") if r),  # "": throughput only
        duration=args.duration,
        repeats=args.repeats,
        throughput_seconds=args.throughput_seconds,
        concurrency=args.concurrency,
        seed=args.seed,
    )
    report: dict[str, Any] = {
        "machine": machine_info(server_core, client_core),
        "config": {
            **vars(config),
            "unknown_share": UNKNOWN_SHARE,
            "zipf_exponent": ZIPF_EXPONENT,
            "request": {"k": 10, "placement": "home"},
            "data_dir": str(settings.data_dir.resolve()),
            "command": " ".join(sys.argv),
            "code": code_state(),
        },
        "servers": {},
    }
    print(report["machine"]["pinning"])
    if args.inprocess_requests > 0:
        print(f"in process: {args.inprocess_requests} requests on core {server_core} ...")
        report["inprocess"] = run_inprocess_subprocess(
            args.inprocess_requests, args.seed, ENGINE_PATCHES, server_core, out_dir
        )
        failure = replay_failure(report["inprocess"])
        report["inprocess"]["replay_ok"] = failure is None
        if failure:
            # Said now, not only after the HTTP steps; the run still exits non-zero.
            print(failure, file=sys.stderr)
    sampler = IdSampler(customer_ids(settings.features_dir), seed=args.seed)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        urls = {}
        for spec in specs:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = out_dir / f"server-{spec.label.replace('+', '_')}.log"
            print(f"starting {spec.label} on {url} (log {log}) ...")
            process = stack.enter_context(
                running_service(
                    spec.command(port),
                    url,
                    log,
                    spec.environment(Path(tmp)),
                    core=server_core,
                    ready_timeout=READY_TIMEOUT_SECONDS,
                )
            ).process
            urls[spec.label] = url
            report["servers"][spec.label] = {
                "kind": spec.kind,
                "command": " ".join(spec.command(port)),
                "bentoml_config": spec.bentoml_config,
                "patches": list(spec.patches),
                "affinity": affinity_of_tree(process.pid),
            }
        if client_core is not None:
            os.sched_setaffinity(0, {client_core})
        started = time.time()
        steps = asyncio.run(run_http(urls, sampler, config))
        report["http_seconds"] = round(time.time() - started, 1)
    report["steps"] = steps
    report["summary"] = summarise_steps(steps, specs, config.rates)
    json_path, png_path = write_report(report, out_dir)
    print_report(report)
    print(f"-> {json_path}, {png_path}")
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.latency", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command")
    inprocess = commands.add_parser("inprocess", help="only the in-process measurement")
    inprocess.add_argument("--requests", type=int, default=INPROCESS_REQUESTS)
    inprocess.add_argument("--seed", type=int, default=0)
    inprocess.add_argument("--patches", default=",".join(ENGINE_PATCHES))
    inprocess.add_argument("--out", type=Path)
    parser.add_argument("--servers", default="bentoml,bare", help="comma-separated server specs")
    parser.add_argument(
        "--rates",
        default=",".join(str(r) for r in RATES),
        help='open-loop rates per second, comma-separated ("" for max throughput only)',
    )
    parser.add_argument("--duration", type=float, default=DURATION_SECONDS, help="s per step")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--throughput-seconds", type=float, default=THROUGHPUT_SECONDS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument(
        "--inprocess-requests", type=int, default=INPROCESS_REQUESTS, help="0: skip"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    args = parser.parse_args(argv)
    if args.command == "inprocess":
        patches = [p for p in args.patches.split(",") if p]
        answer = measure_inprocess(args.requests, args.seed, patches)
        text = json.dumps(answer, indent=2)
        if args.out:
            args.out.write_text(text + "\n")
        else:
            print(text)
        failure = replay_failure(answer)
    else:
        failure = replay_failure(run(args).get("inprocess"))
    if failure:
        print(failure, file=sys.stderr)
        raise SystemExit(REPLAY_MISMATCH_EXIT)


if __name__ == "__main__":
    main()
