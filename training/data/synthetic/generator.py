"""Write a seeded synthetic storefront export as a raw dataset, plus its ground truth.

``generate`` is deterministic for a given (size, seed, end date): the same arguments
give byte-identical tables. Events are simulated in blocks of customers and appended,
so the ``large`` size (1M customers, ~12M events) runs in bounded memory.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from training.data.raw import RawDataset, RawTableWriter
from training.data.synthetic import mess
from training.data.synthetic.catalogue import (
    CATEGORIES,
    Catalogue,
    GroupSampler,
    catalogue_truth,
    make_catalogue,
)
from training.data.synthetic.personas import PERSONA_NAMES
from training.data.synthetic.population import Population, make_population
from training.data.synthetic.sessions import SessionSimulator
from training.data.synthetic.vocabulary import CITIES

GENERATOR_VERSION = "2"
HISTORY_DAYS = 540
CUSTOMERS_PER_BLOCK = 20_000
# Values added to the export after version 2 draw their mess from side streams
# ``default_rng([seed, stream])``, never from the main stream, so everything else a seed
# gives (customers, events, ...) stays byte-identical.
LAUNCH_STREAM = 1


@dataclass(frozen=True)
class SizeSpec:
    customers: int
    products: int


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(customers=400, products=150),
    "small": SizeSpec(customers=5_000, products=1_000),
    "medium": SizeSpec(customers=100_000, products=10_000),
    "large": SizeSpec(customers=1_000_000, products=50_000),
}
# Measured, seed 42: small writes 169,591 events for its 5,000 customers (tiny 14,424 for
# 400); sessions are simulated per customer, so events grow with customers alone.
EVENTS_PER_CUSTOMER = 34.0


def size_for_events(events: int) -> SizeSpec:
    """A size whose history holds about ``events`` events (within ~10%): customers at the
    generator's events per customer, products growing with customers as the named sizes
    do from small to large (products ~ customers ** 0.74).

    >>> size_for_events(170_000)
    SizeSpec(customers=5000, products=1000)
    """
    if events < 1000:
        raise ValueError(f"ask for at least 1000 events, got {events}")
    customers = max(100, round(events / EVENTS_PER_CUSTOMER))
    small, large = SIZES["small"], SIZES["large"]
    exponent = np.log(large.products / small.products) / np.log(large.customers / small.customers)
    products = round(small.products * (customers / small.customers) ** exponent)
    return SizeSpec(customers=customers, products=max(50, products))


@dataclass(frozen=True)
class MessRates:
    """How much of each kind of mess the raw export carries."""

    missing_birth_year: float = 0.10
    missing_gender: float = 0.06
    missing_city: float = 0.04
    missing_consent: float = 0.01
    missing_signup: float = 0.01
    category_respelled: float = 0.15
    brand_recased: float = 0.05
    missing_price: float = 0.02
    missing_launch: float = 0.02  # launch_ts blanked (drawn from the LAUNCH_STREAM side stream)
    product_price_outlier: float = 0.005
    duplicate_product_row: float = 0.005
    missing_title: float = 0.005
    float_customer_id: float = 0.03
    type_respelled: float = 0.02
    event_price_outlier: float = 0.002
    quantity_outlier: float = 0.001
    duplicate_event_row: float = 0.005
    invalid_type: float = 0.001
    missing_product_id: float = 0.0005
    unknown_product_id: float = 0.0005
    bad_timestamp: float = 0.0005
    bad_quantity: float = 0.0003


@dataclass(frozen=True)
class World:
    """What the generator draws before any event, first off its seeded stream: the
    catalogue and the people, with their hidden tastes (persona, category preferences,
    staples, activity window). ``rng`` is the stream after them, where :func:`generate`
    goes on to write tables and simulate events."""

    catalogue: Catalogue
    sampler: GroupSampler
    population: Population
    start: np.datetime64  # first second of the history window
    end: np.datetime64  # last second of the history window
    rng: np.random.Generator


def size_spec(size: str | SizeSpec) -> SizeSpec:
    """A named size, a :class:`SizeSpec`, or the ``"<customers>x<products>"`` that
    ``source.json`` records for a spec.

    >>> size_spec("tiny"), size_spec("1200x300")
    (SizeSpec(customers=400, products=150), SizeSpec(customers=1200, products=300))
    """
    if isinstance(size, SizeSpec):
        return size
    if size in SIZES:
        return SIZES[size]
    customers, _, products = size.partition("x")
    if customers.isdigit() and products.isdigit():
        return SizeSpec(customers=int(customers), products=int(products))
    raise ValueError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")


def replay_problem(source: Mapping[str, Any]) -> str | None:
    """Why the export described by ``source`` (its ``source.json``) cannot be replayed with
    :func:`replay`, or None when it can: only this generator's own output, at this version,
    with a known seed, size (named or ``"<customers>x<products>"``) and end.

    >>> replay_problem({"format": "synthetic", "seed": 1, "generator_version": GENERATOR_VERSION,
    ...                 "size": "1200x300"}) is None
    True
    >>> replay_problem({"format": "synthetic", "seed": 1, "generator_version": GENERATOR_VERSION,
    ...                 "size": "huge"})
    "unknown synthetic size 'huge'"
    """
    if source.get("format") != "synthetic" or source.get("seed") is None:
        return (
            f"the data came from a {source.get('format', 'unknown')!r} export, not the "
            "synthetic generator with a known seed"
        )
    if str(source.get("generator_version")) != GENERATOR_VERSION:
        return (
            f"generated by generator version {source.get('generator_version')}, this code is "
            f"version {GENERATOR_VERSION}"
        )
    try:
        size_spec(str(source.get("size")))
    except ValueError:
        return f"unknown synthetic size {source.get('size')!r}"
    return None


def replay(size: str | SizeSpec, seed: int, end: dt.date) -> World:
    """The catalogue and population :func:`generate` draws for these arguments, exactly
    (they come first off the seeded stream), without simulating a single event."""
    rng = np.random.default_rng(seed)
    end_ts = np.datetime64(dt.datetime.combine(end, dt.time(23, 59, 59)), "s")
    start_ts = end_ts - np.timedelta64(HISTORY_DAYS * 86400, "s")
    spec = size_spec(size)
    catalogue = make_catalogue(spec.products, rng, start_ts, end_ts)
    sampler = GroupSampler(catalogue)
    population = make_population(spec.customers, catalogue, sampler, rng, start_ts, end_ts)
    return World(catalogue, sampler, population, start_ts, end_ts, rng)


def matches_ground_truth(raw_dir: Path, world: World) -> bool:
    """Whether ``world`` is what made the export in ``raw_dir``: customer ids, personas,
    product ids and list prices agree with its ground-truth files (other generator code
    with the same seed would not)."""
    truth = pd.read_parquet(raw_dir / "ground_truth.parquet")
    products = pd.read_parquet(raw_dir / "ground_truth_products.parquet")
    catalogue, population = world.catalogue, world.population
    personas = np.array(PERSONA_NAMES)[population.persona]
    return bool(
        len(truth) == population.n
        and (truth["raw_customer_id"].to_numpy() == population.raw_ids).all()
        and (truth["persona"].to_numpy() == personas).all()
        and len(products) == catalogue.n
        and (products["product_id"].to_numpy() == catalogue.product_ids).all()
        and np.allclose(products["list_price"].to_numpy(), catalogue.price)
    )


@dataclass(frozen=True)
class GenerationSummary:
    directory: Path
    customers: int
    products: int
    events: int
    seconds: float


def generate(
    out_dir: Path,
    size: str | SizeSpec,
    seed: int,
    end: dt.date,
    rates: MessRates | None = None,
    progress: bool | None = None,
) -> GenerationSummary:
    """Generate the raw export for ``size`` (a named size, or a :class:`SizeSpec` such as
    :func:`size_for_events` gives) into ``out_dir`` and return what was written."""
    spec = size_spec(size)
    rates = rates or MessRates()
    started = time.perf_counter()
    world = replay(spec, seed, end)
    catalogue, sampler, pop, rng = world.catalogue, world.sampler, world.population, world.rng
    dataset = RawDataset(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    with RawTableWriter(out_dir, "products") as writer:
        launch_rng = np.random.default_rng([seed, LAUNCH_STREAM])
        writer.write(_raw_products(catalogue, rates, rng, launch_rng))
    with RawTableWriter(out_dir, "customers") as writer:
        writer.write(_raw_customers(pop, rates, rng))

    simulator = SessionSimulator(pop, catalogue, sampler)
    order = rng.permutation(pop.n)
    blocks = range(0, pop.n, CUSTOMERS_PER_BLOCK)
    with RawTableWriter(out_dir, "events") as writer:
        for block_start in tqdm(blocks, desc="events", unit="block", disable=progress is False):
            block = np.sort(order[block_start : block_start + CUSTOMERS_PER_BLOCK])
            events = simulator.simulate(block, rng)
            writer.write(_raw_events(events, pop, catalogue, rates, rng, writer.rows))
        n_events = writer.rows

    truth = pd.DataFrame(
        {
            "raw_customer_id": pop.raw_ids,
            "persona": np.array(PERSONA_NAMES)[pop.persona],
            "duplicate_of": np.where(pop.duplicate_of >= 0, pop.raw_ids[pop.duplicate_of], None),
            "household_of": np.where(pop.household_of >= 0, pop.raw_ids[pop.household_of], None),
        }
    )
    pq.write_table(
        pa.Table.from_pandas(truth, preserve_index=False), out_dir / "ground_truth.parquet"
    )
    pq.write_table(
        pa.Table.from_pandas(catalogue_truth(catalogue), preserve_index=False),
        out_dir / "ground_truth_products.parquet",
    )
    summary = GenerationSummary(
        out_dir, pop.n, catalogue.n, n_events, round(time.perf_counter() - started, 2)
    )
    dataset.write_meta(
        {
            "format": "synthetic",
            "generator_version": GENERATOR_VERSION,
            "size": size if isinstance(size, str) else f"{spec.customers}x{spec.products}",
            "seed": seed,
            "end": end.isoformat(),
            "dayfirst": True,
            "rows": {"customers": pop.n, "products": catalogue.n, "events": n_events},
            "seconds": summary.seconds,
        }
    )
    return summary


def _raw_products(
    catalogue: Catalogue,
    rates: MessRates,
    rng: np.random.Generator,
    launch_rng: np.random.Generator,
) -> pd.DataFrame:
    """The raw products; ``launch_ts`` (mixed formats, a share blanked) draws only from
    ``launch_rng``, so ``rng`` is consumed exactly as before launch dates were written."""
    n = catalogue.n
    price, _ = mess.inject_outliers(catalogue.price, rates.product_price_outlier, rng, 50, 200)
    price_text = np.array([f"{p:.2f}" for p in price], dtype=object)
    currency = rng.random(n) < 0.03
    price_text[currency] = np.array([f"£{p}" for p in price_text[currency]], dtype=object)
    price_text[rng.random(n) < rates.missing_price] = None
    brands = catalogue.brands.copy()
    recase = rng.random(n) < rates.brand_recased
    brands[recase] = np.array([b.upper() for b in brands[recase]], dtype=object)
    frame = pd.DataFrame(
        {
            "product_id": catalogue.product_ids,
            "title": mess.blank(catalogue.titles, rates.missing_title, rng),
            "description": catalogue.descriptions,
            "category": mess.respell_categories(
                np.array(CATEGORIES, dtype=object)[catalogue.category],
                rates.category_respelled,
                rng,
            ),
            "brand": brands,
            "price": price_text,
            "in_stock": mess.spell_booleans(catalogue.in_stock, rng),
            "tags": None,
            "launch_ts": mess.blank(
                mess.format_timestamps(catalogue.launch.astype(np.int64), launch_rng),
                rates.missing_launch,
                launch_rng,
            ),
            "_source": "products.parquet",
        }
    )
    # Duplicated rows are copies, launch_ts included, so they stay exact duplicates.
    dupes = frame[rng.random(n) < rates.duplicate_product_row]
    frame = pd.concat([frame, dupes]).sort_index(kind="stable", ignore_index=True)
    frame["_row"] = np.arange(1, len(frame) + 1)
    return frame


def _raw_customers(pop: Population, rates: MessRates, rng: np.random.Generator) -> pd.DataFrame:
    n = pop.n
    signup_s = pop.signup.astype(np.int64)
    consent = mess.spell_booleans(pop.consent_personalisation, rng)
    consent[rng.random(n) < rates.missing_consent] = None
    return pd.DataFrame(
        {
            "customer_id": pop.raw_ids,
            "signup_ts": mess.blank(
                mess.format_timestamps(signup_s, rng), rates.missing_signup, rng
            ),
            "name": np.array(
                [f"{f} {ln}" for f, ln in zip(pop.first_name, pop.last_name, strict=True)],
                dtype=object,
            ),
            "email": pop.email,
            "address": pop.address,
            "phone": pop.phone,
            "city": mess.blank(
                np.array([CITIES[c][1] for c in pop.city], dtype=object), rates.missing_city, rng
            ),
            "postcode": pop.postcode,
            "country": np.array([CITIES[c][0] for c in pop.city], dtype=object),
            "birth_year": mess.blank(pop.birth_year.astype(str), rates.missing_birth_year, rng),
            "gender": mess.blank(mess.respell_genders(pop.gender, rng), rates.missing_gender, rng),
            "occupation": pop.occupation,
            "consent_personalisation": consent,
            "consent_marketing": mess.spell_booleans(pop.consent_marketing, rng),
            "_source": "customers.parquet",
            "_row": np.arange(1, n + 1),
        }
    )


def _raw_events(
    events: pd.DataFrame,
    pop: Population,
    catalogue: Catalogue,
    rates: MessRates,
    rng: np.random.Generator,
    rows_before: int,
) -> pd.DataFrame:
    n = len(events)
    price, _ = mess.inject_outliers(
        events["price"].to_numpy(), rates.event_price_outlier, rng, 30, 150
    )
    quantity = events["quantity"].to_numpy().astype(np.int64)
    bulk = (rng.random(n) < rates.quantity_outlier) & (events["type"] == "purchase").to_numpy()
    quantity[bulk] = rng.integers(200, 1000, bulk.sum())
    value = events["value"].to_numpy().copy()
    purchase = (events["type"] == "purchase").to_numpy()
    value[purchase] = np.round(quantity[purchase] * price[purchase], 2)

    types = mess.respell_types(events["type"].to_numpy(), rates.type_respelled, rng)
    types[rng.random(n) < rates.invalid_type] = "clickk"
    product_ids = catalogue.product_ids[events["product"].to_numpy()].astype(object)
    product_ids[rng.random(n) < rates.missing_product_id] = None
    product_ids[rng.random(n) < rates.unknown_product_id] = "P-UNKNOWN"
    ts = mess.format_timestamps(events["ts"].to_numpy(), rng)
    ts[rng.random(n) < rates.bad_timestamp] = "31/02/2026 25:61:00"
    quantity_text = quantity.astype(str).astype(object)
    quantity_text[rng.random(n) < rates.bad_quantity] = "-1"

    def text(values: np.ndarray, fmt: str) -> np.ndarray:
        return np.array([None if np.isnan(v) else fmt.format(v) for v in values], dtype=object)

    session = events["session"].to_numpy()
    frame = pd.DataFrame(
        {
            "event_id": np.char.add("E", np.char.zfill(events["event"].to_numpy().astype(str), 10)),
            "customer_id": mess.floatify_ids(
                pop.raw_ids[events["customer"].to_numpy()], rates.float_customer_id, rng
            ),
            "product_id": product_ids,
            "ts": ts,
            "type": types,
            "quantity": quantity_text,
            "price": text(price, "{:.2f}"),
            "value": text(value, "{:g}"),
            "session_id": pd.Series(
                np.char.add("S", np.char.zfill(session.astype(str), 9)), dtype=object
            ).where(session > 0, None),
            "_source": "events.parquet",
        }
    ).astype({"event_id": object})
    dupes = frame[rng.random(n) < rates.duplicate_event_row]
    frame = pd.concat([frame, dupes]).sort_index(kind="stable", ignore_index=True)
    frame["_row"] = np.arange(rows_before + 1, rows_before + len(frame) + 1)
    return frame
