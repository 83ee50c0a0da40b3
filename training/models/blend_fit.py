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
segment starts from the global weights and its result is shrunk towards them by
``n / (n + min_customers)`` for its ``n`` customers; if the shrunk weights score below
the global ones on the segment, the segment keeps the global weights. Small segments
would otherwise get weights fitted to noise.

Repeat purchases (``repeat_model``, the buy-again model): on the main validation view
(new items only) that model cannot score anything, so its weight is held at 0 there and
fitted afterwards on a second view where repeats count (``repeats`` in :meth:`fit`): the
share ``s`` of the repeat model, the other weights scaled by ``1 - s``, chosen on a grid,
globally and per segment under the same minimum-data rule and shrinkage.

New products (``floor_model``, the new-arrivals model): a product launched after
training has no interactions, so only that model ranks it; a weight fitted to the average
customer may leave it too little to ever reach a list. Its weight is raised to a floor,
the largest of :data:`FLOORS` whose validation NDCG (of the whole per-segment blend) is
at least ``1 - floor_tolerance`` times the best floor's and no lower than the best single
model's; 0 when every positive floor costs more than that.

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
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

FLOORS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)  # new-product floors tried, in order


def ndcg_at_k(
    scores: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray, k: int
) -> np.ndarray:
    """NDCG@k per customer of ranking candidates by ``scores`` (customers, candidates):
    binary relevance, log2 discount, ideal over ``min(n_relevant, k)`` hits (relevant items
    outside the candidates still count in the ideal). Customers without relevant items: 0."""
    m = scores.shape[1]
    k = min(k, m)
    # Ties go to the lower candidate position, as in top_k.
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(relevant, top, axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal_hits = np.minimum(n_relevant, k).astype(int)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_hits]
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)


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
    repeat_model : int or None, default=None
        Column of the model whose weight is fitted on the ``repeats`` view only.
    floor_model : int or None, default=None
        Column of the new-products model whose weight gets the validated floor.
    floor_tolerance : float, default=0.02
        Share of validation NDCG a floor may cost (see the module docstring).
    """

    def __init__(
        self,
        *,
        k: int = 10,
        min_customers: int = 30,
        grid: int = 11,
        rounds: int = 3,
        max_seconds: float = 60.0,
        repeat_model: int | None = None,
        floor_model: int | None = None,
        floor_tolerance: float = 0.02,
    ) -> None:
        self.k = k
        self.min_customers = min_customers
        self.grid = grid
        self.rounds = rounds
        self.max_seconds = max_seconds
        self.repeat_model = repeat_model
        self.floor_model = floor_model
        self.floor_tolerance = floor_tolerance

    def _value(
        self, weights: np.ndarray, stack: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray
    ) -> float:
        """Mean NDCG@k of one weight vector (models,) or one per customer (customers, models)."""
        spec = "m,cmi->ci" if weights.ndim == 1 else "cm,cmi->ci"
        blended = np.einsum(spec, weights, stack)
        return float(ndcg_at_k(blended, relevant, n_relevant, self.k).mean())

    def _start(self, stack: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
        """The best of each single model and equal weights (first wins ties)."""
        n_models = stack.shape[1]
        searched = [m for m in range(n_models) if m != self.repeat_model]
        equal = np.zeros(n_models)
        equal[searched] = 1.0 / len(searched)
        starts = [np.eye(n_models)[m] for m in searched] + [equal]
        values = [self._value(w, stack, relevant, n_relevant) for w in starts]
        return starts[int(np.argmax(values))]

    def _search(
        self,
        stack: np.ndarray,
        relevant: np.ndarray,
        n_relevant: np.ndarray,
        deadline: float,
        start: np.ndarray,
    ) -> tuple[np.ndarray, float]:
        n_models = stack.shape[1]
        weights = start.copy()
        best = self._value(weights, stack, relevant, n_relevant)
        steps = np.linspace(0.0, 1.0, self.grid)
        for _ in range(self.rounds):
            improved = False
            for model in range(n_models):
                if model == self.repeat_model:
                    continue
                for step in steps:
                    if time.perf_counter() > deadline:
                        return weights, best
                    others = np.delete(weights, model)
                    if self.repeat_model is not None:
                        # The repeat model stays at 0 while the others share the rest.
                        held = self.repeat_model - (self.repeat_model > model)
                        others[held] = 0.0
                    total = others.sum()
                    if total > 0:
                        rest = others / total * (1 - step)
                    else:
                        fill = np.ones(n_models - 1)
                        if self.repeat_model is not None:
                            fill[self.repeat_model - (self.repeat_model > model)] = 0.0
                        rest = fill / max(fill.sum(), 1.0) * (1 - step)
                    trial = np.insert(rest, model, step)
                    score = self._value(trial, stack, relevant, n_relevant)
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
        for name in ("repeat_model", "floor_model"):
            column = getattr(self, name)
            if column is not None and not 0 <= column < stack.shape[1]:
                raise ValueError(f"{name} {column} is not a column of the stack")
        if not 0 <= self.floor_tolerance < 1:
            raise ValueError("floor_tolerance must be in [0, 1)")
        deadline = time.perf_counter() + self.max_seconds
        stack, relevant, n_relevant, segments = _with_relevant(
            stack, relevant, n_relevant, segments
        )
        self.single_ndcg_ = [
            round(self._value(np.eye(stack.shape[1])[m], stack, relevant, n_relevant), 5)
            for m in range(stack.shape[1])
        ]
        start = self._start(stack, relevant, n_relevant)
        self.global_weights_, self.global_ndcg_ = self._search(
            stack, relevant, n_relevant, deadline, start
        )
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
            part = stack[chosen], relevant[chosen], n_relevant[chosen]
            fitted, _ = self._search(*part, deadline, self.global_weights_)
            # Shrink towards the global weights by how much data the segment has: a segment
            # just over the minimum is mostly global, a large one mostly its own.
            share = chosen.sum() / (chosen.sum() + self.min_customers)
            final = share * fitted + (1 - share) * self.global_weights_
            value = self._value(final, *part)
            if value < self._value(self.global_weights_, *part):
                final, value = self.global_weights_, self._value(self.global_weights_, *part)
            weights.append(final)
            self.validation_ndcg_[int(segment)] = round(value, 4)
        self.segment_weights_ = np.vstack(weights) if weights else np.zeros((0, stack.shape[1]))
        self.repeat_share_: dict[str, float] = {}
        if self.repeat_model is not None and repeats is not None:
            self._fit_repeat_share(*repeats)
        self.new_product_floor_ = 0.0
        self.floor_ndcg_: dict[str, float] = {}
        if self.floor_model is not None:
            self._fit_floor(stack, relevant, n_relevant, segments)
        return self

    def _per_customer(self, segments: np.ndarray) -> np.ndarray:
        rows = {int(s): w for s, w in zip(self.segment_ids_, self.segment_weights_, strict=True)}
        return np.vstack([rows.get(int(s), self.global_weights_) for s in segments])

    def _fit_repeat_share(
        self, stack: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray, segments: np.ndarray
    ) -> None:
        """The repeat model's share, globally then per segment, on the repeats view."""
        stack, relevant, n_relevant, segments = _with_relevant(
            stack, relevant, n_relevant, segments
        )
        unit = np.eye(stack.shape[1])[self.repeat_model]
        steps = np.linspace(0.0, 1.0, self.grid)

        def best_share(base: np.ndarray, chosen: np.ndarray) -> float:
            part = stack[chosen], relevant[chosen], n_relevant[chosen]
            values = [self._value((1 - s) * base + s * unit, *part) for s in steps]
            return float(steps[int(np.argmax(values))])  # ties: the smallest share

        everyone = np.ones(len(stack), dtype=bool)
        overall = best_share(self.global_weights_, everyone)
        self.repeat_share_["global"] = overall
        for row, segment in enumerate(self.segment_ids_):
            chosen = segments == segment
            share = overall
            if int(segment) not in self.backed_off_ and chosen.sum() >= self.min_customers:
                own = best_share(self.segment_weights_[row], chosen)
                data_share = chosen.sum() / (chosen.sum() + self.min_customers)
                share = data_share * own + (1 - data_share) * overall
            self.repeat_share_[str(int(segment))] = round(share, 4)
            self.segment_weights_[row] = (1 - share) * self.segment_weights_[row] + share * unit
        self.global_weights_ = (1 - overall) * self.global_weights_ + overall * unit

    def _fit_floor(
        self, stack: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray, segments: np.ndarray
    ) -> None:
        """Raise the new-products model's weight to the largest floor validation allows."""
        column = self.floor_model
        assert column is not None
        best_single = max(self.single_ndcg_)
        values = {}
        for floor in FLOORS:
            per_customer = floored(self._per_customer(segments), column, floor)
            values[floor] = self._value(per_customer, stack, relevant, n_relevant)
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


def _with_relevant(
    stack: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray, segments: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The customers with at least one held-out item: the others cannot score NDCG."""
    keep = n_relevant > 0
    return stack[keep], relevant[keep], n_relevant[keep], np.asarray(segments)[keep]
