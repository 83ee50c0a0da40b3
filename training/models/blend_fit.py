"""Fitting blend weights per segment on a validation split, to maximise NDCG@k.

Search: coordinate ascent on the simplex. It starts from the best single model (or equal
weights when they score higher), so the fitted blend is never worse on validation than
the best single model. Each round tries, for every model in turn, each weight on a grid
(0, 1/(g-1), ..., 1) with the other weights rescaled to fill the rest, and keeps the
best; it stops after ``rounds`` rounds, when a round improves nothing, or when
``max_seconds`` is spent. Ties keep the current weights, so a model is only moved when
that measurably helps.

Minimum-data rule: a segment is fitted on its own only when it has at least
``min_customers`` validation customers with a held-out item; otherwise it uses the global
weights (fitted on every validation customer), and ``backed_off_`` says so. A fitted
segment's search starts from the global weights, and again from its best single model (or
equal weights) when it ends below that on the segment's customers; the result is shrunk
towards the global weights by ``n / (n + min_customers)`` for its ``n`` customers, since
small segments would otherwise get weights fitted to noise. If the shrunk weights score
below the segment's best single model, the unshrunk fit is kept; if below the global
weights, the global weights are. So before the new-product floor and the own-history
shares, no fitted segment scores below its best single model or the global weights on
validation.

Own-history models (``repeat_model``: the buy-again model, and the interest model of
viewed and carted items): on the main validation view (new items only) such a model
cannot score anything, so its weight is held at 0 there and fitted afterwards on a second
view where the customer's own items count (``repeats`` in :meth:`fit`, the view serving
shows: only purchases outside repeat categories are filtered): the shares ``s_j`` of those
models, the other weights scaled by ``1 - sum s_j``, chosen jointly on a grid, globally
and per segment under the same minimum-data rule and shrinkage.

New products (``floor_model``, the new-arrivals model): a product launched after
training has no interactions, so only that model ranks it; a weight fitted to the average
customer may leave it too little to ever reach a list. Its weight is raised to a floor,
the largest of :data:`FLOORS` whose validation NDCG (of the whole per-segment blend) is
at least ``1 - floor_tolerance`` times the best floor's and no lower than the best single
model's; 0 when every positive floor costs more than that. The floor is chosen before
the own-history shares are fitted (on the models that score new items) and applied again
after them, so the new-arrivals weight is at least the floor in every row.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> relevant = rng.random((60, 20)) < 0.1
>>> good = relevant + rng.random((60, 20)) * 0.5  # ranks relevant items first
>>> stack = np.stack([rng.random((60, 20)), good], axis=1)  # (customers, models, items)
>>> blender = SegmentBlender(min_customers=10).fit(
...     stack, relevant, relevant.sum(axis=1), np.zeros(60, dtype=int))
>>> blender.global_weights_.round(1).tolist()
[0.0, 1.0]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from training.models.validation_ndcg import PooledScores

FLOORS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)  # new-product floors tried, in order


class SegmentBlender(BaseEstimator):
    """Blend weights per segment (plus global), fitted to maximise mean NDCG@k.

    Parameters
    ----------
    k : int, default=10
    min_customers : int, default=30
        Validation customers (with a held-out item) a segment needs for its own weights.
    grid : int, default=11
        Points tried per weight (0 to 1).
    rounds : int, default=3
        Coordinate-ascent rounds at most.
    max_seconds : float, default=60
        Time budget for the whole fit; segments left when it runs out use global weights.
    repeat_model : int, sequence of int or None, default=None
        Column(s) of the models whose weights are fitted on the ``repeats`` view only, in
        this order.
    floor_model : int or None, default=None
        Column of the new-products model whose weight gets the validated floor.
    floor_tolerance : float, default=0.02
        Share of validation NDCG a floor may cost (see the module docstring).
    pools : sequence of int, default=(50, 400)
        Each model's best items per customer pooled for ranking, one nested level per size
        (:class:`~training.models.validation_ndcg.PooledScores`): exact, so they only set
        the speed; no pool on catalogues under twice the size.
    """

    def __init__(
        self,
        *,
        k: int = 10,
        min_customers: int = 30,
        grid: int = 11,
        rounds: int = 3,
        max_seconds: float = 60.0,
        repeat_model: int | Sequence[int] | None = None,
        floor_model: int | None = None,
        floor_tolerance: float = 0.02,
        pools: Sequence[int] = (50, 400),
    ) -> None:
        self.k = k
        self.min_customers = min_customers
        self.grid = grid
        self.rounds = rounds
        self.max_seconds = max_seconds
        self.repeat_model = repeat_model
        self.floor_model = floor_model
        self.floor_tolerance = floor_tolerance
        self.pools = pools

    def _repeat_columns(self) -> tuple[int, ...]:
        if self.repeat_model is None:
            return ()
        if isinstance(self.repeat_model, (int, np.integer)):
            return (int(self.repeat_model),)
        return tuple(int(c) for c in self.repeat_model)

    @staticmethod
    def _value(weights: np.ndarray, scored: PooledScores) -> float:
        """Mean NDCG@k of one weight vector (models,) or one per customer (customers, models)."""
        return float(scored.ndcg(weights).mean())

    def _with_relevant(
        self, stack: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray, segments: Any
    ) -> tuple[PooledScores, np.ndarray]:
        """The customers with at least one held-out item (the others cannot score NDCG),
        pooled for ranking, and their segments."""
        scored = PooledScores.build(stack, relevant, n_relevant, k=self.k, pools=self.pools)
        keep = n_relevant > 0
        segments = np.asarray(segments)
        if keep.all():
            return scored, segments
        return scored.subset(keep), segments[keep]

    def _start(self, scored: PooledScores) -> np.ndarray:
        """The best of each single model and equal weights (first wins ties)."""
        n_models = scored.scores.shape[1]
        held = self._repeat_columns()
        searched = [m for m in range(n_models) if m not in held]
        equal = np.zeros(n_models)
        equal[searched] = 1.0 / len(searched)
        starts = [np.eye(n_models)[m] for m in searched] + [equal]
        values = [self._value(w, scored) for w in starts]
        return starts[int(np.argmax(values))]

    def _search(
        self, scored: PooledScores, deadline: float, start: np.ndarray
    ) -> tuple[np.ndarray, float]:
        n_models = scored.scores.shape[1]
        held = np.zeros(n_models, dtype=bool)
        held[list(self._repeat_columns())] = True
        weights = start.copy()
        best = self._value(weights, scored)
        steps = np.linspace(0.0, 1.0, self.grid)
        for _ in range(self.rounds):
            improved = False
            for model in range(n_models):
                if held[model]:
                    continue
                # The own-history models stay at 0 while the others share the rest.
                free = np.delete(~held, model)
                for step in steps:
                    if time.perf_counter() > deadline:
                        return weights, best
                    others = np.delete(weights, model) * free
                    total = others.sum()
                    if total > 0:
                        rest = others / total * (1 - step)
                    else:
                        fill = free.astype(np.float64)
                        rest = fill / max(fill.sum(), 1.0) * (1 - step)
                    trial = np.insert(rest, model, step)
                    score = self._value(trial, scored)
                    if score > best + 1e-9:
                        best, weights, improved = score, trial, True
            if not improved:
                break
        return weights, best

    def fit(
        self,
        stack: np.ndarray,
        relevant: np.ndarray,
        n_relevant: np.ndarray,
        segments: np.ndarray,
        y: Any = None,
        *,
        repeats: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> SegmentBlender:
        """``stack``: normalised scores (customers, models, candidates); ``relevant``: bool
        (customers, candidates); ``n_relevant``: held-out items per customer; ``segments``:
        each customer's segment id. ``repeats``: the same four for the view where the
        ``repeat_model`` can score (repeat purchases allowed)."""
        if stack.ndim != 3 or relevant.shape != (stack.shape[0], stack.shape[2]):
            raise ValueError(
                f"stack must be (customers, models, candidates) and relevant (customers, "
                f"candidates); got {stack.shape} and {relevant.shape}"
            )
        if self.grid < 2 or self.k < 1:
            raise ValueError("grid must be at least 2 and k at least 1")
        columns = [("repeat_model", c) for c in self._repeat_columns()]
        if self.floor_model is not None:
            columns.append(("floor_model", self.floor_model))
        for name, column in columns:
            if not 0 <= column < stack.shape[1]:
                raise ValueError(f"{name} {column} is not a column of the stack")
        if not 0 <= self.floor_tolerance < 1:
            raise ValueError("floor_tolerance must be in [0, 1)")
        deadline = time.perf_counter() + self.max_seconds
        scored, segments = self._with_relevant(stack, relevant, n_relevant, segments)
        self.pooled_ = scored.pooled
        self.single_ndcg_ = [
            round(self._value(np.eye(stack.shape[1])[m], scored), 5) for m in range(stack.shape[1])
        ]
        start = self._start(scored)
        self.global_weights_, self.global_ndcg_ = self._search(scored, deadline, start)
        self.segment_ids_ = np.unique(segments)
        weights, self.validation_ndcg_, self.backed_off_, self.validation_customers_ = (
            [],
            {},
            [],
            {},
        )
        for segment in self.segment_ids_:
            chosen = segments == segment
            self.validation_customers_[int(segment)] = int(chosen.sum())
            if chosen.sum() < self.min_customers or time.perf_counter() > deadline:
                weights.append(self.global_weights_)
                self.backed_off_.append(int(segment))
                continue
            part = scored.subset(chosen)
            global_value = self._value(self.global_weights_, part)
            fitted, fitted_value = self._search(part, deadline, self.global_weights_)
            single = self._start(part)
            single_value = self._value(single, part)
            if fitted_value < single_value:
                # Coordinate ascent from the global weights can stall below a single
                # model of the segment: search again from that model.
                fitted, fitted_value = self._search(part, deadline, single)
            # Shrink towards the global weights by how much data the segment has: a segment
            # just over the minimum is mostly global, a large one mostly its own.
            share = chosen.sum() / (chosen.sum() + self.min_customers)
            final = share * fitted + (1 - share) * self.global_weights_
            value = self._value(final, part)
            if value < single_value:
                # Mixing in the global weights can bury a model whose scores separate by
                # little (new arrivals for trend followers): shrinking guards against
                # noise, not against what one model alone shows on the segment.
                final, value = fitted, fitted_value
            if value < global_value:
                final, value = self.global_weights_, global_value
            weights.append(final)
            self.validation_ndcg_[int(segment)] = round(value, 4)
        self.segment_weights_ = np.vstack(weights) if weights else np.zeros((0, stack.shape[1]))
        # The floor is chosen first, on the weights of the models that score new items;
        # the own-history shares scale every weight, so the floor is applied again after.
        self.new_product_floor_ = 0.0
        self.floor_ndcg_: dict[str, float] = {}
        if self.floor_model is not None:
            self._fit_floor(scored, segments)
        self.repeat_share_: dict[str, float] = {}
        if self.repeat_model is not None and repeats is not None:
            self._fit_repeat_share(*repeats)
            if self.floor_model is not None:
                floor = self.new_product_floor_
                self.global_weights_ = floored(self.global_weights_, self.floor_model, floor)
                self.segment_weights_ = floored(self.segment_weights_, self.floor_model, floor)
        return self

    def _per_customer(self, segments: np.ndarray) -> np.ndarray:
        rows = {int(s): w for s, w in zip(self.segment_ids_, self.segment_weights_, strict=True)}
        return np.vstack([rows.get(int(s), self.global_weights_) for s in segments])

    def _fit_repeat_share(
        self, stack: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray, segments: np.ndarray
    ) -> None:
        """The own-history models' shares, globally then per segment, on the repeats view:
        every combination of grid shares summing to at most 1 is tried jointly (ties: the
        smallest total share). ``repeat_share_`` holds the first model's share under
        ``global`` and each segment id, a later model's under ``<column>:<key>``."""
        scored, segments = self._with_relevant(stack, relevant, n_relevant, segments)
        columns = self._repeat_columns()
        units = np.eye(stack.shape[1])[list(columns)]
        steps = np.linspace(0.0, 1.0, self.grid)
        combos = [np.array(c) for c in product(steps, repeat=len(columns)) if sum(c) <= 1 + 1e-9]
        combos.sort(key=lambda c: (round(float(c.sum()), 9), tuple(c)))

        def mixed(base: np.ndarray, shares: np.ndarray) -> np.ndarray:
            return (1 - shares.sum()) * base + shares @ units

        def best_shares(base: np.ndarray, part: PooledScores) -> np.ndarray:
            values = [self._value(mixed(base, c), part) for c in combos]
            return combos[int(np.argmax(values))]

        def record(key: str, shares: np.ndarray) -> None:
            for position, (column, share) in enumerate(zip(columns, shares, strict=True)):
                prefix = "" if position == 0 else f"{column}:"
                self.repeat_share_[f"{prefix}{key}"] = round(float(share), 4)

        overall = best_shares(self.global_weights_, scored)
        record("global", overall)
        for row, segment in enumerate(self.segment_ids_):
            chosen = segments == segment
            shares = overall
            if int(segment) not in self.backed_off_ and chosen.sum() >= self.min_customers:
                own = best_shares(self.segment_weights_[row], scored.subset(chosen))
                data_share = chosen.sum() / (chosen.sum() + self.min_customers)
                shares = data_share * own + (1 - data_share) * overall
            record(str(int(segment)), shares)
            self.segment_weights_[row] = mixed(self.segment_weights_[row], shares)
        self.global_weights_ = mixed(self.global_weights_, overall)

    def _fit_floor(self, scored: PooledScores, segments: np.ndarray) -> None:
        """Raise the new-products model's weight to the largest floor validation allows."""
        column = self.floor_model
        assert column is not None
        best_single = max(self.single_ndcg_)
        values = {}
        for floor in FLOORS:
            per_customer = floored(self._per_customer(segments), column, floor)
            values[floor] = self._value(per_customer, scored)
        self.floor_ndcg_ = {str(f): round(v, 5) for f, v in values.items()}
        best = max(values.values())
        allowed = [
            f
            for f, v in values.items()
            if v >= (1 - self.floor_tolerance) * best and v >= best_single - 1e-12
        ]
        self.new_product_floor_ = max(allowed, default=0.0)
        self.global_weights_ = floored(self.global_weights_, column, self.new_product_floor_)
        self.segment_weights_ = floored(self.segment_weights_, column, self.new_product_floor_)


def floored(weights: np.ndarray, column: int, floor: float) -> np.ndarray:
    """Weights (..., models) with ``column`` raised to at least ``floor``, the others scaled
    to keep the sum; rows already at or above the floor are unchanged.

    >>> floored(np.array([0.5, 0.5, 0.0]), 2, 0.2).round(2).tolist()
    [0.4, 0.4, 0.2]
    """
    weights = np.array(weights, dtype=np.float64)
    low = weights[..., column] < floor
    others = weights[low].copy()
    others[..., column] = 0.0
    total = others.sum(axis=-1, keepdims=True)
    scaled = others / np.where(total > 0, total, 1.0) * (1 - floor)
    scaled[..., column] = floor
    weights[low] = scaled
    return weights


def sample_customers(
    groups: np.ndarray, max_customers: int, *, min_per_group: int, random_state: Any = None
) -> np.ndarray:
    """Sorted positions of at most ``max_customers`` customers, drawn without replacement
    within each of their ``groups`` (all of them when there are no more than that).

    Every group keeps ``min(its size, min_per_group)`` customers (an equal share of
    ``max_customers`` when the groups together would need more), so a group the
    minimum-data rule would fit on its own stays fitted; the others are represented in
    proportion to their size (largest remainders).

    >>> groups = np.repeat([0, 1, 2], [600, 300, 10])
    >>> chosen = sample_customers(groups, 100, min_per_group=20, random_state=0)
    >>> np.bincount(groups[chosen]).tolist()
    [60, 30, 10]
    """
    groups = np.asarray(groups)
    if max_customers < 0:
        raise ValueError(f"max_customers must be at least 0, got {max_customers}")
    if len(groups) <= max_customers:
        return np.arange(len(groups))
    _, member_of, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    counts = _allocate(sizes, max_customers, min_per_group)
    rng = np.random.default_rng(random_state)
    chosen = [
        rng.choice(np.flatnonzero(member_of == group), size=count, replace=False)
        for group, count in enumerate(counts)
    ]
    return np.sort(np.concatenate(chosen))


def _allocate(sizes: np.ndarray, total: int, minimum: int) -> np.ndarray:
    """Customers drawn per group (``sizes.sum() > total``): the floors first, smallest
    groups first, then ``total`` shared in proportion to size, no group below its floor."""
    floors = np.zeros(len(sizes), dtype=np.int64)
    left = total
    for position, group in enumerate(np.argsort(sizes, kind="stable")):
        floors[group] = min(sizes[group], minimum, left // (len(sizes) - position))
        left -= floors[group]
    # Groups whose proportional share is below their floor get the floor; the others
    # share the rest in proportion to their size.
    fixed = np.zeros(len(sizes), dtype=bool)
    while True:
        free = total - floors[fixed].sum()
        share = free * sizes / sizes[~fixed].sum()
        below = ~fixed & (share < floors)
        if not below.any():
            break
        fixed |= below
    counts = np.where(fixed, floors, np.floor(share).astype(np.int64))
    remainder = np.where(fixed, -1.0, share - counts)
    counts[np.argsort(-remainder, kind="stable")[: free - counts[~fixed].sum()]] += 1
    return counts
