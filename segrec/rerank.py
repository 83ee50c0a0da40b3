"""Re-ranking the blend's best candidates with boosted trees: the features and the maths.

The per-segment blend weighs each model the same for every customer of a segment, but
which model knows best differs by customer: someone who views the same items again and
again buys them (the interest model), someone who views new launches buys new launches.
The re-ranker learns that from validation: for each of the blend's top ``depth``
candidates it reads every model's normalised score, the blend's score, a few facts about
the customer's recent events and the candidate's place in them, and the customer's blend
group, and boosted trees (:mod:`segrec.trees`) turn them into a new order.

Numpy only, like :mod:`segrec.scoring`: training and serving build the features with
:func:`design` and score with :func:`rerank`, so offline and online agree. Only the
newest ``history_events`` events count (serving holds the newest
``SEGREC_ONLINE_HISTORY_EVENTS``), so training sees what serving sees.

Arrays (the bundle's ``rerank`` group): the tree arrays of :mod:`segrec.trees`, plus
``groups`` (blend group ids, one-hot features in this order), ``reranked_groups`` (the
groups whose customers are re-ranked; the others keep the blend's order, training
decides which: :func:`training.models.reranker.fit_reranker`), ``depth``,
``history_events``, ``trend_days``, ``reference_unix`` (when the launch ages were
measured) and ``unseen`` (items nobody interacted with in training): :data:`ARRAYS`.

Features of one candidate, in order (:func:`feature_names`): each model's normalised
score, the blend score, the customer's share of views of items launched less than
``trend_days`` before the view, the share of their views that repeat an item, log1p of
their events, one-hot of their blend group, and their views of the candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from segrec.scoring import EVENT_TYPES, CustomerState
from segrec.trees import TREE_ARRAYS, tree_scores

VIEW = EVENT_TYPES.index("view")
# Every array the bundle's ``rerank`` group must hold (the trees' own besides).
ARRAYS = (
    "groups",
    "reranked_groups",
    "depth",
    "history_events",
    "trend_days",
    "reference_unix",
    "unseen",
    *TREE_ARRAYS,
)
CUSTOMER_FEATURES = ("trend_view_share", "repeat_view_share", "log_events")
SLOT_STEP = 1e-9  # score decrement per re-ranked slot: strict order, ties impossible

Arrays = Mapping[str, np.ndarray]


def feature_names(models: Sequence[str], groups: Sequence[int]) -> list[str]:
    """Column names of :func:`design`'s rows."""
    return [
        *(f"score_{m}" for m in models),
        "blend",
        *CUSTOMER_FEATURES,
        *(f"group_{g}" for g in groups),
        "own_views",
    ]


def recent(state: CustomerState, history_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The newest ``history_events`` events: items, types, ages."""
    order = np.argsort(state.age_days, kind="stable")[: max(int(history_events), 0)]
    return state.items[order], state.types[order], state.age_days[order]


def customer_features(
    state: CustomerState, launch_age_days: np.ndarray, *, history_events: int, trend_days: float
) -> np.ndarray:
    """:data:`CUSTOMER_FEATURES` of one customer. ``launch_age_days`` is each item's age
    at the state's "now" (negative or 0 for unknown launches).

    >>> state = CustomerState(items=[0, 0, 1], types=[0, 0, 0], age_days=[1.0, 2.0, 3.0])
    >>> customer_features(state, np.array([100.0, 10.0]), history_events=10,
    ...                   trend_days=30).round(3).tolist()
    [0.333, 0.333, 1.386]
    """
    return _customer_features(*recent(state, history_events), launch_age_days, trend_days)


def _customer_features(
    items: np.ndarray,
    types: np.ndarray,
    ages: np.ndarray,
    launch_age_days: np.ndarray,
    trend_days: float,
) -> np.ndarray:
    """:func:`customer_features` of events already cut to the newest ones."""
    viewed, viewed_age = items[types == VIEW], ages[types == VIEW]
    out = np.zeros(len(CUSTOMER_FEATURES))
    if len(viewed):
        item_age_then = launch_age_days[viewed] - viewed_age
        out[0] = np.mean((item_age_then >= 0) & (item_age_then < trend_days))
        out[1] = 1.0 - len(np.unique(viewed)) / len(viewed)
    out[2] = np.log1p(len(items))
    return out


def design(
    arrays: Arrays,
    normalised: np.ndarray,
    blended: np.ndarray,
    candidates: np.ndarray,
    state: CustomerState,
    group: int,
    launch_age_days: np.ndarray,
) -> np.ndarray:
    """Feature rows (candidates, features) of one customer's ``candidates`` (item
    indices), from every model's normalised scores (models, items) and the blend's
    (items) over the whole catalogue. Excluded items' negative scores count as 0."""
    candidates = np.asarray(candidates, dtype=np.int64)
    history = int(arrays["history_events"])
    scores = np.maximum(normalised[:, candidates], 0.0).T
    # The newest events once: the customer's features and their views of each candidate.
    items, types, ages = recent(state, history)
    customer = _customer_features(items, types, ages, launch_age_days, float(arrays["trend_days"]))
    groups = np.asarray(arrays["groups"])
    views = np.bincount(items[types == VIEW], minlength=len(blended))[candidates]
    n = len(candidates)
    return np.hstack(
        [
            scores,
            np.maximum(blended[candidates], 0.0)[:, None],
            np.broadcast_to(customer, (n, len(customer))),
            np.broadcast_to((groups == group).astype(np.float64), (n, len(groups))),
            views[:, None].astype(np.float64),
        ]
    )


def top_candidates(blended: np.ndarray, depth: int) -> np.ndarray:
    """The blend's ``depth`` best items (best first, ties to the lower index), excluded
    (negative) ones left out."""
    eligible = np.flatnonzero(blended >= 0)
    if len(eligible) > depth:
        best = np.argpartition(-blended[eligible], depth - 1)[:depth]
        eligible = eligible[best]
    order = np.lexsort((eligible, -blended[eligible]))
    return eligible[order]


def _for(value: np.ndarray | Sequence[np.ndarray], customer: int) -> np.ndarray:
    """One array shared by every customer, or the customer's own."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value
    return value[customer]


@dataclass(frozen=True)
class Candidates:
    """What the trees score for some customers: each one's blend top ``depth`` (best
    first; none for a customer whose group is not in ``reranked_groups``), the movable
    items among them (not ``unseen``), and the movable items' feature rows, every
    customer's stacked in order. They do not depend on the trees, so training builds
    them once and scores them with each re-ranker it tries."""

    top: list[np.ndarray]
    movable: list[np.ndarray]
    rows: np.ndarray


def candidates(
    arrays: Arrays,
    normalised: np.ndarray,
    blended: np.ndarray,
    states: Sequence[CustomerState],
    groups: Sequence[int],
    launch_age_days: np.ndarray | Sequence[np.ndarray],
    unseen: np.ndarray | Sequence[np.ndarray],
) -> Candidates:
    """:class:`Candidates` of every customer (arguments as :func:`rerank`'s)."""
    depth = int(arrays["depth"])
    reranked = np.isin(np.asarray(groups, dtype=np.int64), arrays["reranked_groups"])
    # Customers left out have no top at all: their scores stay the blend's to the bit.
    top = [
        top_candidates(np.asarray(blended[c]), depth) if reranked[c] else np.zeros(0, np.int64)
        for c in range(len(blended))
    ]
    movable = [items[~_for(unseen, c)[items]] for c, items in enumerate(top)]
    rows = [
        design(
            arrays,
            normalised[c],
            np.asarray(blended[c]),
            movable[c],
            states[c],
            groups[c],
            _for(launch_age_days, c),
        )
        for c in range(len(top))
    ]
    return Candidates(top, movable, np.vstack(rows) if rows else np.zeros((0, 0)))


def reorder(blended: np.ndarray, chosen: Candidates, raw: np.ndarray) -> np.ndarray:
    """The blend's scores (customers, items) with each customer's top re-ranked by
    ``raw`` (one tree score per row of ``chosen.rows``), slots as :func:`rerank` says."""
    out = np.array(blended, dtype=np.float64, copy=True)
    start = 0
    for c, items in enumerate(chosen.top):
        # Log-odds order the same as probabilities: no need for the logistic.
        odds = raw[start : start + len(chosen.movable[c])]
        start += len(chosen.movable[c])
        slot_scores = out[c, items] - np.arange(len(items)) * SLOT_STEP
        out[c, _slotted(items, chosen.movable[c], odds)] = slot_scores
    return out


def rerank(
    arrays: Arrays,
    normalised: np.ndarray,
    blended: np.ndarray,
    states: Sequence[CustomerState],
    groups: Sequence[int],
    launch_age_days: np.ndarray | Sequence[np.ndarray],
    unseen: np.ndarray | Sequence[np.ndarray],
) -> np.ndarray:
    """Re-ranked scores (customers, items). The trees order each customer's blend top
    ``depth``; every slot keeps the blend's score of that rank (less ``SLOT_STEP`` per
    slot, so ties cannot undo the order), so the scores stay on the blend's scale and
    whatever serving adds to them (the page's context, session boosts, tactics) weighs
    as much as before. Items past the depth, and excluded ones, keep their blend scores.

    Customers whose blend group is not in ``reranked_groups`` keep the blend's order.
    Products nobody interacted with in training (``unseen``, bool per item) keep their
    slot in the blend's order: validation holds few of them and the trees learned to bury
    them, while the blend's new-product floor gives them their place on purpose.

    ``normalised`` is (customers, models, items), ``blended`` (customers, items); one
    state and blend group per customer; item launch ages at each state's "now" and the
    unseen flags, one array for all customers or one per customer (pooled validation
    windows differ)."""
    chosen = candidates(arrays, normalised, blended, states, groups, launch_age_days, unseen)
    if not len(chosen.rows):
        return np.array(blended, dtype=np.float64, copy=True)
    return reorder(blended, chosen, tree_scores(arrays, chosen.rows))


def _slotted(order: np.ndarray, movable: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``order``'s items (the blend's top, best first) re-ranked: the ``movable`` ones
    sorted by ``score`` (best first, ties in blend order) into the movable slots, the
    others left in theirs.

    >>> _slotted(np.array([5, 9, 7]), np.array([5, 7]), np.array([0.2, 0.8])).tolist()
    [7, 9, 5]
    """
    slots = np.flatnonzero(np.isin(order, movable))
    items = order.copy()
    items[slots] = movable[np.argsort(-score, kind="stable")]
    return items
