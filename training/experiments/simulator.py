"""Replay synthetic customers through the live service: the whole experiment loop offline.

For each simulated visit the simulator asks the running service for a carousel
(``POST /recommend``), lets the customer's *planted* tastes decide which shown items are
clicked, carted and bought, and posts those outcomes back (``POST /events``). The
service assigns the visit to an experiment variant and logs the exposure; the events go
to its event log; ``make ab-report`` then joins the two. Nothing is mocked: assignment,
the variant's model, the live session and both logs are the service's own.

Where the tastes come from
--------------------------
The synthetic generator (:mod:`training.data.synthetic`) draws, per customer, a persona
(price-band probabilities and funnel rates), a category preference (a Dirichlet draw,
stored as a cumulative distribution) and a handful of staple products. Only the persona
reaches ``ground_truth.parquet``, so :class:`PlantedPreferences` rebuilds the rest by
replaying the generator's catalogue and population draws from the raw data's
``source.json`` (size, seed, end date): they come first off the seeded generator, before
any event is simulated, so the replay is cheap and exact. It is checked against both
ground-truth files and refused if they disagree (a different generator version).
Customer ids are pseudonymised with the configured secret, as cleaning does.

The choice model
----------------
An item's *appeal* to a customer is how much likelier the generator is to make that
customer view it than an indifferent customer::

    appeal = (category preference x number of categories)
             x (persona's price-band probability x number of bands)
             x STAPLE_APPEAL if the item is one of the customer's staples

so 1 is indifferent, the favourite categories of a focused customer reach 5 to 10. The
customer looks down the carousel and clicks item ``i`` (rank ``r``, from 0) with
probability ``1 - exp(-CLICK_RATE * appeal / log2(r + 2))``: appeal and position both
matter, as in position-based click models. A clicked item is carted with the persona's
``p_cart`` (scaled by ``sqrt(appeal)``, capped, and cut for out-of-stock items as the
generator does) and a carted one is bought with the persona's ``p_buy``, at the list price
less the persona's usual discount, in the persona's usual quantity. All draws for visit
``v`` come from a generator seeded by ``(seed, v)``, so a run is reproducible whatever
order the worker threads finish in.

Events are posted without ``ts``: the service stamps them with its own clock, the clock
exposures are logged with, so outcomes fall a moment after their exposure even when the
service replays historical data (``SEGREC_FEATURE_CLOCK=data``).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segrec.pseudonym import pseudonymise_many
from training.data.synthetic.catalogue import (
    CATEGORIES,
    N_BANDS,
    Catalogue,
    GroupSampler,
)
from training.data.synthetic.generator import (
    World,
    matches_ground_truth,
    replay,
    replay_problem,
)
from training.data.synthetic.personas import PERSONAS
from training.data.synthetic.sessions import OUT_OF_STOCK_CART_FACTOR

CLICK_RATE = 0.03  # clicks on an indifferent (appeal 1) item in the top slot: ~3%
STAPLE_APPEAL = 4.0  # staples are bought again and again: the strongest pull there is
MAX_CART_PROBABILITY = 0.9
LAPSED_VISIT_WEIGHT = 0.2  # lapsed customers still visit now and then, rarely
PLACEMENTS_WITHOUT_CONTEXT = ("home", "email")


class SimulationError(RuntimeError):
    """The simulator cannot run (no service, data it cannot rebuild tastes from)."""


# ---- planted preferences -----------------------------------------------------------------
@dataclass(frozen=True)
class PlantedPreferences:
    """The generator's planted truth for the simulated customers and the catalogue.

    ``customer_ids`` are pseudonymous (as the service knows them); row ``i`` of every
    customer array belongs to ``customer_ids[i]``.
    """

    customer_ids: np.ndarray
    persona: np.ndarray  # index into PERSONAS
    category_pdf: np.ndarray  # (customers, categories), rows sum to 1
    staples: np.ndarray  # (customers, staples) product positions
    visit_weight: np.ndarray  # how often each customer visits, relative
    catalogue: Catalogue
    sampler: GroupSampler
    product_index: dict[str, int]

    @classmethod
    def from_raw(cls, raw_dir: Path, secret: str) -> PlantedPreferences:
        """Rebuild the tastes of the synthetic dataset in ``raw_dir`` (its ``source.json``
        and ground truth), with customer ids pseudonymised by ``secret``."""
        meta_path = raw_dir / "source.json"
        if not meta_path.exists():
            raise SimulationError(
                f"no {meta_path}: the simulator needs the synthetic raw data (`make data`)"
            )
        meta = json.loads(meta_path.read_text())
        if problem := replay_problem(meta):
            raise SimulationError(
                f"{raw_dir}: {problem}; planted preferences exist only for the synthetic "
                "storefront this code generates (`make data`)"
            )
        size, seed = str(meta["size"]), int(meta["seed"])
        end = dt.date.fromisoformat(str(meta["end"]))
        world = replay(size, seed, end)
        _check_against_truth(raw_dir, world)
        catalogue, population = world.catalogue, world.population

        originals = population.duplicate_of < 0  # duplicates are merged away by cleaning
        raw_ids = population.raw_ids[originals]
        cdf = population.category_cdf[originals]
        pdf = np.diff(np.concatenate([np.zeros((len(cdf), 1)), cdf], axis=1), axis=1)
        persona = population.persona[originals]
        rate = np.array([p.sessions_per_month for p in PERSONAS])[persona]
        lapsed = np.array([p.lapsed for p in PERSONAS])[persona]
        weight = rate * population.activity[originals] * np.where(lapsed, LAPSED_VISIT_WEIGHT, 1)
        return cls(
            customer_ids=np.array(pseudonymise_many(raw_ids, secret), dtype=object),
            persona=persona,
            category_pdf=pdf,
            staples=population.staples[originals],
            visit_weight=weight / weight.sum(),
            catalogue=catalogue,
            sampler=GroupSampler(catalogue),
            product_index={str(p): i for i, p in enumerate(catalogue.product_ids)},
        )

    def appeal(self, customer: int, product_ids: Sequence[str]) -> np.ndarray:
        """How much likelier ``customer`` (a row) views each product than an indifferent
        customer would (1 = indifferent; 0 for a product the generator never made)."""
        cat = self.catalogue
        known = [self.product_index.get(p, -1) for p in product_ids]
        index = np.array(known, dtype=np.int64)
        valid = index >= 0
        safe = np.where(valid, index, 0)
        category = self.category_pdf[customer, cat.category[safe]] * len(CATEGORIES)
        bands = PERSONAS[int(self.persona[customer])].price_band_probs
        band = np.array(bands)[cat.band[safe]] * N_BANDS
        staple = np.where(np.isin(safe, self.staples[customer]), STAPLE_APPEAL, 1.0)
        return np.where(valid, category * band * staple, 0.0)

    def page_product(self, customer: int, rng: np.random.Generator) -> str:
        """A product page the customer would open: category and band from their tastes,
        the product by popularity within that group (the generator's own view draw)."""
        category = int(rng.choice(len(CATEGORIES), p=self.category_pdf[customer]))
        band_probs = np.array(PERSONAS[int(self.persona[customer])].price_band_probs)
        band = int(rng.choice(N_BANDS, p=band_probs / band_probs.sum()))
        product = self.sampler.sample(np.array([category * N_BANDS + band]), rng)[0]
        return str(self.catalogue.product_ids[product])


def _check_against_truth(raw_dir: Path, world: World) -> None:
    if not matches_ground_truth(raw_dir, world):
        raise SimulationError(
            f"replaying the generator does not reproduce the ground truth in {raw_dir}: "
            "the data was made by different generator code; regenerate it (`make data`)"
        )


# ---- the visit ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """What one customer did with one carousel."""

    clicked: list[str]
    carted: list[str]
    bought: list[tuple[str, int, float]]  # product, quantity, unit price paid


def choose(
    preferences: PlantedPreferences,
    customer: int,
    product_ids: Sequence[str],
    rng: np.random.Generator,
) -> Choice:
    """The planted tastes' verdict on one carousel (see the module docstring)."""
    if not product_ids:
        return Choice([], [], [])
    persona = PERSONAS[int(preferences.persona[customer])]
    appeal = preferences.appeal(customer, product_ids)
    position = 1.0 / np.log2(np.arange(len(product_ids)) + 2.0)
    clicked = rng.random(len(appeal)) < 1.0 - np.exp(-CLICK_RATE * appeal * position)
    index = np.array([preferences.product_index.get(p, 0) for p in product_ids])
    stock = np.where(preferences.catalogue.in_stock[index], 1.0, OUT_OF_STOCK_CART_FACTOR)
    p_cart = np.minimum(persona.p_cart * np.sqrt(appeal) * stock, MAX_CART_PROBABILITY)
    carted = clicked & (rng.random(len(appeal)) < p_cart)
    bought = carted & (rng.random(len(appeal)) < persona.p_buy)
    quantity = 1 + rng.poisson(persona.mean_extra_quantity, len(appeal))
    discounted = rng.random(len(appeal)) < persona.p_discount
    discount = np.where(discounted, rng.uniform(0.1, 0.4, len(appeal)), 0.0)
    price = np.round(preferences.catalogue.price[index] * (1 - discount), 2)
    ids = list(product_ids)
    return Choice(
        clicked=[ids[i] for i in np.flatnonzero(clicked)],
        carted=[ids[i] for i in np.flatnonzero(carted)],
        bought=[(ids[i], int(quantity[i]), float(price[i])) for i in np.flatnonzero(bought)],
    )


def outcome_events(
    customer_id: str, choice: Choice, *, visit_key: str, session_id: str
) -> list[dict[str, Any]]:
    """``/events`` payload for one visit, with ids derived from ``visit_key`` (a retried
    post is then deduplicated by the service instead of counted twice)."""
    events: list[dict[str, Any]] = []

    def add(product: str, kind: str, **extra: Any) -> None:
        events.append(
            {
                "event_id": f"{visit_key}-{product}-{kind}",
                "customer_id": customer_id,
                "product_id": product,
                "type": kind,
                "session_id": session_id,
                **extra,
            }
        )

    for product in choice.clicked:
        add(product, "view")
    for product in choice.carted:
        add(product, "add_to_cart")
    for product, quantity, price in choice.bought:
        add(product, "purchase", quantity=quantity, price=price)
    return events


# ---- HTTP --------------------------------------------------------------------------------
class _Client:
    """One keep-alive connection per thread (``http.client`` is not thread-safe)."""

    def __init__(self, url: str, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SimulationError(f"service url must be http(s)://host:port, got {url!r}")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.base = parsed.path.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            connection = kind(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(2):
            connection = self._connection()
            try:
                connection.request(method, self.base + path, body=data, headers=headers)
                response = connection.getresponse()
                text = response.read().decode()
                break
            except (http.client.HTTPException, ConnectionError, TimeoutError):
                # A keep-alive connection the server closed: reconnect once. Both endpoints
                # are safe to retry (event ids deduplicate).
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        try:
            return response.status, json.loads(text)
        except json.JSONDecodeError:
            return response.status, text


# ---- the run -----------------------------------------------------------------------------
@dataclass
class SimulationResult:
    """What the simulator did and saw; the report's numbers should agree with it."""

    visits: int = 0
    recommend_errors: int = 0
    exposures: Counter[tuple[str, str]] = field(default_factory=Counter)
    outside_experiments: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    customers: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    clicks: Counter[tuple[str, str]] = field(default_factory=Counter)
    carts: Counter[tuple[str, str]] = field(default_factory=Counter)
    purchases: Counter[tuple[str, str]] = field(default_factory=Counter)
    revenue: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    events_posted: int = 0
    events_accepted: int = 0
    events_rejected: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the message
    seconds: float = 0.0

    @property
    def total_exposures(self) -> int:
        return sum(self.exposures.values())

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures per (experiment, variant) and overall."""
        variants = {}
        for key, n in sorted(self.exposures.items()):
            variants[f"{key[0]}/{key[1]}"] = {
                "exposures": n,
                "customers": len(self.customers[key]),
                "clicks": self.clicks[key],
                "carts": self.carts[key],
                "purchases": self.purchases[key],
                "revenue": round(self.revenue[key], 2),
            }
        return {
            "visits": self.visits,
            "exposures": self.total_exposures,
            "outside_experiments": self.outside_experiments,
            "recommend_errors": self.recommend_errors,
            "fallbacks": dict(self.fallbacks),
            "events_posted": self.events_posted,
            "events_accepted": self.events_accepted,
            "events_rejected": self.events_rejected,
            "errors": self.errors,
            "seconds": round(self.seconds, 1),
            "variants": variants,
        }


@dataclass(frozen=True)
class SimulationPlan:
    """Which customer visits when, on which placement: drawn up front from the seed."""

    customers: np.ndarray  # row of PlantedPreferences per visit
    placements: np.ndarray  # str per visit

    @classmethod
    def draw(
        cls,
        preferences: PlantedPreferences,
        visits: int,
        placements: Mapping[str, float],
        seed: int,
    ) -> SimulationPlan:
        """``visits`` visits by customers drawn with replacement, as often as their
        planted visit rate says (so heavy shoppers come back, as they do)."""
        if visits < 1:
            raise ValueError(f"visits must be at least 1, got {visits}")
        unknown = sorted(set(placements) - {*PLACEMENTS_WITHOUT_CONTEXT, "product"})
        if unknown or not placements or min(placements.values()) < 0:
            raise ValueError(
                f"placements must map home, email or product to non-negative weights, "
                f"got {dict(placements)}"
            )
        rng = np.random.default_rng([seed, 0])
        customers = rng.choice(len(preferences.customer_ids), visits, p=preferences.visit_weight)
        names = list(placements)
        weights = np.array([placements[n] for n in names], dtype=float)
        chosen = rng.choice(len(names), visits, p=weights / weights.sum())
        return cls(customers, np.array(names, dtype=object)[chosen])


def simulate(
    url: str,
    preferences: PlantedPreferences,
    *,
    visits: int,
    seed: int = 42,
    k: int = 10,
    placements: Mapping[str, float] | None = None,
    workers: int = 4,
    events_batch: int = 100,
    timeout: float = 30.0,
    progress: bool = True,
) -> SimulationResult:
    """Run ``visits`` simulated visits against the service at ``url``.

    Each customer's visits run in order on one worker thread (a visit's carousel depends
    on the events of the previous one); different customers run in parallel on
    ``workers`` threads. Outcome events are posted in batches of up to ``events_batch``
    (``/events`` writes durably, so one call per visit would make the service's disk the
    simulator's pace), but a customer's pending events are always posted before their
    next visit, so every carousel sees what the customer did before.
    """
    from tqdm import tqdm

    if not 1 <= events_batch <= 1000:
        raise ValueError(f"events_batch must be 1..1000 (the service's limit), got {events_batch}")
    client = _Client(url, timeout)
    try:
        status, _ = client.request("GET", "/readyz")
    except OSError as error:
        raise SimulationError(f"no service at {url}: {error}") from None
    if status != 200:
        raise SimulationError(f"the service at {url} is not ready (/readyz answered {status})")
    plan = SimulationPlan.draw(preferences, visits, placements or {"home": 1.0}, seed)
    by_customer: dict[int, list[int]] = defaultdict(list)
    for visit, customer in enumerate(plan.customers.tolist()):
        by_customer[customer].append(visit)

    result = SimulationResult()
    poster = _EventPoster(client, events_batch, result)
    started = time.perf_counter()
    bar = tqdm(total=visits, desc="simulated visits", unit="visit", disable=not progress)

    def run_customer(customer: int, customer_visits: list[int]) -> None:
        for visit in customer_visits:
            _visit(client, poster, preferences, plan, customer, visit, seed, k)
            bar.update(1)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(run_customer, c, v) for c, v in by_customer.items()]
        for future in as_completed(futures):
            future.result()  # a bug in a worker stops the run loudly
    poster.flush()
    bar.close()
    result.seconds = time.perf_counter() - started
    return result


def _note(result: SimulationResult, message: str) -> None:
    if len(result.errors) < 10:
        result.errors.append(message)


class _EventPoster:
    """Buffers outcome events and posts them in batches.

    One lock guards the buffer, the result and every post: a visit that finds its
    customer's events still pending posts them first, and if another thread is posting
    them right then, it waits until they are in (so they are never overtaken)."""

    def __init__(self, client: _Client, batch: int, result: SimulationResult) -> None:
        self.client = client
        self.batch = batch
        self.result = result
        self.lock = threading.Lock()
        self.pending: list[dict[str, Any]] = []
        self.customers: set[str] = set()

    def before_visit(self, customer_id: str) -> None:
        with self.lock:
            if customer_id in self.customers:
                self._flush()

    def add(self, customer_id: str, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.pending.extend(events)
            if events:
                self.customers.add(customer_id)
            if len(self.pending) >= self.batch:
                self._flush()

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        while self.pending:
            events, self.pending = self.pending[: self.batch], self.pending[self.batch :]
            self._post(events)
        self.customers.clear()

    def _post(self, events: list[dict[str, Any]]) -> None:
        result = self.result
        result.events_posted += len(events)
        try:
            status, reply = self.client.request("POST", "/events", {"events": events})
        except OSError as error:
            status, reply = 0, f"{type(error).__name__}: {error}"
        if status != 200 or not isinstance(reply, dict):
            result.events_rejected += len(events)
            _note(result, f"/events {status}: {str(reply)[:200]}")
            return
        # A duplicate is an event the service already has (a retried post): it counts.
        result.events_accepted += int(reply.get("accepted", 0)) + int(reply.get("duplicates", 0))
        rejected = reply.get("rejected", [])
        result.events_rejected += len(rejected)
        if rejected:
            first = rejected[0]
            _note(result, f"/events rejected {first.get('field')}: {first.get('reason')}")


def _visit(
    client: _Client,
    poster: _EventPoster,
    preferences: PlantedPreferences,
    plan: SimulationPlan,
    customer: int,
    visit: int,
    seed: int,
    k: int,
) -> None:
    rng = np.random.default_rng([seed, 1, visit])
    customer_id = str(preferences.customer_ids[customer])
    placement = str(plan.placements[visit])
    body: dict[str, Any] = {"customer_id": customer_id, "k": k, "placement": placement}
    if placement == "product":
        body["product_id"] = preferences.page_product(customer, rng)
    poster.before_visit(customer_id)
    try:
        status, answer = client.request("POST", "/recommend", body)
    except OSError as error:
        status, answer = 0, f"{type(error).__name__}: {error}"
    result = poster.result
    if status != 200 or not isinstance(answer, dict):
        with poster.lock:
            result.visits += 1
            result.recommend_errors += 1
            _note(result, f"/recommend {status}: {str(answer)[:200]}")
        return
    shown = [str(item["product_id"]) for item in answer.get("items", [])]
    experiment = answer.get("experiment")
    key = (str(experiment["name"]), str(experiment["variant"])) if experiment else None
    choice = choose(preferences, customer, shown, rng)
    events = outcome_events(
        customer_id,
        choice,
        visit_key=f"sim-{seed}-{visit}",
        session_id=f"sim-{seed}-{customer_id}-{visit}",
    )
    with poster.lock:
        result.visits += 1
        if answer.get("fallback"):
            result.fallbacks[str(answer["fallback"])] += 1
        if key is None:
            result.outside_experiments += 1
        else:
            result.exposures[key] += 1
            result.customers[key].add(customer_id)
            result.clicks[key] += len(choice.clicked)
            result.carts[key] += len(choice.carted)
            result.purchases[key] += len(choice.bought)
            result.revenue[key] += sum(q * p for _, q, p in choice.bought)
    poster.add(customer_id, events)
