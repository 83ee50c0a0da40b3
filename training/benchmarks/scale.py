"""Scale benchmark: per-request scoring time by catalogue size and factor size.

For each catalogue size and factor size, seeded synthetic arrays shaped like an exported
bundle (float64, as :class:`serving.engine.RecommendationEngine` holds them): popularity
(global and per segment), SVD (item factors and biases), ALS (item factors, Gramian) and
content (unit item vectors of the same dimension). Each timed request is what the engine
does for one customer after the feature read: build the :class:`~segrec.scoring.CustomerState`
from the customer's recent events, score every item with each model through
:func:`segrec.scoring.score_candidates` (SVD from stored customer factors, ALS folded in
from the events as for a live session, content from the events' profile), normalise and
blend (:mod:`segrec.blend`), then take the best ``4 k`` (:func:`segrec.scoring.top_k`;
the engine diversifies those down to ``k``). The lower bound is the least any exhaustive
scorer does on the same arrays: one matrix-vector product and an ``argpartition``.

Per configuration, ``repeats`` runs of up to ``requests`` requests each (fewer on large
catalogues, to keep a run near ``seconds_per_run``); each figure is the median over runs
of the per-run percentile, with min and max. Growth in catalogue size is fitted per factor
size (:mod:`training.benchmarks.growth`). The catalogue size at which p99 reaches the
request budget (``Settings.bench_request_budget_ms``), from the growth between the
measured catalogues around it, is where exhaustive scoring stops fitting in one request:
past it, candidates must come from approximate nearest-neighbour retrieval (scoring a few
thousand candidates instead of the catalogue).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from segrec.blend import blend, normalise
from segrec.scoring import EVENT_TYPES, CustomerState, score_candidates, top_k, unit_rows
from training.benchmarks.growth import crossing, fit_growth, spread

CATALOGUES = (10_000, 100_000, 1_000_000)
FACTORS = (32, 64, 128)
SEGMENTS = 6
K = 10
MODELS = ("popularity", "svd", "als", "content")
STAGES = (*MODELS, "blend", "top_k")
WARMUP_REQUESTS = 3


@dataclass(frozen=True)
class Catalogue:
    """Exported-shaped arrays for ``items`` products and ``factors`` latent dimensions."""

    items: int
    factors: int
    arrays: dict[str, dict[str, np.ndarray]]


def make_catalogue(items: int, factors: int, seed: int) -> Catalogue:
    """Seeded arrays with the keys :mod:`segrec.scoring` reads, popularity long-tailed."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    rng.shuffle(popularity)
    segment_scores = popularity * rng.gamma(2.0, 0.5, size=(SEGMENTS, items))
    event_weights = np.array([1.0, 3.0, 5.0, 0.0, 0.0])
    als_factors = rng.standard_normal((items, factors)) * 0.1
    return Catalogue(
        items,
        factors,
        {
            "popularity": {"item_scores": popularity, "segment_scores": segment_scores},
            "svd": {
                "item_factors": rng.standard_normal((items, factors)) * 0.1,
                "item_bias": rng.standard_normal(items) * 0.1,
                "global_mean": np.asarray(3.5),
            },
            "als": {
                "item_factors": als_factors,
                "gramian": als_factors.T @ als_factors,
                "reg": np.asarray(0.05),
                "alpha": np.asarray(2.0),
                "event_weights": event_weights,
                "half_life_days": np.asarray(np.nan),
                "weighting": np.asarray("none"),
                "bm25_item_norm": np.ones(items),
                "bm25_k1": np.asarray(100.0),
            },
            "content": {
                "item_vectors": unit_rows(rng.standard_normal((items, factors))),
                "event_weights": event_weights,
                "half_life_days": np.asarray(90.0),
            },
        },
    )


@dataclass(frozen=True)
class Customer:
    """One request's inputs: recent events, segment and the stored SVD row."""

    items: np.ndarray
    types: np.ndarray
    age_days: np.ndarray
    segment: int
    svd_factors: np.ndarray
    svd_bias: np.ndarray


def make_customers(catalogue: Catalogue, count: int, events: int, seed: int) -> list[Customer]:
    rng = np.random.default_rng(seed + 1)
    kinds = [EVENT_TYPES.index(t) for t in ("view", "add_to_cart", "purchase")]
    return [
        Customer(
            items=rng.integers(0, catalogue.items, events),
            types=rng.choice(kinds, events, p=[0.8, 0.12, 0.08]),
            age_days=rng.exponential(30.0, events),
            segment=int(rng.integers(0, SEGMENTS)),
            svd_factors=rng.standard_normal(catalogue.factors) * 0.1,
            svd_bias=np.asarray(rng.standard_normal() * 0.1),
        )
        for _ in range(count)
    ]


def score_request(catalogue: Catalogue, customer: Customer, laps: dict[str, float]) -> np.ndarray:
    """The engine's scoring of one request; adds each stage's seconds to ``laps``."""
    arrays = catalogue.arrays
    clock = time.perf_counter()
    state = CustomerState(
        items=customer.items,
        types=customer.types,
        age_days=customer.age_days,
        segment=customer.segment,
    )
    features: dict[str, dict[str, np.ndarray]] = {
        "svd": {"user_factors": customer.svd_factors, "user_bias": customer.svd_bias},
    }
    rows = []
    for model in MODELS:
        rows.append(
            score_candidates(model, arrays[model], state.with_features(features.get(model, {})))
        )
        now = time.perf_counter()
        laps[model] += now - clock
        clock = now
    weights = np.full(len(MODELS), 1.0 / len(MODELS))
    total, _ = blend(normalise(np.vstack(rows)), weights)
    now = time.perf_counter()
    laps["blend"] += now - clock
    best, _ = top_k(total, 4 * K)
    laps["top_k"] += time.perf_counter() - now
    return best


def numpy_bound(catalogue: Catalogue, customer: Customer) -> np.ndarray:
    """The least exhaustive scoring can do: one matrix-vector product, one partition."""
    scores = catalogue.arrays["svd"]["item_factors"] @ customer.svd_factors
    return np.argpartition(scores, -4 * K)[-4 * K :]


def _timed_run(call: Callable[[Customer], Any], customers: Sequence[Customer]) -> list[float]:
    times = []
    for customer in customers:
        started = time.perf_counter()
        call(customer)
        times.append(time.perf_counter() - started)
    return times


def _ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


def measure_cell(
    items: int,
    factors: int,
    *,
    seed: int,
    history_events: int,
    repeats: int,
    requests: int,
    seconds_per_run: float,
) -> dict[str, Any]:
    """Per-request times (ms) for one catalogue: the request, each stage, the bound."""
    catalogue = make_catalogue(items, factors, seed)
    customers = make_customers(catalogue, requests, history_events, seed)
    laps = dict.fromkeys(STAGES, 0.0)
    for customer in customers[:WARMUP_REQUESTS]:
        score_request(catalogue, customer, laps)
        numpy_bound(catalogue, customer)
    started = time.perf_counter()
    score_request(catalogue, customers[0], laps)
    estimate = time.perf_counter() - started
    # Enough requests for a p99 on small catalogues, a bounded run on large ones.
    per_run = int(min(requests, max(5, seconds_per_run / max(estimate, 1e-6))))
    runs: dict[str, list[float]] = {
        key: [] for key in ("p50", "p99", "bound_p50", "bound_p99", *STAGES)
    }
    for _ in range(repeats):
        laps = dict.fromkeys(STAGES, 0.0)
        chosen = customers[:per_run]
        gc.collect()
        request = _timed_run(partial(score_request, catalogue, laps=laps), chosen)
        bound = _timed_run(lambda c: numpy_bound(catalogue, c), chosen)
        runs["p50"].append(_ms(request, 50))
        runs["p99"].append(_ms(request, 99))
        runs["bound_p50"].append(_ms(bound, 50))
        runs["bound_p99"].append(_ms(bound, 99))
        for stage in STAGES:
            runs[stage].append(laps[stage] * 1000 / len(chosen))
    request_ms = {"p50": spread(runs["p50"]), "p99": spread(runs["p99"])}
    bound_ms = {"p50": spread(runs["bound_p50"]), "p99": spread(runs["bound_p99"])}
    return {
        "items": items,
        "factors": factors,
        "requests_per_run": per_run,
        "request_ms": request_ms,
        "stages_mean_ms": {stage: spread(runs[stage]) for stage in STAGES},
        "numpy_bound_ms": bound_ms,
        "ratio_to_bound": round(request_ms["p50"]["median"] / bound_ms["p50"]["median"], 1),
        "array_mb": round(
            sum(a.nbytes for group in catalogue.arrays.values() for a in group.values()) / 2**20
        ),
    }


def ann_thresholds(cells: Sequence[dict[str, Any]], budget_ms: float) -> dict[str, Any]:
    """Per factor size: growth fits of the request and the bound in catalogue size (over
    every catalogue), and the catalogue size at which each one's p99 reaches
    ``budget_ms`` (from the growth between the catalogues around it)."""
    out: dict[str, Any] = {}
    for factors in sorted({c["factors"] for c in cells}):
        mine = sorted((c for c in cells if c["factors"] == factors), key=lambda c: c["items"])
        if len({c["items"] for c in mine}) < 2:
            continue
        sizes = [c["items"] for c in mine]
        request_p99 = [c["request_ms"]["p99"]["median"] for c in mine]
        bound_p99 = [c["numpy_bound_ms"]["p99"]["median"] for c in mine]
        request_p50 = [c["request_ms"]["p50"]["median"] for c in mine]
        out[str(factors)] = {
            "request_p99_growth": fit_growth(sizes, request_p99).as_dict(),
            "request_p50_growth": fit_growth(sizes, request_p50).as_dict(),
            "numpy_bound_p99_growth": fit_growth(sizes, bound_p99).as_dict(),
            "exhaustive_max_items": _whole(crossing(sizes, request_p99, budget_ms)),
            "numpy_bound_max_items": _whole(crossing(sizes, bound_p99, budget_ms)),
            # Past the largest catalogue measured the figure is an extrapolation.
            "within_measured": min(sizes) <= crossing(sizes, request_p99, budget_ms) <= max(sizes),
        }
    return out


def _whole(size: float) -> int | None:
    return None if not np.isfinite(size) else int(round(size, -2))


def run_scale_benchmark(
    catalogues: Sequence[int] = CATALOGUES,
    factors: Sequence[int] = FACTORS,
    *,
    budget_ms: float,
    history_events: int,
    seed: int = 42,
    repeats: int = 3,
    requests: int = 200,
    seconds_per_run: float = 2.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every (catalogue, factor) cell, one thread (as one serving worker computes), and
    the ANN thresholds."""
    cells = []
    with threadpool_limits(limits=1):
        for items in catalogues:
            for size in factors:
                if progress:
                    progress(f"scale: {items:,} items x {size} factors")
                cells.append(
                    measure_cell(
                        items,
                        size,
                        seed=seed,
                        history_events=history_events,
                        repeats=repeats,
                        requests=requests,
                        seconds_per_run=seconds_per_run,
                    )
                )
                gc.collect()
    thresholds = ann_thresholds(cells, budget_ms)
    limits = [t["exhaustive_max_items"] for t in thresholds.values()]
    return {
        "budget_ms": budget_ms,
        "history_events": history_events,
        "k": K,
        "candidates_ranked": 4 * K,
        "models": list(MODELS),
        "seed": seed,
        "repeats": repeats,
        "threads": 1,
        "cells": cells,
        "growth": thresholds,
        "ann_needed_above_items": min((x for x in limits if x is not None), default=None),
    }
