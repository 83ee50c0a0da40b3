"""Storefront traffic against the segrec service, as a gate: Locust exits non-zero when
a budget breaks.

Run through ``python -m loadtests.run`` (``make loadtest``), which starts a server when
none is running, pins server and load generator to different cores and writes the
reports; or directly::

    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:3000 --load-profile smoke

Traffic model (one request per slot of a shared clock when the profile is rate-paced):

* ``Shopper``: a visit by one customer (drawn Zipf-like from the real ids plus a share of
  well-formed unknown ids; a new customer after about ``session_pages`` pages), thinking
  between pages. Pages: the home carousel; a product page (``/similar``, the
  ``placement=product`` carousel and a ``view`` event); adding to the cart (the
  ``add_to_cart`` event and the cart carousel); checking out (a ``purchase`` event per
  item in the cart).
* ``CampaignJob``: one user sending a ``/recommend/batch`` of e-mail carousels every
  ``campaign_interval_s``.

Every answer is checked (status 200, JSON, items present, events accepted) and counted a
failure otherwise. Requests are grouped by page kind with ``name=`` (``/recommend
[product]``...). The profile (``loadtests/profiles.toml``) sets the shape: a fixed number
of users for ``duration_s`` or, for ``step``, a rising rate whose per-step statistics
(exact percentiles, server CPU per request when ``--server-pid`` is given) feed
:mod:`loadtests.capacity`. When Locust quits, the ``quitting`` listener judges the run
against the budgets, prints which budget broke and by how much, sets the exit code and
writes the JSON summary (``--summary-json``).

Rate pacing is per load-generator process: run it as one process (the default).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import random
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment

from loadtests.workload import (
    PROFILES_PATH,
    Breach,
    Budgets,
    IdSet,
    Profile,
    ProfileError,
    StepPlan,
    ZipfSampler,
    check_budgets,
    load_ids,
    load_profile,
    percentile,
)

# Within this share of the set rate, the load generator offered what was asked.
OFFERED_TOLERANCE = 0.95
# A step far past the knee: stop climbing (no new facts, only a longer queue).
STOP_FAILURE_RATIO = 0.05
STOP_ACHIEVED_SHARE = 0.8
HOME_K, PRODUCT_K, CART_K, SIMILAR_K, EMAIL_K = 12, 8, 6, 8, 6


# ---- command line -------------------------------------------------------------------------
@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    group = parser.add_argument_group("segrec load profile")
    # Not --profile: Locust has its own (a label grouping test runs).
    group.add_argument("--load-profile", default="smoke", help="a profile in the profiles file")
    group.add_argument("--profiles-file", default=str(PROFILES_PATH))
    group.add_argument("--ids-file", default="", help="JSON id set written by loadtests.run")
    group.add_argument("--summary-json", default="", help="where to write the JSON summary")
    group.add_argument("--server-pid", type=int, default=0, help="measure this server's CPU")
    group.add_argument("--profile-users", type=int, default=None)
    group.add_argument("--profile-rps", type=float, default=None)
    group.add_argument("--profile-duration", type=float, default=None)
    group.add_argument("--step-seconds", type=float, default=None)
    group.add_argument("--seed", type=int, default=None)
    group.add_argument("--unknown-share", type=float, default=None)
    group.add_argument("--p95-ms", type=float, default=None)
    group.add_argument("--p99-ms", type=float, default=None)
    group.add_argument("--max-failure-ratio", type=float, default=None)


# ---- pacing and measuring -----------------------------------------------------------------
class Pacer:
    """One clock for every user: at ``rate`` per second each request waits for the next
    free slot, so the offered rate is the set one however many users there are (as long
    as enough of them are free). A slot nobody took is not made up later (no bursts)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = 0.0

    def set_rate(self, rate: float | None) -> None:
        self.rate = rate
        self._next = time.monotonic()

    def wait(self) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + 1.0 / self.rate
        if slot > now:
            gevent.sleep(slot - now)


class ServerCpu:
    """CPU seconds (user + system) of a server's whole process tree, from ``/proc`` via
    psutil: BentoML runs its worker as a child of the ``bentoml serve`` process."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.pid = pid
        self.root = psutil.Process(pid)
        self.processes = 0

    def seconds(self) -> float | None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            return None
        total = 0.0
        for process in tree:
            try:
                times = process.cpu_times()
            except self._psutil.Error:  # a child that just exited
                continue
            total += times.user + times.system + times.children_user + times.children_system
        self.processes = len(tree)
        return total

    def rss_mb(self) -> float | None:
        """Resident memory of the whole tree (what a pod's memory request must cover)."""
        try:
            tree = [self.root, *self.root.children(recursive=True)]
            return round(sum(p.memory_info().rss for p in tree) / 2**20, 1)
        except self._psutil.Error:
            return None


@dataclass
class StepWindow:
    """The measured part of one step: response times and failures after the settle time,
    and the server's CPU over the same wall-clock window."""

    index: int
    target_rps: float
    started: float = 0.0
    ended: float = 0.0
    cpu_start: float | None = None
    cpu_end: float | None = None
    times_ms: list[float] = field(default_factory=list)
    failures: int = 0
    by_name: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures_by_name: Counter[str] = field(default_factory=Counter)

    def record(self, name: str, response_time_ms: float, failed: bool) -> None:
        self.times_ms.append(response_time_ms)
        self.by_name[name].append(response_time_ms)
        if failed:
            self.failures += 1
            self.failures_by_name[name] += 1

    def stats(self, budgets: Budgets) -> dict[str, Any]:
        seconds = max(self.ended - self.started, 1e-9)
        requests = len(self.times_ms)
        endpoints = {
            name: {
                "requests": len(times),
                "failures": self.failures_by_name[name],
                "p50_ms": _rounded(percentile(times, 50)),
                "p99_ms": _rounded(percentile(times, 99)),
            }
            for name, times in sorted(self.by_name.items())
        }
        slowest = max(endpoints.items(), key=lambda kv: kv[1]["p99_ms"] or 0, default=None)
        p95, p99 = percentile(self.times_ms, 95), percentile(self.times_ms, 99)
        cpu = None
        if self.cpu_start is not None and self.cpu_end is not None:
            cpu = self.cpu_end - self.cpu_start
        breaches = check_budgets(
            requests=requests, failures=self.failures, p95_ms=p95, p99_ms=p99, budgets=budgets
        )
        achieved = requests / seconds
        return {
            "step": self.index,
            "target_rps": self.target_rps,
            "achieved_rps": round(achieved, 2),
            "seconds": round(seconds, 2),
            "requests": requests,
            "failures": self.failures,
            "failure_ratio": round(self.failures / requests, 5) if requests else None,
            "p50_ms": _rounded(percentile(self.times_ms, 50)),
            "p95_ms": _rounded(p95),
            "p99_ms": _rounded(p99),
            "max_ms": _rounded(max(self.times_ms, default=float("nan"))),
            "server_cpu_seconds": None if cpu is None else round(cpu, 3),
            "server_cpu_cores": None if cpu is None else round(cpu / seconds, 3),
            "server_cpu_ms_per_request": (
                None if cpu is None or not requests else round(1000 * cpu / requests, 4)
            ),
            "within_budget": not breaches and achieved >= OFFERED_TOLERANCE * self.target_rps,
            "breaches": [b.message() for b in breaches],
            "slowest_endpoint": None
            if slowest is None
            else f"{slowest[0]} (p99 {slowest[1]['p99_ms']} ms)",
            "endpoints": endpoints,
        }


class StepLadder:
    """The step profile's clock: which rate is set, which window is measured, when to stop."""

    def __init__(
        self,
        plan: StepPlan,
        budgets: Budgets,
        pacer: Pacer,
        cpu: Callable[[], float | None],
    ) -> None:
        self.plan = plan
        self.rates = plan.rates()
        self.budgets = budgets
        self.pacer = pacer
        self.cpu = cpu
        self.index = -1
        self.current: StepWindow | None = None
        self.measuring = False
        self.results: list[dict[str, Any]] = []
        self.stopped_early: str | None = None

    def tick(self, run_time: float) -> bool:
        """Advance to ``run_time`` seconds into the run; False once the ladder is done."""
        index = int(run_time // self.plan.step_s)
        if index != self.index:
            finished = self._close()
            if finished is not None and (reason := self._far_past_knee(finished)):
                self.stopped_early = f"after step {finished['step']}: {reason}"
                return False
            if index >= len(self.rates):
                return False
            self.index = index
            self.current = StepWindow(index, self.rates[index])
            self.measuring = False
            self.pacer.set_rate(self.rates[index])
        if (
            self.current is not None
            and not self.measuring
            and run_time - self.index * self.plan.step_s >= self.plan.settle_s
        ):
            self.current.started = time.monotonic()
            self.current.cpu_start = self.cpu()
            self.measuring = True
        return True

    @property
    def rate(self) -> float | None:
        return self.rates[self.index] if self.index >= 0 else self.rates[0]

    def record(self, name: str, response_time_ms: float, failed: bool) -> None:
        if self.measuring and self.current is not None:
            self.current.record(name, response_time_ms, failed)

    def finish(self) -> None:
        """Close the step in progress (the run ended mid-step)."""
        self._close()

    def _close(self) -> dict[str, Any] | None:
        window, was_measuring = self.current, self.measuring
        self.current, self.measuring = None, False
        if window is None or not was_measuring:
            return None
        window.ended = time.monotonic()
        window.cpu_end = self.cpu()
        stats = window.stats(self.budgets)
        self.results.append(stats)
        print(
            f"step {stats['step']}: set {stats['target_rps']:g} req/s, achieved "
            f"{stats['achieved_rps']:g}, p50/p95/p99 {stats['p50_ms']}/{stats['p95_ms']}/"
            f"{stats['p99_ms']} ms, failures {stats['failures']}/{stats['requests']}, "
            f"server CPU {stats['server_cpu_ms_per_request']} ms/request, slowest "
            f"{stats['slowest_endpoint']}",
            flush=True,
        )
        return stats

    def _far_past_knee(self, stats: dict[str, Any]) -> str | None:
        if stats["requests"] == 0:
            return "no request completed"
        if stats["p99_ms"] > self.plan.stop_p99_factor * self.budgets.p99_ms:
            return f"p99 {stats['p99_ms']} ms > {self.plan.stop_p99_factor:g} x the budget"
        if (stats["failure_ratio"] or 0) > STOP_FAILURE_RATIO:
            return f"{stats['failure_ratio']:.1%} of requests failed"
        if stats["achieved_rps"] < STOP_ACHIEVED_SHARE * stats["target_rps"]:
            return f"achieved {stats['achieved_rps']:g} of {stats['target_rps']:g} req/s"
        return None


@dataclass
class Run:
    """Everything one load-generator process shares across users."""

    profile: Profile
    ids: IdSet
    customers: ZipfSampler
    products: ZipfSampler
    pacer: Pacer
    summary_path: Path | None
    server: ServerCpu | None
    ladder: StepLadder | None = None
    fallbacks: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    started_wall: float = 0.0
    started: float = 0.0
    ended: float = 0.0
    cpu_start: float | None = None
    cpu_end: float | None = None
    rss_mb: float | None = None
    peak_users: int = 0
    user_numbers: itertools.count[int] = field(default_factory=itertools.count)

    def server_cpu(self) -> float | None:
        return self.server.seconds() if self.server is not None else None


RUN: Run | None = None


def _run() -> Run:
    if RUN is None:
        raise RuntimeError("the segrec load profile is not set up (init event not fired)")
    return RUN


@events.init.add_listener
def _set_up(environment: Environment, **_: Any) -> None:
    global RUN
    options = environment.parsed_options
    if options is None:
        return
    try:
        profile = load_profile(
            options.load_profile,
            Path(options.profiles_file),
            {
                "users": options.profile_users,
                "rps": options.profile_rps,
                "duration_s": options.profile_duration,
                "step_s": options.step_seconds,
                "seed": options.seed,
                "unknown_share": options.unknown_share,
                "p95_ms": options.p95_ms,
                "p99_ms": options.p99_ms,
                "max_failure_ratio": options.max_failure_ratio,
            },
        )
        ids = IdSet.read(Path(options.ids_file)) if options.ids_file else _ids_from_settings()
        server = ServerCpu(options.server_pid) if options.server_pid else None
    except (ProfileError, FileNotFoundError, ValueError, KeyError) as error:
        raise SystemExit(f"locustfile: {error}") from None
    except Exception as error:  # psutil.NoSuchProcess and friends
        raise SystemExit(f"locustfile: {type(error).__name__}: {error}") from None
    pacer = Pacer(profile.rps if profile.pacing == "rate" else None)
    RUN = Run(
        profile=profile,
        ids=ids,
        customers=ZipfSampler(
            ids.customers,
            exponent=profile.zipf_exponent,
            unknown_share=profile.unknown_share,
            seed=profile.seed,
        ),
        products=ZipfSampler(ids.products, exponent=profile.zipf_exponent, seed=profile.seed + 1),
        pacer=pacer,
        summary_path=Path(options.summary_json) if options.summary_json else None,
        server=server,
    )
    if profile.step is not None:
        RUN.ladder = StepLadder(profile.step, profile.budgets, pacer, RUN.server_cpu)


def _ids_from_settings() -> IdSet:
    from segrec.settings import Settings

    return load_ids(Settings().features_dir)


@events.test_start.add_listener
def _started(environment: Environment, **_: Any) -> None:
    run = _run()
    run.started_wall = time.time()
    run.started = time.monotonic()
    run.cpu_start = run.server_cpu()


@events.test_stop.add_listener
def _stopped(environment: Environment, **_: Any) -> None:
    run = _run()
    run.ended = time.monotonic()
    run.cpu_end = run.server_cpu()
    run.rss_mb = run.server.rss_mb() if run.server is not None else None
    if run.ladder is not None:
        run.ladder.finish()


@events.request.add_listener
def _recorded(name: str, response_time: float, exception: Any = None, **_: Any) -> None:
    if RUN is not None and RUN.ladder is not None:
        RUN.ladder.record(name, float(response_time), exception is not None)


# ---- users --------------------------------------------------------------------------------
class _Storefront(FastHttpUser):
    """A JSON client that waits for its pacing slot and checks every answer."""

    abstract = True

    def _post(
        self,
        path: str,
        body: Any,
        name: str,
        check: Callable[[Any], str | None],
        *,
        close: bool = False,
    ) -> Any | None:
        _run().pacer.wait()
        headers = {"Connection": "close"} if close else None
        with self.client.post(
            path, json=body, name=name, headers=headers, catch_response=True
        ) as response:
            if response.status_code != 200:
                reason = getattr(response, "error", None) or (response.text or "")[:200]
                response.failure(f"HTTP {response.status_code}: {reason}")
                return None
            try:
                answer = response.json()
            except (ValueError, TypeError):
                response.failure("answer is not JSON")
                return None
            problem = check(answer)
            if problem:
                response.failure(problem)
                return None
            response.success()
            return answer


def _has_items(answer: Any) -> str | None:
    if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
        return "no items list in the answer"
    if not answer["items"]:
        return "empty items list"
    return None


def _events_accepted(count: int) -> Callable[[Any], str | None]:
    def check(answer: Any) -> str | None:
        if not isinstance(answer, dict):
            return "answer is not an object"
        if answer.get("rejected"):
            return f"events rejected: {answer['rejected'][0]}"
        if answer.get("accepted", 0) + answer.get("duplicates", 0) != count:
            return f"{count} events sent, answer {answer}"
        return None

    return check


class Shopper(_Storefront):
    """One storefront visitor at a time: a visit of several pages by one customer."""

    def wait_time(self) -> float:
        profile = _run().profile
        return self.rng.uniform(profile.think_min_s, profile.think_max_s)

    def on_start(self) -> None:
        run = _run()
        self.rng = random.Random(run.profile.seed * 1_000_003 + next(run.user_numbers))
        self.visits = 0
        self._new_visit()

    def _new_visit(self) -> None:
        run = _run()
        self.visits += 1
        self.customer = run.customers.draw(self.rng)
        self.session = f"lt-{id(self):x}-{self.visits}"
        self.cart: list[str] = []
        self.last_viewed: str | None = None
        # Geometric visit length with the profile's mean.
        mean = max(run.profile.session_pages, 1.0)
        self.pages_left = 1 + int(math.log(1.0 - self.rng.random()) / math.log(1.0 - 1.0 / mean))

    def _page_done(self) -> None:
        self.pages_left -= 1
        if self.pages_left <= 0:
            self._new_visit()

    def _recommend(self, placement: str, k: int, **extra: Any) -> None:
        body = {"customer_id": self.customer, "k": k, "placement": placement, **extra}
        answer = self._post("/recommend", body, f"/recommend [{placement}]", _has_items)
        if isinstance(answer, dict):
            _run().fallbacks[f"/recommend [{placement}]"][answer.get("fallback") or "none"] += 1

    def _event(self, kind: str, products: list[str]) -> None:
        events_ = [
            {
                "customer_id": self.customer,
                "product_id": product,
                "type": kind,
                "session_id": self.session,
            }
            for product in products
        ]
        check = _events_accepted(len(events_))
        self._post("/events", {"events": events_}, f"/events [{kind}]", check)

    @task(4)
    def home(self) -> None:
        """The home-page carousel."""
        self._recommend("home", HOME_K)
        self._page_done()

    @task(4)
    def product_page(self) -> None:
        """A product page: similar items, the personal carousel around it, a view event."""
        product = _run().products.draw(self.rng)
        self._post("/similar", {"product_id": product, "k": SIMILAR_K}, "/similar", _has_items)
        self._recommend("product", PRODUCT_K, product_id=product)
        self._event("view", [product])
        self.last_viewed = product
        self._page_done()

    @task(2)
    def add_to_cart(self) -> None:
        """Into the basket (the product last viewed, else a popular one), then the cart page."""
        product = self.last_viewed or _run().products.draw(self.rng)
        self._event("add_to_cart", [product])
        self.cart.append(product)
        self._recommend("cart", CART_K)
        self._page_done()

    @task(1)
    def checkout(self) -> None:
        """Buy what is in the basket (one purchase event per item, in one call)."""
        if not self.cart:
            self.add_to_cart()
            return
        self._event("purchase", list(dict.fromkeys(self.cart)))
        self.cart = []
        self._page_done()


class CampaignJob(_Storefront):
    """A marketing job: one batch of e-mail carousels every ``campaign_interval_s``, each
    on a new connection (an idle one would be closed by the server's keep-alive timeout
    and fail the next send)."""

    fixed_count = 1

    def wait_time(self) -> float:
        return _run().profile.campaign_interval_s

    def on_start(self) -> None:
        self.rng = random.Random(_run().profile.seed - 1)

    @task
    def email_batch(self) -> None:
        run = _run()
        known = run.customers.ranked
        chosen = self.rng.sample(known, min(run.profile.campaign_batch_size, len(known)))
        body = {
            "requests": [{"customer_id": c, "k": EMAIL_K, "placement": "email"} for c in chosen]
        }

        def check(answer: Any) -> str | None:
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(chosen):
                return f"expected {len(chosen)} results"
            empty = sum(1 for r in results if not r.get("items"))
            return f"{empty} results without items" if empty else None

        self._post("/recommend/batch", body, "/recommend/batch", check, close=True)


# ---- the shape ----------------------------------------------------------------------------
class ProfileShape(LoadTestShape):
    """Users and rate from the profile: a fixed number of shoppers (plus the campaign job)
    for ``duration_s``, or the step ladder's rates until it is done."""

    def tick(self) -> tuple[int, float] | None:
        run = _run()
        run_time = self.get_run_time()
        if run.ladder is not None:
            if not run.ladder.tick(run_time):
                return None
            rate = run.ladder.rate
        elif run_time >= float(run.profile.duration_s or 0):
            return None
        else:
            rate = run.profile.rps
        users = run.profile.users_at(rate) + 1  # + the campaign job
        run.peak_users = max(run.peak_users, users)
        return users, float(users)


# ---- the gate -----------------------------------------------------------------------------
@events.quitting.add_listener
def _gate(environment: Environment, **_: Any) -> None:
    """Judge the run against the budgets: exit code, a verdict line and the summary."""
    if RUN is None:
        return
    run = RUN
    total = environment.stats.total
    p95 = float(total.get_response_time_percentile(0.95) or 0.0)
    p99 = float(total.get_response_time_percentile(0.99) or 0.0)
    breaches = check_budgets(
        requests=total.num_requests,
        failures=total.num_failures,
        p95_ms=p95,
        p99_ms=p99,
        budgets=run.profile.budgets,
    )
    runner = environment.runner
    exceptions = sum(e["count"] for e in runner.exceptions.values()) if runner else 0
    if exceptions:
        breaches.append(Breach("exceptions", exceptions, 0))
    environment.process_exit_code = 1 if breaches else 0
    budgets = run.profile.budgets
    print(
        f"\ngate ({run.profile.name}: p95 <= {budgets.p95_ms:g} ms, p99 <= {budgets.p99_ms:g} "
        f"ms, failures <= {budgets.max_failure_ratio:.2%}): "
        f"{'FAIL' if breaches else 'PASS'} with p95 {p95:g} ms, p99 {p99:g} ms, "
        f"{total.num_failures} of {total.num_requests} requests failed",
        flush=True,
    )
    for breach in breaches:
        print(f"  BUDGET BROKEN: {breach.message()}", flush=True)
    if run.summary_path is not None:
        summary = _summary(environment, run, p95, p99, [b.message() for b in breaches])
        run.summary_path.parent.mkdir(parents=True, exist_ok=True)
        run.summary_path.write_text(json.dumps(summary, indent=2) + "\n")


def _summary(
    environment: Environment, run: Run, p95: float, p99: float, breaches: list[str]
) -> dict[str, Any]:
    stats = environment.stats
    total = stats.total
    seconds = (run.ended or time.monotonic()) - run.started if run.started else 0.0
    endpoints = {
        entry.name: _entry(entry) for entry in sorted(stats.entries.values(), key=lambda e: e.name)
    }
    cpu = None
    if run.cpu_start is not None and run.cpu_end is not None:
        cpu = run.cpu_end - run.cpu_start
    own = resource.getrusage(resource.RUSAGE_SELF)
    achieved = total.num_requests / seconds if seconds > 0 else 0.0
    offered: dict[str, Any] = {"set_rps": run.profile.rps, "achieved_rps": round(achieved, 2)}
    if run.profile.rps and achieved < OFFERED_TOLERANCE * run.profile.rps:
        offered["warning"] = (
            f"achieved {achieved:.1f} of the set {run.profile.rps:g} req/s: the server is "
            "saturated (answers slower than concurrency_s) or --users is too low"
        )
    return {
        "profile": run.profile.name,
        "profile_settings": run.profile.as_dict(),
        "host": environment.host,
        "started_at": dt.datetime.fromtimestamp(run.started_wall, dt.UTC).isoformat(
            timespec="seconds"
        ),
        "duration_s": round(seconds, 2),
        "requests": total.num_requests,
        "failures": total.num_failures,
        "failure_ratio": round(total.fail_ratio, 6),
        "rps": round(achieved, 2),
        "offered": offered,
        "percentile_note": "Locust's percentiles: whole ms below 100 ms, 2 significant digits "
        "above; step statistics are exact",
        "total": {**_entry(total), "p95_ms": p95, "p99_ms": p99},
        "endpoints": endpoints,
        "fallbacks": {name: dict(counts) for name, counts in sorted(run.fallbacks.items())},
        "errors": [
            {"name": e.name, "error": str(e.error), "occurrences": e.occurrences}
            for e in sorted(stats.errors.values(), key=lambda e: -e.occurrences)[:20]
        ],
        "budgets": run.profile.budgets.as_dict(),
        "passed": not breaches,
        "breaches": breaches,
        "server": None
        if run.server is None
        else {
            "pid": run.server.pid,
            "processes": run.server.processes,
            "rss_mb": run.rss_mb,
            "cpu_seconds": None if cpu is None else round(cpu, 3),
            "cpu_cores_mean": None if cpu is None or seconds <= 0 else round(cpu / seconds, 3),
            "cpu_ms_per_request": (
                None
                if cpu is None or not total.num_requests
                else round(1000 * cpu / total.num_requests, 4)
            ),
        },
        "load_generator": {
            "pid": os.getpid(),
            "cpu_affinity": sorted(os.sched_getaffinity(0)),
            "cpu_seconds": round(own.ru_utime + own.ru_stime, 3),
            "peak_users": run.peak_users,
        },
        "steps": None if run.ladder is None else run.ladder.results,
        "step_stopped_early": None if run.ladder is None else run.ladder.stopped_early,
        "ids": {
            "customers": len(run.ids.customers),
            "products": len(run.ids.products),
            "source": run.ids.source,
        },
        "python": sys.version.split()[0],
    }


def _entry(entry: Any) -> dict[str, Any]:
    return {
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "rps": round(float(entry.total_rps), 2),
        "p50_ms": float(entry.get_response_time_percentile(0.5) or 0.0),
        "p95_ms": float(entry.get_response_time_percentile(0.95) or 0.0),
        "p99_ms": float(entry.get_response_time_percentile(0.99) or 0.0),
        "mean_ms": round(float(entry.avg_response_time), 2),
        "max_ms": round(float(entry.max_response_time or 0.0), 2),
    }


def _rounded(value: float) -> float | None:
    return None if value != value else round(value, 3)
