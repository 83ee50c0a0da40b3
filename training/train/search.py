"""A small, time-boxed hyperparameter search for ALS, SVD, the category-popularity taste
estimate and the new-arrivals half-life, on validation only.

Each candidate is fitted on the validation protocol's training side and scored by mean
NDCG@k over the validation customers (new items only, as the blend is). Candidates are
tried in a fixed, seeded order until ``max_trials`` per model, the grid or ``max_seconds``
runs out; the defaults are always tried first, so the search can only keep or improve on
them. The trial count is what bounds it on a normal run, so two runs on the same data
pick the same parameters whatever the machine's load; the seconds are a safety cap (the
report says when it cut a search short). Every trial is recorded for the report.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone

from training.models.base import Recommender
from training.models.interactions import EventWeights, Interactions
from training.models.validation_ndcg import ndcg_at_k
from training.train.stacks import exclude, score_stack, seen_mask

VIEWS_ONLY = EventWeights(add_to_cart=0.0, purchase=0.0, rating=0.0)

GRIDS: dict[str, dict[str, list[Any]]] = {
    # Cheap (no factorisation), so first: the other models share what they leave.
    # A customer's taste for categories and price bands may be read best from views
    # alone, each an independent look, over all their history: carts and purchases
    # follow views, so counting them again weighs the same look twice.
    "category_popularity": {
        "event_weights": [EventWeights(), VIEWS_ONLY],
        "affinity_half_life_days": [90.0, 3650.0],
        "prior_strength": [5.0, 2.0],
    },
    "new_arrivals": {"half_life_days": [21.0, 7.0, 60.0]},
    "als": {
        "embedding_size": [64, 32, 128],
        "reg": [0.05, 0.5, 5.0],
        "alpha": [2.0, 10.0],
        "weighting": ["none", "bm25"],
    },
    "svd": {
        "embedding_size": [32, 16],
        "reg": [0.02, 0.1],
        "epochs": [20, 40],
    },
}


@dataclass
class SearchResult:
    best: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> params
    trials: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0
    cut_short: list[str] = field(default_factory=list)  # models the time cap stopped
    customers: dict[str, int] = field(default_factory=dict)  # scored, and of how many


def _candidates(grid: dict[str, list[Any]], seed: int) -> list[dict[str, Any]]:
    names = list(grid)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]
    first, rest = combos[0], combos[1:]  # the first values are the defaults
    order = np.random.default_rng(seed).permutation(len(rest))
    return [first, *(rest[i] for i in order)]


def search(
    models: dict[str, Recommender],
    data: Interactions,
    customers: np.ndarray,
    relevant: np.ndarray,
    n_relevant: np.ndarray,
    *,
    k: int,
    seed: int,
    max_seconds: float,
    max_trials: int,
) -> SearchResult:
    """Best parameters per searched model; ``models`` are not changed."""
    started = time.perf_counter()
    deadline = started + max_seconds
    result = SearchResult()
    seen = seen_mask(data, customers)
    searched = [name for name in GRIDS if name in models]
    for position, name in enumerate(searched):
        grid = GRIDS[name]
        # An equal share of the time left, so a model that finishes early leaves its
        # unused time to the next ones.
        per_model = (deadline - time.perf_counter()) / (len(searched) - position)
        model_deadline = min(deadline, time.perf_counter() + per_model)
        trials: list[dict[str, Any]] = []
        for params in _candidates(grid, seed)[:max_trials]:
            if trials and time.perf_counter() > model_deadline:
                result.cut_short.append(name)
                break
            candidate = clone(models[name]).set_params(**params)
            fit_started = time.perf_counter()
            candidate.fit(data)
            stack = exclude(score_stack({name: candidate}, data, customers), seen)
            score = float(ndcg_at_k(stack[:, 0], relevant, n_relevant, k).mean())
            trials.append(
                {
                    "params": params,
                    "ndcg": round(score, 5),
                    "seconds": round(time.perf_counter() - fit_started, 2),
                }
            )
        result.trials[name] = trials
        result.best[name] = max(trials, key=lambda t: t["ndcg"])["params"]
    result.seconds = round(time.perf_counter() - started, 2)
    return result
