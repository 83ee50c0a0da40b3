"""Offline metrics: ranking accuracy at k, beyond-accuracy measures, rating errors.

Every ranking metric works on many customers at once. A run is

- ``recommended``: per customer, item indices best first. Either a sequence of 1-d
  arrays (lists may be shorter than ``k``) or a 2-d array padded with ``-1``;
- ``relevant``: per customer, the held-out relevant item indices (a set or an array;
  duplicates count once).

Only the first ``k`` recommendations count. A recommended item counts as a hit once: a
repeat of an item further down the same list is neither a hit nor anything else, so no
metric exceeds 1. Negative item indices are padding.

Definitions (``hit_r`` = 1 when the item at rank ``r`` (1-based) is relevant, ``R`` = the
number of distinct relevant items):

==============  =========================================================================
metric          per customer
==============  =========================================================================
precision@k     ``sum(hit_r) / k``  (the denominator stays ``k`` for shorter lists)
recall@k        ``sum(hit_r) / R``
hit rate@k      ``1`` if any ``hit_r`` else ``0``
AP@k            ``sum_r precision@r * hit_r / min(R, k)``; MAP@k is its mean
NDCG@k          ``DCG / IDCG`` with ``DCG = sum_r hit_r / log2(r + 1)`` and
                ``IDCG = sum_{r=1..min(R, k)} 1 / log2(r + 1)`` (binary relevance)
RR@k            ``1 / r`` of the first hit in the top ``k``, ``0`` without one; MRR@k
                is its mean
==============  =========================================================================

A customer without relevant items has no defined accuracy: the ranking functions return
NaN for them, and :func:`evaluate_run` leaves them out (and counts them).

Beyond accuracy: :func:`catalogue_coverage` (one number per run), :func:`novelty` and
:func:`intra_list_diversity` (per customer). For rating predictions: :func:`rmse` and
:func:`mae`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

RANKING_METRICS: tuple[str, ...] = ("precision", "recall", "hit_rate", "map", "ndcg", "mrr")
"""Names of the per-customer accuracy metrics, in report order."""

Recommended = np.ndarray | Sequence[npt.ArrayLike]
ItemSet = npt.ArrayLike | AbstractSet[int]
Relevant = Sequence[ItemSet]


def pad_lists(recommended: Recommended, k: int) -> np.ndarray:
    """The first ``k`` items of each list as a 2-d int64 array padded with ``-1``.

    Parameters
    ----------
    recommended : 2-d array or sequence of 1-d arrays
        Item indices per customer, best first.
    k : int
        Cut-off, at least 1.

    Returns
    -------
    ndarray of shape (n_customers, k)

    Examples
    --------
    >>> pad_lists([[4, 2, 7], [5]], k=2)
    array([[ 4,  2],
           [ 5, -1]])
    """
    _check_k(k)
    if isinstance(recommended, np.ndarray) and recommended.ndim == 2:
        lists = recommended[:, :k].astype(np.int64)
        if lists.shape[1] < k:
            fill = np.full((len(lists), k - lists.shape[1]), -1, dtype=np.int64)
            lists = np.hstack([lists, fill])
        return lists
    padded = np.full((len(recommended), k), -1, dtype=np.int64)
    for row, items in enumerate(recommended):
        head = np.asarray(items, dtype=np.int64).ravel()[:k]
        padded[row, : len(head)] = head
    return padded


def hit_matrix(
    recommended: Recommended, relevant: Relevant, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Which of the top ``k`` recommendations are relevant, and how many items are.

    Vectorised: every (customer, item) pair becomes one integer key, and membership is
    one :func:`numpy.isin` over all customers.

    Returns
    -------
    hits : ndarray of bool, shape (n_customers, k)
        ``hits[u, r]`` is True when the item at rank ``r + 1`` of customer ``u`` is
        relevant and not a repeat of an item higher in the same list.
    n_relevant : ndarray of int64, shape (n_customers,)
        Distinct relevant items per customer (negative indices ignored).

    Examples
    --------
    >>> hits, n_rel = hit_matrix([[3, 1, 3]], [{3, 8}], k=3)
    >>> hits, n_rel
    (array([[ True, False, False]]), array([2]))
    """
    lists = pad_lists(recommended, k)
    n = len(lists)
    if len(relevant) != n:
        raise ValueError(f"{n} recommendation lists but {len(relevant)} relevant sets")
    rel_items = [_as_items(r) for r in relevant]
    lengths = np.array([r.size for r in rel_items], dtype=np.int64)
    flat = (
        np.concatenate([r.ravel() for r in rel_items]).astype(np.int64)
        if n
        else np.empty(0, dtype=np.int64)
    )
    owner = np.repeat(np.arange(n, dtype=np.int64), lengths)
    keep = flat >= 0
    flat, owner = flat[keep], owner[keep]
    width = int(max(flat.max(initial=-1), lists.max(initial=-1))) + 1
    rel_keys = np.unique(owner * width + flat)
    n_relevant = np.bincount(rel_keys // max(width, 1), minlength=n).astype(np.int64)

    valid = lists >= 0
    keys = np.arange(n, dtype=np.int64)[:, None] * width + lists
    hits = valid & np.isin(keys, rel_keys)
    return hits & _first_occurrence(lists), n_relevant


def _as_items(items: ItemSet) -> np.ndarray:
    """Item indices as a 1-d int64 array (sets welcome)."""
    if isinstance(items, AbstractSet):
        return np.array(sorted(items), dtype=np.int64)
    return np.asarray(items, dtype=np.int64).ravel()


def _first_occurrence(lists: np.ndarray) -> np.ndarray:
    """True where an item appears for the first time in its row."""
    order = np.argsort(lists, axis=1, kind="stable")
    ordered = np.take_along_axis(lists, order, axis=1)
    repeat = np.zeros_like(ordered, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = np.ones_like(repeat)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first


def _undefined(values: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    values[n_relevant == 0] = np.nan
    return values


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _precision(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    return _undefined(hits.sum(axis=1) / hits.shape[1], n_rel)


def _recall(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return _undefined(hits.sum(axis=1) / n_rel, n_rel)


def _hit_rate(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    return _undefined(np.asarray(hits.any(axis=1)), n_rel)


def _average_precision(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    k = hits.shape[1]
    ranks = np.arange(1, k + 1, dtype=np.float64)
    precision_at_r = np.cumsum(hits, axis=1) / ranks
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision_at_r * hits).sum(axis=1) / np.minimum(n_rel, k)
    return _undefined(ap, n_rel)


def _ndcg(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    k = hits.shape[1]
    discount = _discounts(k)
    dcg = hits @ discount
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_rel, k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return _undefined(dcg / ideal, n_rel)


def _reciprocal_rank(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    first = np.argmax(hits, axis=1)
    rr = np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)
    return _undefined(rr, n_rel)


_FROM_HITS = {
    "precision": _precision,
    "recall": _recall,
    "hit_rate": _hit_rate,
    "map": _average_precision,
    "ndcg": _ndcg,
    "mrr": _reciprocal_rank,
}


def precision_at_k(recommended: Recommended, relevant: Relevant, k: int) -> np.ndarray:
    """Per customer, the share of the ``k`` slots filled with relevant items.

    ``hits / k``; a list shorter than ``k`` is not rewarded for it (its empty slots are
    misses). NaN for customers without relevant items.

    Examples
    --------
    >>> precision_at_k([[1, 2, 3], [4]], [{2}, {4, 5}], k=2)
    array([0.5, 0.5])
    """
    return _precision(*hit_matrix(recommended, relevant, k))


def recall_at_k(recommended: Recommended, relevant: Relevant, k: int) -> np.ndarray:
    """Per customer, the share of relevant items found in the top ``k``.

    ``hits / R``, with ``R`` all distinct relevant items (so recall@k < 1 whenever
    ``R > k``). NaN for customers without relevant items.

    Examples
    --------
    >>> recall_at_k([[1, 2, 3]], [{2, 3, 9, 8}], k=2)
    array([0.25])
    """
    return _recall(*hit_matrix(recommended, relevant, k))


def hit_rate_at_k(recommended: Recommended, relevant: Relevant, k: int) -> np.ndarray:
    """Per customer, 1.0 if any of the top ``k`` is relevant, else 0.0 (NaN: no relevant).

    Examples
    --------
    >>> hit_rate_at_k([[1, 2], [3, 4]], [{2}, {9}], k=2)
    array([1., 0.])
    """
    return _hit_rate(*hit_matrix(recommended, relevant, k))


def average_precision_at_k(recommended: Recommended, relevant: Relevant, k: int) -> np.ndarray:
    """Per customer, AP@k: ``sum_r precision@r * hit_r / min(R, k)``; MAP@k is the mean.

    The denominator ``min(R, k)`` makes a perfect top-``k`` score 1 even when there are
    more than ``k`` relevant items. NaN for customers without relevant items.

    Examples
    --------
    Hits at ranks 1 and 3 of 3, two relevant items: ``(1/1 + 2/3) / 2 = 0.8333``.

    >>> average_precision_at_k([[7, 1, 8]], [{7, 8}], k=3)
    array([0.83333333])
    """
    return _average_precision(*hit_matrix(recommended, relevant, k))


def ndcg_at_k(recommended: Recommended, relevant: Relevant, k: int) -> np.ndarray:
    """Per customer, NDCG@k with binary relevance and a ``log2(rank + 1)`` discount.

    ``DCG = sum_r hit_r / log2(r + 1)``; the ideal DCG puts ``min(R, k)`` relevant
    items at the top. NaN for customers without relevant items.

    Examples
    --------
    One relevant item at rank 2: ``(1 / log2(3)) / 1 = 0.6309``.

    >>> ndcg_at_k([[5, 6, 7]], [{6}], k=3)
    array([0.63092975])
    """
    return _ndcg(*hit_matrix(recommended, relevant, k))


def reciprocal_rank_at_k(recommended: Recommended, relevant: Relevant, k: int) -> np.ndarray:
    """Per customer, ``1 / rank`` of the first relevant item in the top ``k`` (else 0).

    MRR@k is the mean. NaN for customers without relevant items.

    Examples
    --------
    >>> reciprocal_rank_at_k([[5, 6, 7], [1, 2, 3]], [{7}, {9}], k=3)
    array([0.33333333, 0.        ])
    """
    return _reciprocal_rank(*hit_matrix(recommended, relevant, k))


def catalogue_coverage(recommended: Recommended, n_items: int, k: int) -> float:
    """The share of the catalogue's ``n_items`` that appear in at least one top-``k`` list.

    Examples
    --------
    Items {1, 2, 3} of a 10-item catalogue: 3 / 10.

    >>> catalogue_coverage([[1, 2], [2, 3]], n_items=10, k=2)
    0.3
    """
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    lists = pad_lists(recommended, k)
    shown = np.unique(lists[(lists >= 0) & (lists < n_items)])
    return float(shown.size / n_items)


def self_information(popularity: npt.ArrayLike, total: float | None = None) -> np.ndarray:
    """``-log2(p_i)`` per item, ``p_i = popularity_i / total`` (default ``total = sum``).

    ``popularity`` holds counts, for example the number of training customers who
    interacted with each item; pass ``total = n_customers`` for the share of customers
    (Zhou et al., 2010). An item with count 0 is counted as 1, so its novelty is the
    largest finite value rather than infinity.

    Examples
    --------
    >>> self_information([2, 1, 1, 0])
    array([1., 2., 2., 2.])
    """
    counts = np.asarray(popularity, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("popularity must be a 1-d array of non-negative counts")
    denominator = counts.sum() if total is None else float(total)
    if denominator <= 0:
        raise ValueError("total popularity must be positive")
    return -np.log2(np.maximum(counts, 1.0) / denominator)


def novelty(
    recommended: Recommended, popularity: npt.ArrayLike, k: int, *, total: float | None = None
) -> np.ndarray:
    """Per customer, the mean self-information of the (distinct) items in the top ``k``.

    ``mean_i -log2(p_i)`` over the list's distinct items, with ``p_i`` from
    :func:`self_information` (popularity share; count 0 counted as 1). Higher = less
    popular, more surprising items. NaN for an empty list.

    Examples
    --------
    Shares 0.5 and 0.25: ``(1 + 2) / 2 = 1.5``.

    >>> novelty([[0, 1], []], popularity=[2, 1, 1], k=2)
    array([1.5, nan])
    """
    info = self_information(popularity, total)
    lists = pad_lists(recommended, k)
    valid = (lists >= 0) & _first_occurrence(lists)
    if (lists[valid] >= info.size).any():
        raise ValueError("recommended item index outside the popularity array")
    values = np.where(valid, info[np.where(valid, lists, 0)], 0.0)
    counts = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return values.sum(axis=1) / counts


def intra_list_diversity(
    recommended: Recommended, item_vectors: npt.ArrayLike | sp.spmatrix, k: int
) -> np.ndarray:
    """Per customer, the mean pairwise cosine distance ``1 - cos(v_i, v_j)`` in the top ``k``.

    Over all unordered pairs of distinct items of the list. Item vectors may be dense or
    scipy sparse (e.g. TF-IDF). A zero vector has cosine 0 with everything (distance 1).
    NaN for lists with fewer than two distinct items.

    Examples
    --------
    Pairs (0, 1): distance 1 - 0 = 1; (0, 2): 1 - 1 = 0; (1, 2): 1; mean 2/3.

    >>> vectors = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    >>> intra_list_diversity([[0, 1, 2], [1]], vectors, k=3)
    array([0.66666667,        nan])
    """
    lists = pad_lists(recommended, k)
    vectors = _unit_rows(item_vectors)
    valid = (lists >= 0) & _first_occurrence(lists)
    if (lists[valid] >= vectors.shape[0]).any():
        raise ValueError("recommended item index outside the item-vector matrix")
    # With unit vectors, the sum of pairwise cosines of a list is
    # (|sum_i v_i|^2 - sum_i |v_i|^2) / 2: one sparse (customers x items) product.
    rows = np.nonzero(valid)[0]
    members = sp.csr_matrix(
        (np.ones(rows.size), (rows, lists[valid])), shape=(len(lists), vectors.shape[0])
    )
    totals = members @ vectors
    if sp.issparse(totals):
        squared = np.asarray(totals.multiply(totals).sum(axis=1)).ravel()
    else:
        squared = np.einsum("ij,ij->i", totals, totals)
    if sp.issparse(vectors):
        norms = np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel()
    else:
        norms = np.einsum("ij,ij->i", vectors, vectors)
    cosine_sum = (squared - members @ norms) / 2
    n = valid.sum(axis=1)
    pairs = n * (n - 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, 1.0 - cosine_sum / pairs, np.nan)


def _unit_rows(item_vectors: npt.ArrayLike | sp.spmatrix) -> Any:
    if sp.issparse(item_vectors):
        matrix = sp.csr_matrix(item_vectors, dtype=np.float64)
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(scale) @ matrix)
    dense = np.asarray(item_vectors, dtype=np.float64)
    if dense.ndim != 2:
        raise ValueError("item_vectors must be 2-d (n_items, n_dims)")
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0)


def _errors(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> np.ndarray:
    truth = np.asarray(y_true, dtype=np.float64).ravel()
    pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"{truth.size} true ratings but {pred.size} predictions")
    if truth.size == 0:
        raise ValueError("no ratings to compare")
    return pred - truth


def rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Root mean squared error of rating predictions: ``sqrt(mean((pred - true)^2))``.

    Examples
    --------
    Errors 1, -1, 2: ``sqrt((1 + 1 + 4) / 3) = sqrt(2)``.

    >>> round(rmse([3, 4, 2], [4, 3, 4]), 6)
    1.414214
    """
    return float(np.sqrt(np.mean(_errors(y_true, y_pred) ** 2)))


def mae(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Mean absolute error of rating predictions: ``mean(|pred - true|)``.

    Examples
    --------
    Errors 1, -1, 2: ``(1 + 1 + 2) / 3``.

    >>> round(mae([3, 4, 2], [4, 3, 4]), 6)
    1.333333
    """
    return float(np.mean(np.abs(_errors(y_true, y_pred))))


@dataclass(frozen=True)
class RunMetrics:
    """Per-customer metrics of one run, and their means.

    Attributes
    ----------
    k : int
    customers : ndarray of str
        The evaluated customers (those with at least one relevant item), sorted.
    per_customer : dict of str to ndarray
        One array per metric, aligned with ``customers``: the accuracy metrics of
        :data:`RANKING_METRICS`, plus ``novelty`` and ``diversity`` when their inputs
        were given (NaN where undefined: empty or one-item lists).
    coverage : float or None
        Catalogue coverage of the evaluated customers' lists (needs ``n_items``).
    n_without_relevant : int
        Customers left out because they have no relevant items.
    n_without_recommendations : int
        Evaluated customers with no list at all (they score 0 on accuracy).
    """

    k: int
    customers: np.ndarray
    per_customer: dict[str, np.ndarray]
    coverage: float | None = None
    n_without_relevant: int = 0
    n_without_recommendations: int = 0
    means: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        means = {
            name: float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            for name, values in self.per_customer.items()
        }
        object.__setattr__(self, "means", means)

    @property
    def n_customers(self) -> int:
        return len(self.customers)

    def to_frame(self) -> pd.DataFrame:
        """The per-customer metrics as a DataFrame indexed by ``customer_id``."""
        frame = pd.DataFrame(self.per_customer, index=pd.Index(self.customers, name="customer_id"))
        return frame

    def means_by(self, groups: Mapping[str, Any] | pd.Series) -> pd.DataFrame:
        """Metric means per group (segment, lifecycle stage, cold start...), with counts.

        Customers missing from ``groups`` fall in the group ``"unknown"``.
        """
        labels = pd.Series(groups).reindex(self.customers).astype(object)
        labels = labels.where(labels.notna(), "unknown")
        frame = self.to_frame()
        table = frame.groupby(labels.to_numpy()).mean()
        table.insert(0, "n_customers", frame.groupby(labels.to_numpy()).size())
        table.index.name = "group"
        return table

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict: k, counts, coverage and metric means (NaN as None)."""

        def clean(value: float | None) -> float | None:
            return None if value is None or not np.isfinite(value) else float(value)

        return {
            "k": self.k,
            "n_customers": self.n_customers,
            "n_without_relevant": self.n_without_relevant,
            "n_without_recommendations": self.n_without_recommendations,
            "coverage": clean(self.coverage),
            "means": {name: clean(value) for name, value in self.means.items()},
        }


def evaluate_run(
    recommendations: Mapping[str, npt.ArrayLike],
    relevant: Mapping[str, ItemSet],
    k: int = 10,
    *,
    n_items: int | None = None,
    popularity: npt.ArrayLike | None = None,
    item_vectors: npt.ArrayLike | sp.spmatrix | None = None,
) -> RunMetrics:
    """Every metric of one run, per customer and on average.

    Parameters
    ----------
    recommendations : mapping of customer id to item indices
        Best first; lists may be longer (cut at ``k``) or shorter than ``k``.
    relevant : mapping of customer id to item indices
        Held-out relevant items, e.g. from :func:`training.models.interactions.held_out_items`
        or :meth:`training.evaluation.protocols.HeldOut.relevant`.
    k : int, default=10
    n_items : int, optional
        Catalogue size, for :func:`catalogue_coverage`.
    popularity : array of counts, optional
        Item popularity in training, for :func:`novelty` (share of the total count).
    item_vectors : (n_items, n_dims) array or sparse matrix, optional
        For :func:`intra_list_diversity`.

    Returns
    -------
    RunMetrics
        Evaluated customers are those of ``relevant`` with at least one relevant item;
        a customer without a recommendation list scores 0 on every accuracy metric.
        Coverage, novelty and diversity use the evaluated customers' lists only.

    Examples
    --------
    >>> run = evaluate_run({"a": [1, 2], "b": [3, 4]}, {"a": [2], "b": [9], "c": []}, k=2)
    >>> run.customers
    array(['a', 'b'], dtype='<U1')
    >>> run.per_customer["mrr"], run.means["hit_rate"], run.n_without_relevant
    (array([0.5, 0. ]), 0.5, 1)
    """
    _check_k(k)
    rel_by_id = {str(c): items for c, items in relevant.items()}
    keyed = {str(c): items for c, items in recommendations.items()}
    everyone = sorted(rel_by_id)
    empty = np.empty(0, dtype=np.int64)
    lists = pad_lists([keyed.get(c, empty) for c in everyone], k)
    hits, n_rel = hit_matrix(lists, [rel_by_id[c] for c in everyone], k)
    evaluated = n_rel > 0
    ids = np.array(everyone, dtype=str)[evaluated]
    lists, hits, n_rel = lists[evaluated], hits[evaluated], n_rel[evaluated]
    per_customer = {name: _FROM_HITS[name](hits, n_rel) for name in RANKING_METRICS}
    if popularity is not None:
        per_customer["novelty"] = novelty(lists, popularity, k)
    if item_vectors is not None:
        per_customer["diversity"] = intra_list_diversity(lists, item_vectors, k)
    coverage = None if n_items is None else catalogue_coverage(lists, n_items, k)
    return RunMetrics(
        k=k,
        customers=ids,
        per_customer=per_customer,
        coverage=coverage,
        n_without_relevant=len(everyone) - len(ids),
        n_without_recommendations=sum(str(c) not in keyed for c in ids),
    )


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
