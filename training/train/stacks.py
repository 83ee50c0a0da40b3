"""The models of a training run, and their scores for many customers at once.

A *stack* holds, for each customer, every model's normalised scores over the catalogue:
shape (customers, models, items). Blend fitting and evaluation both rank from it, so
every model and the blend are judged on exactly the same customers and candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segrec.blend import normalise
from segrec.settings import Settings
from training.models.als import ALS
from training.models.base import Recommender
from training.models.buy_again import BuyAgain
from training.models.category_popularity import CategoryPopularity
from training.models.content import Content
from training.models.interactions import Interactions
from training.models.interest import Interest
from training.models.new_arrivals import NewArrivals
from training.models.popularity import Popularity
from training.models.svd import SVD
from training.models.view_mixture import ViewMixture

EXCLUDED = -1.0  # below any normalised (0..1) or blended score


def make_models(
    settings: Settings, params: dict[str, dict[str, Any]] | None = None
) -> dict[str, Recommender]:
    """Every model the blend chooses from, by name (seeded), with ``params`` (from the
    hyperparameter search) set on the models they name."""
    models: dict[str, Recommender] = {
        "popularity": Popularity(),
        "segment_popularity": Popularity(by_segment=True),
        "trending": Popularity(half_life_days=settings.trending_half_life_days),
        "category_popularity": CategoryPopularity(),
        "buy_again": BuyAgain(),
        "interest": Interest(half_life_days=settings.interest_half_life_days),
        "svd": SVD(random_state=settings.seed),
        "als": ALS(random_state=settings.seed),
        "content": Content(random_state=settings.seed),
        "new_arrivals": NewArrivals(half_life_days=settings.new_arrivals_half_life_days),
        "view_mixture": ViewMixture(
            holdout_days=settings.eval_validation_days, horizon_days=settings.eval_test_days
        ),
    }
    for name, chosen in (params or {}).items():
        models[name].set_params(**chosen)
    return models


def fit_models(models: dict[str, Recommender], data: Interactions) -> dict[str, Recommender]:
    for model in models.values():
        model.fit(data)
    return models


def score_stack(
    models: dict[str, Recommender],
    data: Interactions,
    customers: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised scores (customers, models, items) of customer indices (-1 = unknown),
    written into ``out`` when given (e.g. rows of a larger stack). Items not ``listed``
    in ``data``'s catalogue are EXCLUDED for every model: no ranking may hold them."""
    shape = (len(customers), len(models), data.n_items)
    if out is not None and out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    stack = np.empty(shape) if out is None else out
    unlisted = None if data.listed is None or data.listed.all() else ~data.listed
    for row, customer in enumerate(customers):
        raw = np.vstack([model.score(int(customer)) for model in models.values()])
        if unlisted is not None:
            # Scaled among the candidates only, as serving scales its catalogue.
            raw[:, unlisted] = np.nan
        stack[row] = normalise(raw)
        if unlisted is not None:
            stack[row][:, unlisted] = EXCLUDED
    return stack


def chunk_rows(settings: Settings, n_models: int, n_items: int) -> int:
    """Customers per chunk of a score stack: as many as fit ``settings.stack_chunk_mb``."""
    per_customer = max(n_models * n_items * 8, 1)
    return max(1, int(settings.stack_chunk_mb * 2**20 // per_customer))


def seen_mask(data: Interactions, customers: np.ndarray) -> np.ndarray:
    """(customers, items): items each customer interacted with in training."""
    mask = np.zeros((len(customers), data.n_items), dtype=bool)
    for row, customer in enumerate(customers):
        if customer >= 0:
            mask[row, data.items_of(int(customer))] = True
    return mask


def relevant_mask(held: list[np.ndarray], n_items: int) -> np.ndarray:
    mask = np.zeros((len(held), n_items), dtype=bool)
    for row, items in enumerate(held):
        mask[row, items] = True
    return mask


def exclude(stack: np.ndarray, mask: np.ndarray, *, copy: bool = True) -> np.ndarray:
    """The stack with masked items pushed below everything for every model; ``copy=False``
    changes ``stack`` itself (a large stack need not be held twice)."""
    if copy:
        return np.where(mask[:, None, :], EXCLUDED, stack)
    np.copyto(stack, EXCLUDED, where=mask[:, None, :])
    return stack
