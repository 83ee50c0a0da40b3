"""Numpy-only scoring: the maths serving repeats at request time.

This module imports numpy and the standard library only: serving imports it (serving has
no scikit-learn, Surprise or implicit). Every recommender in :mod:`training.models` exports

- item-side arrays (``Recommender.export_arrays()``, shipped in the bundle), and
- customer-side arrays (``Recommender.export_customer_arrays()``, one row per customer,
  written to Feast as customer features),

and scores candidates through :func:`score_candidates` with those arrays and a
:class:`CustomerState`. Training scores through the same functions, so offline and online
scores agree by construction.

A :class:`CustomerState` is what is known about one customer at request time: recent
events (item index, event type code, age in days), the segment, and the customer-side
feature rows. Models that learned a customer vector use it when present and otherwise
derive one from the events (ALS folds the customer in, content averages item vectors).

Examples
--------
>>> arrays = {"item_scores": np.array([0.2, 0.5, 0.3]),
...           "segment_scores": np.array([[0.6, 0.2, 0.2]])}
>>> score_candidates("popularity", arrays, CustomerState(segment=0), np.array([0, 2]))
array([0.6, 0.2])
>>> top_k(np.array([0.2, 0.5, 0.3]), 2)
(array([1, 2]), array([0.5, 0.3]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Event type codes shared by training and serving; the index is the code.
EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "purchase", "rating", "remove_from_cart")
PURCHASE = EVENT_TYPES.index("purchase")

Arrays = Mapping[str, np.ndarray]


def _empty(dtype: type) -> np.ndarray:
    return np.empty(0, dtype=dtype)


@dataclass(frozen=True)
class CustomerState:
    """One customer at scoring time: events, segment and customer-side feature rows.

    Parameters
    ----------
    items : array of int
        Item index of each past event (may repeat).
    types : array of int
        Event type code of each event, an index into :data:`EVENT_TYPES`.
    age_days : array of float
        Age of each event in days at scoring time (0 = now).
    segment : int, default=-1
        The customer's segment; -1 when unknown.
    features : mapping of str to ndarray, default={}
        Customer-side rows exported by the models (``user_factors``, ``user_bias``,
        ``profile``). A model uses its row when present and the events otherwise.

    Examples
    --------
    >>> state = CustomerState(items=[3, 3, 7], types=[0, 2, 0], age_days=[5.0, 5.0, 1.0])
    >>> state.items
    array([3, 3, 7])
    """

    items: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    types: np.ndarray = field(default_factory=lambda: _empty(np.int8))
    age_days: np.ndarray = field(default_factory=lambda: _empty(np.float64))
    segment: int = -1
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    # Recency-weighted totals already computed for these events, by (event weights,
    # half-life): several models weigh events alike, and serving scores every model for
    # the same customer. Shared by :meth:`with_features` copies, which keep the events.
    _totals: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def with_features(self, features: Mapping[str, np.ndarray]) -> CustomerState:
        """This customer with other customer-side rows: the events are not checked again
        (serving builds one state per request and scores every model with it)."""
        clone = object.__new__(CustomerState)
        clone.__dict__.update(self.__dict__, features=features)
        return clone

    def __post_init__(self) -> None:
        items = np.asarray(self.items, dtype=np.int64).ravel()
        types = np.asarray(self.types, dtype=np.int8).ravel()
        age = np.asarray(self.age_days, dtype=np.float64).ravel()
        if not len(items) == len(types) == len(age):
            raise ValueError("items, types and age_days need one value per event")
        # Unknown items (-1 from a vocabulary lookup) cannot be scored against anything.
        keep = items >= 0
        object.__setattr__(self, "items", items[keep])
        object.__setattr__(self, "types", types[keep])
        object.__setattr__(self, "age_days", np.maximum(age[keep], 0.0))
        object.__setattr__(self, "segment", int(self.segment))


def decay(age_days: np.ndarray, half_life_days: float) -> np.ndarray:
    """Weight ``0.5 ** (age / half_life)``; a NaN or infinite half-life means no decay."""
    age = np.asarray(age_days, dtype=np.float64)
    if not np.isfinite(half_life_days):
        return np.ones_like(age)
    return np.exp2(-age / half_life_days)


def aggregate(items: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``weights`` per distinct item: ``(sorted unique items, sums)``."""
    unique, inverse = np.unique(items, return_inverse=True)
    return unique, np.bincount(inverse, weights=weights, minlength=len(unique))


def event_totals(
    state: CustomerState, event_weights: np.ndarray, half_life_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """Recency-weighted event weights per item, zero totals dropped (read-only arrays,
    remembered on ``state``)."""
    event_weights = np.asarray(event_weights, dtype=np.float64)
    key = (event_weights.tobytes(), float(half_life_days))
    known = state._totals.get(key)
    if known is not None:
        return known
    weights = event_weights[state.types] * decay(state.age_days, half_life_days)
    items, totals = aggregate(state.items, weights)
    keep = totals > 0
    items, totals = items[keep], totals[keep]
    items.flags.writeable = totals.flags.writeable = False
    state._totals[key] = (items, totals)
    return items, totals


def lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``values`` at ``queries`` for sorted ``keys``; 0 where a query is not a key."""
    if len(keys) == 0:
        return np.zeros(len(queries))
    pos = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[pos] == queries, values[pos], 0.0)


def top_k(
    scores: np.ndarray,
    k: int,
    items: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best ``items`` by score, best first; ties go to the lower item index.

    ``items`` defaults to ``arange(len(scores))``. NaN scores (unknown candidates) and
    items in ``exclude`` are never returned, so fewer than ``k`` may come back.
    """
    scores = np.asarray(scores, dtype=np.float64)
    items = np.arange(len(scores)) if items is None else np.asarray(items, dtype=np.int64)
    keep = ~np.isnan(scores)
    if exclude is not None and len(exclude):
        keep &= ~np.isin(items, np.asarray(exclude, dtype=np.int64))
    scores, items = scores[keep], items[keep]
    if k <= 0 or len(scores) == 0:
        return items[:0], scores[:0]
    if k < len(scores):
        # Keep every item tied with the k-th score so the tie-break below sees them all.
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        near = scores >= kth
        scores, items = scores[near], items[near]
    order = np.lexsort((items, -scores))[:k]
    return items[order], scores[order]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def similar_by_vectors(
    vectors: np.ndarray, item: int, k: int, *, normalised: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` items most cosine-similar to ``item`` (itself left out)."""
    unit = vectors if normalised else unit_rows(vectors)
    return top_k(unit @ unit[item], k, exclude=np.array([item]))


def _candidates(
    candidates: np.ndarray | None, n_items: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Candidate indices (invalid ones clipped to 0) and the mask of valid ones (None:
    every item, all valid)."""
    if candidates is None:
        return np.arange(n_items), None
    cand = np.asarray(candidates, dtype=np.int64).ravel()
    valid = (cand >= 0) & (cand < n_items)
    return np.where(valid, cand, 0), valid


def _rows(matrix: np.ndarray, candidates: np.ndarray | None, cand: np.ndarray) -> np.ndarray:
    """The candidates' rows as float64: the matrix itself (no copy) when scoring every item
    of a float64 matrix, which is what serving does on every request."""
    rows = matrix if candidates is None else matrix[cand]
    return np.asarray(rows, dtype=np.float64)


def _finish(scores: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if valid is None:
        return scores
    # Unknown candidates stay missing (NaN) rather than borrowing another item's score.
    return np.where(valid, scores, np.nan)


def score_popularity(
    arrays: Arrays, state: CustomerState, candidates: np.ndarray | None
) -> np.ndarray:
    """The segment's popularity row when the segment is known, else global popularity.

    Arrays: ``item_scores`` (n_items,), ``segment_scores`` (n_segments, n_items).
    """
    segment_scores = arrays["segment_scores"]
    if 0 <= state.segment < segment_scores.shape[0]:
        row = segment_scores[state.segment]
    else:
        row = arrays["item_scores"]
    cand, valid = _candidates(candidates, len(row))
    return _finish(row[cand], valid)


def score_buy_again(
    arrays: Arrays, state: CustomerState, candidates: np.ndarray | None
) -> np.ndarray:
    """Recency-decayed purchases of each candidate, times the item's repeat rate.

    Arrays: ``repeat_rate`` (n_items,), ``half_life_days`` (scalar).
    """
    rate = arrays["repeat_rate"]
    bought = state.types == PURCHASE
    weights = decay(state.age_days[bought], float(arrays["half_life_days"]))
    items, totals = aggregate(state.items[bought], weights)
    cand, valid = _candidates(candidates, len(rate))
    return _finish(lookup(items, totals, cand) * rate[cand], valid)


def score_interest(
    arrays: Arrays, state: CustomerState, candidates: np.ndarray | None
) -> np.ndarray:
    """Recency-decayed views and carts of each candidate by this customer.

    Arrays: ``event_weights`` (per event type code), ``n_items`` and ``half_life_days``
    (scalars).
    """
    items, totals = event_totals(state, arrays["event_weights"], float(arrays["half_life_days"]))
    cand, valid = _candidates(candidates, int(arrays["n_items"]))
    return _finish(lookup(items, totals, cand), valid)


def score_svd(arrays: Arrays, state: CustomerState, candidates: np.ndarray | None) -> np.ndarray:
    """Biased matrix factorisation: ``mu + b_u + b_i + p_u . q_i``, unclipped.

    Without the customer's ``user_factors``/``user_bias`` rows (a customer unknown at
    training time) the score is ``mu + b_i``, as in Surprise's ``SVD.estimate``.
    Arrays: ``item_factors`` (n_items, f), ``item_bias`` (n_items,), ``global_mean``.
    """
    q, bias = arrays["item_factors"], arrays["item_bias"]
    cand, valid = _candidates(candidates, len(bias))
    scores = float(arrays["global_mean"]) + bias[cand].astype(np.float64)
    if "user_factors" in state.features:
        user = np.asarray(state.features["user_factors"], dtype=np.float64)
        scores = scores + float(state.features["user_bias"]) + _rows(q, candidates, cand) @ user
    return _finish(scores, valid)


def bm25_confidence(
    values: np.ndarray,
    items: np.ndarray,
    items_per_customer: np.ndarray,
    item_norm: np.ndarray,
    k1: float,
) -> np.ndarray:
    """BM25 weights of (customer, item) values, items as documents and customers as terms.

    The formula of ``implicit.nearest_neighbours.bm25_weight`` applied, as in implicit's
    examples, to the item x customer matrix: ``idf = log(n_items) - log1p(items of the
    customer)`` and ``item_norm = (1 - B) + B * item_total / mean(item_total)`` from
    training. Negative idf (a customer who touched nearly every item) is clipped to 0.
    """
    n_items = len(item_norm)
    idf = np.maximum(np.log(n_items) - np.log1p(items_per_customer), 0.0)
    return values * (k1 + 1.0) / (k1 * item_norm[items] + values) * idf


def als_confidence(arrays: Arrays, state: CustomerState) -> tuple[np.ndarray, np.ndarray]:
    """The ALS confidence row of a customer: ``(items, confidence)``, as in training."""
    items, values = event_totals(state, arrays["event_weights"], float(arrays["half_life_days"]))
    weighting = str(arrays["weighting"])
    if weighting == "bm25":
        values = bm25_confidence(
            values,
            items,
            np.full(len(items), len(items)),
            arrays["bm25_item_norm"],
            float(arrays["bm25_k1"]),
        )
    elif weighting == "log":
        values = np.log1p(values)
    return items, float(arrays["alpha"]) * values


def als_fold_in(
    item_factors: np.ndarray,
    items: np.ndarray,
    confidence: np.ndarray,
    reg: float,
    gramian: np.ndarray | None = None,
) -> np.ndarray:
    """Solve one customer's ALS factors from fixed item factors (Hu, Koren & Volinsky).

    ``x = (Y'Y + Y'(C - I)Y + reg I)^-1 Y'C p`` with ``c_i = confidence`` on the
    customer's items and 1 elsewhere, ``p_i = 1`` on their items. This is the exact
    least-squares step that ``implicit``'s ``recalculate_user`` computes (its ``alpha``
    already multiplied into ``confidence``). Negative confidence marks a dislike
    (``p_i = 0`` with weight ``|c_i|``), as in implicit.

    Parameters
    ----------
    item_factors : ndarray of shape (n_items, f)
    items : array of int
        The customer's distinct items.
    confidence : array of float
        Confidence of each item (after weighting and ``alpha``).
    reg : float
        L2 regularisation, unscaled (implicit's ``regularization``).
    gramian : ndarray of shape (f, f), optional
        ``Y'Y``, precomputed once per model.

    Examples
    --------
    >>> y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> x = als_fold_in(y, np.array([0]), np.array([4.0]), reg=0.1)
    >>> bool(x[0] > x[1])
    True
    """
    y = np.asarray(item_factors, dtype=np.float64)
    yty = y.T @ y if gramian is None else np.asarray(gramian, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)
    rows = y[np.asarray(items, dtype=np.int64)]
    weight = np.abs(conf)
    a = yty + reg * np.eye(y.shape[1]) + (rows.T * (weight - 1.0)) @ rows
    b = rows.T @ np.where(conf > 0, conf, 0.0)
    return np.linalg.solve(a, b)


def score_als(arrays: Arrays, state: CustomerState, candidates: np.ndarray | None) -> np.ndarray:
    """Dot products with the customer's ALS factors, folded in from events when absent.

    Arrays: ``item_factors`` (n_items, f), ``gramian`` (f, f), ``reg``, ``alpha``,
    ``event_weights`` (per :data:`EVENT_TYPES`), ``half_life_days``, ``weighting``
    (``"bm25"``, ``"log"`` or ``"none"``), ``bm25_item_norm`` (n_items,), ``bm25_k1``.
    """
    y = arrays["item_factors"]
    if "user_factors" in state.features:
        user = np.asarray(state.features["user_factors"], dtype=np.float64)
    else:
        items, conf = als_confidence(arrays, state)
        user = als_fold_in(y, items, conf, float(arrays["reg"]), arrays["gramian"])
    cand, valid = _candidates(candidates, y.shape[0])
    return _finish(_rows(y, candidates, cand) @ user, valid)


def content_profile(arrays: Arrays, state: CustomerState) -> np.ndarray:
    """Unit-length recency- and event-weighted mean of the customer's item vectors."""
    items, totals = event_totals(state, arrays["event_weights"], float(arrays["half_life_days"]))
    vectors = arrays["item_vectors"]
    profile = np.asarray(totals @ vectors[items], dtype=np.float64)
    norm = float(np.sqrt(profile @ profile))
    return profile / norm if norm > 0 else profile


def score_content(
    arrays: Arrays, state: CustomerState, candidates: np.ndarray | None
) -> np.ndarray:
    """Cosine of each candidate's content vector with the customer's profile.

    Arrays: ``item_vectors`` (n_items, d, unit rows), ``event_weights``,
    ``half_life_days``. A customer with no events scores 0 everywhere.
    """
    if "profile" in state.features:
        profile = np.asarray(state.features["profile"], dtype=np.float64)
    else:
        profile = content_profile(arrays, state)
    vectors = arrays["item_vectors"]
    cand, valid = _candidates(candidates, vectors.shape[0])
    return _finish(_rows(vectors, candidates, cand) @ profile, valid)


Scorer = Callable[[Arrays, CustomerState, "np.ndarray | None"], np.ndarray]


def attribute_affinity(
    arrays: Arrays, state: CustomerState, codes: np.ndarray, prior: np.ndarray
) -> np.ndarray:
    """The customer's smoothed shares over one item attribute (category, price band):
    recency-weighted interactions per attribute value plus ``prior_strength``
    interactions spread like everyone's."""
    prior = np.asarray(prior, dtype=np.float64)
    strength = float(arrays["prior_strength"])
    items, totals = event_totals(state, arrays["event_weights"], float(arrays["half_life_days"]))
    counts = np.bincount(codes[items], weights=totals, minlength=len(prior)).astype(np.float64)
    return (counts + strength * prior) / (counts.sum() + strength)


def _lift(arrays: Arrays, state: CustomerState, name: str) -> tuple[np.ndarray, np.ndarray]:
    codes, prior = arrays[f"item_{name}"], np.asarray(arrays[f"{name}_prior"], dtype=np.float64)
    lift = attribute_affinity(arrays, state, codes, prior) / np.where(prior > 0, prior, 1.0)
    return codes, lift


def score_category_popularity(
    arrays: Arrays, state: CustomerState, candidates: np.ndarray | None
) -> np.ndarray:
    """Popularity re-weighted from everyone's taste to the customer's:
    ``popularity(i) * lift_category(i) * lift_band(i)``, where a lift is the customer's
    smoothed share of an attribute value over everyone's share (with no history both
    lifts are 1: plain popularity).

    Arrays: ``item_scores``, ``item_category``, ``category_prior``, ``item_band``,
    ``band_prior``, ``event_weights``, ``half_life_days``, ``prior_strength``.
    """
    popularity = arrays["item_scores"]
    category, category_lift = _lift(arrays, state, "category")
    band, band_lift = _lift(arrays, state, "band")
    cand, valid = _candidates(candidates, len(popularity))
    return _finish(popularity[cand] * category_lift[category[cand]] * band_lift[band[cand]], valid)


def score_new_arrivals(
    arrays: Arrays, state: CustomerState, candidates: np.ndarray | None
) -> np.ndarray:
    """Launch recency re-weighted to the customer's taste:
    ``0.5 ** (launch_age / half_life) * lift_category(i) * lift_band(i)`` (lifts as in
    :func:`score_category_popularity`). Launch ages are as of the bundle's reference time;
    later ages shift every item alike, which scales every score alike.

    Arrays: ``launch_age_days``, ``freshness_half_life_days``, ``item_category``,
    ``category_prior``, ``item_band``, ``band_prior``, ``event_weights``,
    ``half_life_days``, ``prior_strength``.
    """
    age = arrays["launch_age_days"]
    category, category_lift = _lift(arrays, state, "category")
    band, band_lift = _lift(arrays, state, "band")
    cand, valid = _candidates(candidates, len(age))
    fresh = decay(age[cand], float(arrays["freshness_half_life_days"]))
    return _finish(fresh * category_lift[category[cand]] * band_lift[band[cand]], valid)


def score_view_mixture(
    arrays: Arrays, state: CustomerState, candidates: np.ndarray | None
) -> np.ndarray:
    """The chance the customer's next view is each candidate, times its purchases per view:
    ``s_own * own(i) + s_trend * trend(i) + s_taste * category(i) * band(i) * within(i)``
    with the shares of the customer's segment (the last row when it is unknown); ``own``
    and the customer's ``category`` shares come from their events here
    (:mod:`training.models.view_mixture` says how each part is made).

    Arrays: ``item_within``, ``item_trend``, ``item_conversion``, ``item_category``,
    ``item_band`` (n_items,); ``segment_shares`` (rows, 3), ``segment_category``,
    ``segment_band`` (rows, values); ``category_strength``, ``half_life_days`` (scalars);
    ``event_weights``.
    """
    shares_by_row = arrays["segment_shares"]
    last = len(shares_by_row) - 1
    row = state.segment if 0 <= state.segment < last else last
    own_share, trend_share, taste_share = shares_by_row[row]
    category, band = arrays["item_category"], arrays["item_band"]
    items, totals = event_totals(state, arrays["event_weights"], float(arrays["half_life_days"]))
    mix = arrays["segment_category"][row]
    counts = np.bincount(category[items], weights=totals, minlength=len(mix))
    strength = float(arrays["category_strength"])
    shares = (counts + strength * mix) / (counts.sum() + strength)
    cand, valid = _candidates(candidates, len(arrays["item_within"]))
    looked = totals.sum()
    own = lookup(items, totals, cand) / looked if looked > 0 else np.zeros(len(cand))
    taste = shares[category[cand]] * arrays["segment_band"][row][band[cand]]
    q = (
        own_share * own
        + trend_share * arrays["item_trend"][cand]
        + taste_share * taste * arrays["item_within"][cand]
    )
    return _finish(q * arrays["item_conversion"][cand], valid)


SCORERS: dict[str, Scorer] = {
    "category_popularity": score_category_popularity,
    "new_arrivals": score_new_arrivals,
    "popularity": score_popularity,
    "buy_again": score_buy_again,
    "interest": score_interest,
    "svd": score_svd,
    "als": score_als,
    "content": score_content,
    "view_mixture": score_view_mixture,
}


def score_candidates(
    kind: str, arrays: Arrays, state: CustomerState, candidates: np.ndarray | None = None
) -> np.ndarray:
    """Scores of ``candidates`` (all items when None) by the model ``kind``.

    Candidates outside the catalogue (e.g. -1 for an unknown product id) score NaN.
    """
    try:
        scorer = SCORERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown model kind {kind!r}; expected one of {sorted(SCORERS)}"
        ) from None
    return scorer(arrays, state, candidates)
