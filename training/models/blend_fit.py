"""Fitting blend weights per segment on a validation split, to maximise NDCG@k.

Search: coordinate ascent on the simplex. Starting from equal weights, each round tries,
for every model in turn, each weight on a grid (0, 1/(g-1), ..., 1) with the other
weights rescaled to fill the rest, and keeps the best; it stops after ``rounds`` rounds,
when a round improves nothing, or when ``max_seconds`` is spent. Ties keep the current
weights, so a model is only moved when that measurably helps.

Minimum-data rule: a segment is fitted on its own only when it has at least
``min_customers`` validation customers with a held-out item; otherwise it uses the global
weights (fitted on every validation customer), and ``backed_off_`` says so. A fitted
segment starts from the global weights and its result is shrunk towards them by
``n / (n + min_customers)`` for its ``n`` customers. Small segments would otherwise get
weights fitted to noise.

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
    """

    def __init__(
        self,
        *,
        k: int = 10,
        min_customers: int = 30,
        grid: int = 11,
        rounds: int = 3,
        max_seconds: float = 60.0,
    ) -> None:
        self.k = k
        self.min_customers = min_customers
        self.grid = grid
        self.rounds = rounds
        self.max_seconds = max_seconds

    def _search(
        self,
        stack: np.ndarray,
        relevant: np.ndarray,
        n_relevant: np.ndarray,
        deadline: float,
        start: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float]:
        n_models = stack.shape[1]
        weights = np.full(n_models, 1.0 / n_models) if start is None else start.copy()

        def value(w: np.ndarray) -> float:
            return float(
                ndcg_at_k(np.einsum("m,cmi->ci", w, stack), relevant, n_relevant, self.k).mean()
            )

        best = value(weights)
        steps = np.linspace(0.0, 1.0, self.grid)
        for _ in range(self.rounds):
            improved = False
            for model in range(n_models):
                for step in steps:
                    if time.perf_counter() > deadline:
                        return weights, best
                    others = np.delete(weights, model)
                    total = others.sum()
                    rest = (
                        others / total * (1 - step)
                        if total > 0
                        else np.full(n_models - 1, (1 - step) / max(n_models - 1, 1))
                    )
                    trial = np.insert(rest, model, step)
                    score = value(trial)
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
    ) -> SegmentBlender:
        """``stack``: normalised scores (customers, models, candidates); ``relevant``: bool
        (customers, candidates); ``n_relevant``: held-out items per customer; ``segments``:
        each customer's segment id."""
        if stack.ndim != 3 or relevant.shape != (stack.shape[0], stack.shape[2]):
            raise ValueError(
                f"stack must be (customers, models, candidates) and relevant (customers, "
                f"candidates); got {stack.shape} and {relevant.shape}"
            )
        if self.grid < 2 or self.k < 1:
            raise ValueError("grid must be at least 2 and k at least 1")
        deadline = time.perf_counter() + self.max_seconds
        has_relevant = n_relevant > 0
        self.global_weights_, self.global_ndcg_ = self._search(
            stack[has_relevant], relevant[has_relevant], n_relevant[has_relevant], deadline
        )
        self.segment_ids_ = np.unique(segments)
        weights, self.validation_ndcg_, self.backed_off_, self.validation_customers_ = (
            [],
            {},
            [],
            {},
        )
        for segment in self.segment_ids_:
            chosen = (segments == segment) & has_relevant
            self.validation_customers_[int(segment)] = int(chosen.sum())
            if chosen.sum() < self.min_customers or time.perf_counter() > deadline:
                weights.append(self.global_weights_)
                self.backed_off_.append(int(segment))
                continue
            fitted, _ = self._search(
                stack[chosen], relevant[chosen], n_relevant[chosen], deadline, self.global_weights_
            )
            # Shrink towards the global weights by how much data the segment has: a segment
            # just over the minimum is mostly global, a large one mostly its own.
            share = chosen.sum() / (chosen.sum() + self.min_customers)
            final = share * fitted + (1 - share) * self.global_weights_
            weights.append(final)
            self.validation_ndcg_[int(segment)] = round(
                float(
                    ndcg_at_k(
                        np.einsum("m,cmi->ci", final, stack[chosen]),
                        relevant[chosen],
                        n_relevant[chosen],
                        self.k,
                    ).mean()
                ),
                4,
            )
        self.segment_weights_ = np.vstack(weights) if weights else np.zeros((0, stack.shape[1]))
        return self
