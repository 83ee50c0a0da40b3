"""What the load test offers and what it must meet: profiles, budgets, the id sampler.

Shared by the Locust file (inside the load generator), the runner and the tests. It
imports neither Locust nor pandas: importing Locust monkey-patches the whole process with
gevent, which the test process and the runner must not get, and the load generator's
core must stay free for sending requests.

Profiles live in ``loadtests/profiles.toml``; :func:`load_profile` reads one and applies
overrides (command-line flags, then ``SEGREC_LOADTEST_*`` variables for the budgets).
"""

from __future__ import annotations

import json
import math
import os
import random
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

PROFILES_PATH = Path(__file__).resolve().parent / "profiles.toml"
BUDGET_ENV = {
    "p95_ms": "SEGREC_LOADTEST_P95_MS",
    "p99_ms": "SEGREC_LOADTEST_P99_MS",
    "max_failure_ratio": "SEGREC_LOADTEST_MAX_FAILURE_RATIO",
}
Pacing = Literal["think", "rate"]


class ProfileError(ValueError):
    """A profile that does not exist or does not make sense; the message says which."""


# ---- budgets ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budgets:
    """What a run must meet: latency percentiles over every request, and failures."""

    p95_ms: float
    p99_ms: float
    max_failure_ratio: float

    def as_dict(self) -> dict[str, float]:
        return {
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_failure_ratio": self.max_failure_ratio,
        }


@dataclass(frozen=True)
class Breach:
    """One budget a run broke, with by how much."""

    budget: str  # p95_ms, p99_ms, max_failure_ratio, requests or exceptions
    measured: float
    limit: float

    def message(self) -> str:
        if self.budget == "requests":
            return "no request completed: nothing to judge (is the host answering?)"
        if self.budget == "exceptions":
            return f"{self.measured:g} exceptions in the load generator (a bug in the locustfile)"
        over = self.measured - self.limit
        if self.budget == "max_failure_ratio":
            return (
                f"failure ratio budget broken: {self.measured:.2%} of requests failed, "
                f"budget {self.limit:.2%} (over by {over:.2%})"
            )
        name = self.budget.removesuffix("_ms")
        times = f", {self.measured / self.limit:.3g}x" if self.limit > 0 else ""
        return (
            f"{name} latency budget broken: {self.measured:g} ms > {self.limit:g} ms "
            f"(over by {over:g} ms{times})"
        )


def check_budgets(
    *, requests: int, failures: int, p95_ms: float, p99_ms: float, budgets: Budgets
) -> list[Breach]:
    """Every budget the measured figures break (empty: the run passes).

    A run without a single request fails: a gate that passes on no evidence is no gate.
    """
    if requests <= 0:
        return [Breach("requests", 0, 1)]
    breaches = []
    if p95_ms > budgets.p95_ms:
        breaches.append(Breach("p95_ms", p95_ms, budgets.p95_ms))
    if p99_ms > budgets.p99_ms:
        breaches.append(Breach("p99_ms", p99_ms, budgets.p99_ms))
    ratio = failures / requests
    if ratio > budgets.max_failure_ratio:
        breaches.append(Breach("max_failure_ratio", ratio, budgets.max_failure_ratio))
    return breaches


# ---- profiles -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StepPlan:
    """The step profile's ladder: ``start_rps``, then ``+step_rps`` every ``step_s`` up to
    ``max_rps``; the first ``settle_s`` of each step is not measured."""

    start_rps: float
    step_rps: float
    max_rps: float
    step_s: float
    settle_s: float
    stop_p99_factor: float

    def rates(self) -> list[float]:
        count = math.floor((self.max_rps - self.start_rps) / self.step_rps + 1e-9) + 1
        return [round(self.start_rps + i * self.step_rps, 6) for i in range(max(count, 1))]


@dataclass(frozen=True)
class Profile:
    """One named load profile with its budgets and the traffic model's knobs."""

    name: str
    description: str
    pacing: Pacing
    users: int | None  # None: rate-paced, sized to the rate (see users_at)
    think_min_s: float
    think_max_s: float
    budgets: Budgets
    duration_s: float | None = None  # smoke and steady
    rps: float | None = None  # steady: the set rate
    step: StepPlan | None = None
    seed: int = 42
    unknown_share: float = 0.05
    zipf_exponent: float = 1.1
    session_pages: float = 8.0
    campaign_interval_s: float = 15.0
    campaign_batch_size: int = 20
    concurrency_s: float = 1.0
    overrides: dict[str, Any] = field(default_factory=dict)

    def users_at(self, rate: float | None) -> int:
        """Simulated shoppers: the profile's number, or for a rate-paced profile without
        one, ``rate x concurrency_s`` (at least 2). More users than that only wait for
        their slot, and a connection idle past the server's keep-alive (uvicorn: 5 s) is
        closed under the client's feet; fewer cap the rate once latency passes
        ``concurrency_s``, which is past any budget anyway."""
        if self.users is not None:
            return self.users
        return max(2, math.ceil((rate or 0.0) * self.concurrency_s))

    @property
    def planned_seconds(self) -> float:
        """How long the run takes at most (the step profile may stop earlier)."""
        if self.step is not None:
            return len(self.step.rates()) * self.step.step_s
        return float(self.duration_s or 0.0)

    def as_dict(self) -> dict[str, Any]:
        answer = {
            "name": self.name,
            "description": self.description,
            "pacing": self.pacing,
            "users": self.users if self.users is not None else "rate x concurrency_s",
            "concurrency_s": self.concurrency_s,
            "think_s": [self.think_min_s, self.think_max_s],
            "duration_s": self.duration_s,
            "rps": self.rps,
            "seed": self.seed,
            "unknown_share": self.unknown_share,
            "zipf_exponent": self.zipf_exponent,
            "session_pages": self.session_pages,
            "campaign_interval_s": self.campaign_interval_s,
            "campaign_batch_size": self.campaign_batch_size,
            "overrides": self.overrides,
        }
        if self.step is not None:
            answer["step"] = {**vars(self.step), "rates": self.step.rates()}
        return answer


def profile_names(path: Path = PROFILES_PATH) -> list[str]:
    return sorted(_read_toml(path).get("profiles", {}))


def load_profile(
    name: str, path: Path = PROFILES_PATH, overrides: Mapping[str, Any] | None = None
) -> Profile:
    """Profile ``name`` from ``path`` with ``overrides`` applied.

    Override keys: ``users``, ``rps`` (steady: the rate; step: the top of the ladder),
    ``duration_s`` (smoke, steady), ``step_s`` (step), ``seed``, ``unknown_share`` and the
    budgets ``p95_ms``, ``p99_ms``, ``max_failure_ratio``; None values are ignored. A
    budget not overridden here is taken from ``SEGREC_LOADTEST_<BUDGET>`` when set.
    """
    document = _read_toml(path)
    profiles = document.get("profiles", {})
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ProfileError(f"unknown profile {name!r}: choose one of {known} (from {path})")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key, variable in BUDGET_ENV.items():
        if key not in given and os.environ.get(variable):
            given[key] = _number(os.environ[variable], variable)
    raw = {**document.get("defaults", {}), **profiles[name]}
    where = f"profile {name!r} in {path}"
    try:
        budgets_raw = {**raw.pop("budgets"), **{k: given[k] for k in BUDGET_ENV if k in given}}
        budgets = Budgets(**{k: float(budgets_raw[k]) for k in BUDGET_ENV})
        pacing = raw.pop("pacing")
        if pacing not in ("think", "rate"):
            raise ProfileError(f"{where}: pacing must be think or rate, not {pacing!r}")
        step_keys = ("start_rps", "step_rps", "max_rps", "step_s", "settle_s", "stop_p99_factor")
        step = None
        if "step_rps" in raw:
            values = {k: float(raw.pop(k)) for k in step_keys}
            values["max_rps"] = float(given.get("rps", values["max_rps"]))
            values["step_s"] = float(given.get("step_s", values["step_s"]))
            step = StepPlan(**values)
        elif "step_s" in given:
            raise ProfileError(f"{where}: --step-seconds applies to the step profile only")
        if step is not None and "duration_s" in given:
            raise ProfileError(
                f"{where}: the step profile's length is its steps: use --step-seconds"
            )
        profile = Profile(
            name=name,
            description=str(raw.pop("description", "")),
            pacing=pacing,
            users=_optional_int(given.get("users", raw.pop("users", None))),
            think_min_s=float(raw.pop("think_min_s")),
            think_max_s=float(raw.pop("think_max_s")),
            budgets=budgets,
            duration_s=_optional_float(given.get("duration_s", raw.pop("duration_s", None))),
            rps=_optional_float(given.get("rps", raw.pop("rps", None)) if step is None else None),
            step=step,
            seed=int(given.get("seed", raw.pop("seed", 42))),
            unknown_share=float(given.get("unknown_share", raw.pop("unknown_share", 0.05))),
            zipf_exponent=float(raw.pop("zipf_exponent", 1.1)),
            session_pages=float(raw.pop("session_pages", 8.0)),
            campaign_interval_s=float(raw.pop("campaign_interval_s", 15.0)),
            campaign_batch_size=int(raw.pop("campaign_batch_size", 20)),
            concurrency_s=float(raw.pop("concurrency_s", 1.0)),
            overrides=dict(given),
        )
    except KeyError as missing:
        raise ProfileError(f"{where}: missing setting {missing.args[0]!r}") from None
    except (TypeError, ValueError) as error:
        if isinstance(error, ProfileError):
            raise
        raise ProfileError(f"{where}: {error}") from None
    _validate(profile, where)
    return profile


def _validate(profile: Profile, where: str) -> None:
    problems = []
    if profile.users is not None and profile.users < 1:
        problems.append("users must be at least 1")
    if profile.users is None and profile.pacing == "think":
        problems.append("a think-paced profile needs users")
    if profile.concurrency_s <= 0:
        problems.append("concurrency_s must be positive")
    if not 0 <= profile.think_min_s <= profile.think_max_s:
        problems.append("think times must satisfy 0 <= think_min_s <= think_max_s")
    if not 0 <= profile.unknown_share <= 1:
        problems.append("unknown_share must be within 0..1")
    if profile.budgets.p95_ms <= 0 or profile.budgets.p99_ms <= 0:
        problems.append("latency budgets must be positive")
    if not 0 <= profile.budgets.max_failure_ratio <= 1:
        problems.append("max_failure_ratio must be within 0..1")
    if profile.step is None and not (profile.duration_s and profile.duration_s > 0):
        problems.append("duration_s must be positive")
    if profile.pacing == "rate" and profile.step is None and not (profile.rps and profile.rps > 0):
        problems.append("a rate-paced profile needs a positive rps")
    if profile.step is not None:
        plan = profile.step
        if min(plan.start_rps, plan.step_rps, plan.max_rps) <= 0:
            problems.append("step rates must be positive")
        if plan.max_rps < plan.start_rps:
            problems.append("max_rps must be at least start_rps")
        if not 0 <= plan.settle_s < plan.step_s:
            problems.append("settle_s must be shorter than step_s")
    if problems:
        raise ProfileError(f"{where}: " + "; ".join(problems))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ProfileError(f"no profiles file at {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{path}: not valid TOML: {error}") from None


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ProfileError(f"{name}={text!r} is not a number") from None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


# ---- who shops: Zipf-like ids -------------------------------------------------------------
def unknown_customer_id(rng: random.Random) -> str:
    """A well-formed pseudonym (``c_`` + 16 hex digits), as a first-time visitor has."""
    return f"c_{rng.getrandbits(64):016x}"


class ZipfSampler:
    """Ids drawn Zipf-like: the r-th busiest of n ids has weight ``1 / r**exponent``.

    On a storefront a few customers (and products) account for much of the traffic and
    most appear rarely; uniform draws would keep every cache warm and flatter the server.
    Which id is busiest is arbitrary, so the ranking is a seeded shuffle of ``ids``. A
    share ``unknown_share`` of draws is a fresh well-formed id nobody has seen (the
    service answers those from popularity).

    >>> sampler = ZipfSampler(["a", "b"], exponent=1.0, seed=0)
    >>> round(sum(sampler.probabilities().values()), 6)
    1.0
    """

    def __init__(
        self,
        ids: Sequence[str],
        *,
        exponent: float = 1.1,
        unknown_share: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 0 <= unknown_share <= 1:
            raise ValueError(f"unknown_share must be within 0..1, not {unknown_share}")
        if exponent < 0:
            raise ValueError(f"exponent must be non-negative, not {exponent}")
        unique = list(dict.fromkeys(ids))
        if not unique and unknown_share < 1:
            raise ValueError("no ids to draw from")
        random.Random(seed).shuffle(unique)
        self.ranked = unique
        self.exponent = exponent
        self.unknown_share = unknown_share
        self._known = set(unique)
        self._cumulative = list(accumulate(1.0 / r**exponent for r in range(1, len(unique) + 1)))

    def probabilities(self) -> dict[str, float]:
        """Each known id's chance per draw (they sum to ``1 - unknown_share``)."""
        if not self.ranked:
            return {}
        total = self._cumulative[-1]
        weights = [1.0 / r**self.exponent for r in range(1, len(self.ranked) + 1)]
        known = 1.0 - self.unknown_share
        return {i: known * w / total for i, w in zip(self.ranked, weights, strict=True)}

    def draw(self, rng: random.Random) -> str:
        """One id; ``rng`` is the caller's (one per simulated user, seeded)."""
        if self.unknown_share and rng.random() < self.unknown_share:
            while True:
                candidate = unknown_customer_id(rng)
                if candidate not in self._known:
                    return candidate
        return rng.choices(self.ranked, cum_weights=self._cumulative)[0]


# ---- the id set ---------------------------------------------------------------------------
@dataclass(frozen=True)
class IdSet:
    """The real customers and catalogue products the load draws from."""

    customers: list[str]
    products: list[str]
    source: str

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"source": self.source, "customers": self.customers, "products": self.products}
        path.write_text(json.dumps(body))
        return path

    @classmethod
    def read(cls, path: Path) -> IdSet:
        body = json.loads(path.read_text())
        return cls(list(body["customers"]), list(body["products"]), str(body.get("source", path)))


def load_ids(features_dir: Path) -> IdSet:
    """Customers with a segment (``customer_segments.parquet``) and every product with
    features (``product_features.parquet``), read once with pyarrow (no pandas)."""
    import pyarrow.parquet as pq

    customers_path = features_dir / "customer_segments.parquet"
    products_path = features_dir / "product_features.parquet"
    missing = [p for p in (customers_path, products_path) if not p.exists()]
    if missing:
        names = ", ".join(str(p) for p in missing)
        raise FileNotFoundError(
            f"no id set for the load test: {names} missing (run make features, make segments "
            "and make train first, or point SEGREC_DATA_DIR at a trained data directory)"
        )
    customers = pq.read_table(customers_path, columns=["customer_id"]).column("customer_id")
    products = pq.read_table(products_path, columns=["product_id"]).column("product_id")
    return IdSet(
        list(dict.fromkeys(customers.to_pylist())),
        list(dict.fromkeys(products.to_pylist())),
        str(features_dir),
    )


# ---- exact percentiles for the step statistics --------------------------------------------
def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics
    (numpy's default); NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
