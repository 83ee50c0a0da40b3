"""Popularity: global, per segment, and trending. The baseline and the cold-start fallback."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils import check_scalar

from training.models.base import Recommender
from training.models.interactions import EventWeights, Interactions


class Popularity(Recommender):
    """Items ranked by their share of (weighted, optionally decayed) events.

    The three variants are hyperparameter settings of one model:

    - global: ``Popularity()``, all events, no decay;
    - per segment: ``Popularity(by_segment=True)``, one ranking per customer segment,
      shrunk towards the global ranking so small segments back off to it;
    - trending: ``Popularity(half_life_days=7, window_days=28)``, recent events only,
      each weighted ``0.5 ** (age / half_life_days)``.

    Parameters
    ----------
    by_segment : bool, default=False
        One ranking per segment (needs ``Interactions.segments``); customers with an
        unknown segment get the global ranking.
    half_life_days : float or None, default=None
        Recency half-life of an event's weight; None = no decay.
    window_days : float or None, default=None
        Only events at most this old count; None = all.
    event_weights : EventWeights, default=EventWeights()
        Weight of each event type.
    segment_prior : float, default=50.0
        Strength, in weighted events, of the global ranking in each segment's: a
        segment's score is ``(segment_weight_i + prior * global_share_i) / (segment_total
        + prior)``, so a segment with few events looks like the global ranking.

    Attributes
    ----------
    item_scores_ : ndarray of shape (n_items,)
        Global share of weighted events per item (sums to 1 unless there are none).
    segment_scores_ : ndarray of shape (n_segments, n_items)
        Per-segment shares; zero rows when ``by_segment`` is False.

    Examples
    --------
    >>> import pandas as pd
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "b", "b"], "product_id": ["P1", "P2", "P2"],
    ...     "ts": pd.to_datetime(["2026-01-01"] * 3, utc=True),
    ...     "type": ["view", "view", "purchase"], "value": [None] * 3})
    >>> model = Popularity().fit(Interactions.from_events(events))
    >>> model.recommend(-1, k=2)
    (array([1, 0]), array([0.85714286, 0.14285714]))
    """

    kind = "popularity"

    def __init__(
        self,
        *,
        by_segment: bool = False,
        half_life_days: float | None = None,
        window_days: float | None = None,
        event_weights: EventWeights = EventWeights(),  # noqa: B008 (frozen, so shared safely)
        segment_prior: float = 50.0,
    ) -> None:
        self.by_segment = by_segment
        self.half_life_days = half_life_days
        self.window_days = window_days
        self.event_weights = event_weights
        self.segment_prior = segment_prior

    def _check_params(self) -> None:
        if self.half_life_days is not None:
            check_scalar(
                self.half_life_days, "half_life_days", Real, min_val=0, include_boundaries="neither"
            )
        if self.window_days is not None:
            check_scalar(
                self.window_days, "window_days", Real, min_val=0, include_boundaries="neither"
            )
        check_scalar(self.segment_prior, "segment_prior", Real, min_val=0)
        if not isinstance(self.event_weights, EventWeights):
            raise TypeError("event_weights must be an EventWeights")

    def _fit(self, interactions: Interactions) -> None:
        weights = interactions.event_weights(self.event_weights, self.half_life_days)
        if self.window_days is not None:
            weights = np.where(interactions.age_days <= self.window_days, weights, 0.0)
        n_items = interactions.n_items
        totals = np.bincount(interactions.item, weights=weights, minlength=n_items)
        self.item_scores_ = _shares(totals)
        if not self.by_segment:
            self.segment_scores_ = np.zeros((0, n_items))
            return
        if interactions.segments is None:
            raise ValueError("by_segment=True needs interactions with segments (with_segments)")
        segment = interactions.segments[interactions.customer]
        known = segment >= 0
        n_segments = int(interactions.segments.max()) + 1 if len(interactions.segments) else 0
        per_segment = np.bincount(
            segment[known] * n_items + interactions.item[known],
            weights=weights[known],
            minlength=n_segments * n_items,
        ).reshape(n_segments, n_items)
        prior = self.segment_prior * self.item_scores_
        denominator = per_segment.sum(axis=1, keepdims=True) + self.segment_prior
        self.segment_scores_ = (per_segment + prior) / np.where(denominator > 0, denominator, 1.0)

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``item_scores`` (n_items,) and ``segment_scores`` (n_segments, n_items)."""
        return {"item_scores": self.item_scores_, "segment_scores": self.segment_scores_}


def _shares(totals: np.ndarray) -> np.ndarray:
    total = totals.sum()
    return totals / total if total > 0 else np.zeros_like(totals, dtype=np.float64)
