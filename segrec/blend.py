"""Blending model scores: normalise each model's scores over the candidates, then a
weighted sum, keeping each model's contribution (why an item is there).

Numpy only, like :mod:`segrec.scoring`, so serving applies the very same blend.

Normalisation is min-max per model over one customer's candidates: models score on
incomparable scales (a popularity count, a dot product, a cosine), and only the order and
relative gaps within one list matter for ranking. A model with no opinion (all scores
equal or missing) contributes zero rather than a constant.

Examples
--------
>>> scores = np.array([[1.0, 3.0, 2.0], [0.5, 0.5, np.nan]])
>>> normalise(scores)
array([[0. , 1. , 0.5],
       [0. , 0. , 0. ]])
>>> total, parts = blend(normalise(scores), np.array([0.8, 0.2]))
>>> total.round(2).tolist()
[0.0, 0.8, 0.4]
"""

from __future__ import annotations

import numpy as np

# Blend groups beyond the segments, shared by training and serving.
COLD_START_EVENTS = 5  # fewer known events than this: a cold-start customer
COLD_START = -2  # the blend group of cold-start customers, whatever their segment
NO_SEGMENT = -1  # the blend group of a customer with no segment


def normalise(scores: np.ndarray) -> np.ndarray:
    """Min-max scale each row (model) of ``scores`` (..., models, candidates) to [0, 1];
    NaN (unknown candidate) becomes 0."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if finite.all():
        # Serving's case (every item scored): no masking, a third of the work.
        low = scores.min(axis=-1, keepdims=True)
        span = scores.max(axis=-1, keepdims=True) - low
        ok = np.isfinite(span) & (span > 0)
        return np.where(ok, (scores - low) / np.where(ok, span, 1.0), 0.0)
    low = np.min(np.where(finite, scores, np.inf), axis=-1, keepdims=True)
    high = np.max(np.where(finite, scores, -np.inf), axis=-1, keepdims=True)
    span = high - low
    ok = np.isfinite(span) & (span > 0)
    safe_span = np.where(ok, span, 1.0)
    safe_low = np.where(np.isfinite(low), low, 0.0)
    scaled = (np.where(finite, scores, safe_low) - safe_low) / safe_span
    return np.where(ok & finite, scaled, 0.0)


def blend(normalised: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum over models of normalised scores (..., models, candidates).

    Returns the blended scores (..., candidates) and each model's contribution
    (..., models, candidates), which sum to the blended score.
    """
    weights = np.asarray(weights, dtype=np.float64)
    parts = normalised * weights[..., :, None]
    return parts.sum(axis=-2), parts


def weights_for(
    segment: int, segment_ids: np.ndarray, segment_weights: np.ndarray, global_weights: np.ndarray
) -> np.ndarray:
    """The blend weights of ``segment``; the global weights for an unknown segment."""
    matches = np.flatnonzero(np.asarray(segment_ids) == segment)
    return segment_weights[int(matches[0])] if len(matches) else global_weights
