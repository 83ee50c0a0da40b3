"""Evaluation protocols: which events a model may learn from, and what it must find.

Each protocol turns clean events into an :class:`EvaluationSplit` with two
:class:`HeldOut` parts:

- ``test``: ``train`` (the events the final model learns from) and ``held_out`` (the
  events it never sees; their relevant items are what it must rank);
- ``validation``: the same protocol applied again to ``test.train`` only, for tuning
  hyperparameters and blend weights without touching the test side.

Protocols
---------
temporal (:func:`temporal_protocol`, the default, what production sees)
    One global cut-off: held out = events in the last ``test_days``; validation = the
    ``validation_days`` before that. Training: ``ts <= cut``; held out: ``ts > cut``.
    Earlier events of a held-out (customer, item) pair stay in training (repeat purchases
    are predictable from history; exclude them at ranking time if wanted).
leave-last-n-out (:func:`leave_last_n_out`)
    Per customer with more than ``n`` relevant events: the customer's cut is the time of
    their ``n``-th last relevant event, and every event of theirs at or after it is held
    out (events tied at the cut go together, so one basket is never split). By default
    every earlier event of the held-out (customer, item) pairs is dropped from training
    too. Other customers keep all their events in training.
random ratio (:func:`random_ratio_split`, comparable with published MovieLens tables)
    Per customer, a seeded random ``test_ratio`` of the distinct items with relevant
    events is held out, with every event of those (customer, item) pairs.

Relevance: a held-out item is relevant when the customer has a held-out event of one of
``relevant_types`` on it (default: purchases, or ratings when the data has ratings but no
purchases, as MovieLens-format data does), and with ``min_rating`` set, a rating event
counts only when its value is at least ``min_rating``.

Examples
--------
>>> events = pd.DataFrame({
...     "customer_id": ["a", "a", "a", "b"], "product_id": ["P1", "P2", "P3", "P1"],
...     "ts": pd.to_datetime(["2026-01-01", "2026-01-05", "2026-01-09", "2026-01-10"],
...                         utc=True),
...     "type": ["purchase"] * 4})
>>> split = leave_last_n_out(events, n=1)
>>> split.test.relevant_pairs()
  customer_id product_id
0           a         P3
>>> sorted(split.test.train["product_id"])
['P1', 'P1', 'P2']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from training.models.interactions import IdVocabulary, held_out_items, temporal_split

PAIR = ["customer_id", "product_id"]


def default_relevant_types(events: pd.DataFrame) -> tuple[str, ...]:
    """``("purchase",)``, or ``("rating",)`` when there are ratings but no purchases.

    Examples
    --------
    >>> default_relevant_types(pd.DataFrame({"type": ["rating", "rating"]}))
    ('rating',)
    """
    types = set(events["type"].unique())
    if "purchase" not in types and "rating" in types:
        return ("rating",)
    return ("purchase",)


@dataclass(frozen=True)
class HeldOut:
    """Training events and the held-out events a model is scored on.

    Attributes
    ----------
    train : DataFrame
        The events the model may learn from.
    held_out : DataFrame
        Events the model never sees; :meth:`relevant` reads relevance from them.
    reference_time : Timestamp
        "Now" for the training side (its latest event, or the cut for the temporal
        protocol): pass it to ``Interactions.from_events(reference_time=...)``.
    relevant_types : tuple of str
        Event types that make a held-out item relevant.
    min_rating : float or None
        With it, rating events count only when ``value >= min_rating``.
    n_dropped : int
        Events in neither side (earlier history of held-out pairs, when dropped).
    unscored : frozenset of str
        Customers whose held-out events score nothing (:meth:`without`): their training
        events stay, for what is learnt from everyone.
    """

    train: pd.DataFrame
    held_out: pd.DataFrame
    reference_time: pd.Timestamp
    relevant_types: tuple[str, ...]
    min_rating: float | None = None
    n_dropped: int = 0
    unscored: frozenset[str] = frozenset()

    def without(self, customers: Iterable[str]) -> HeldOut:
        """The same split, with ``customers``' held-out events scoring nothing: for
        customers no model's ranking reaches, such as those without personalisation
        consent, whom serving answers with global popularity whatever the model.

        Examples
        --------
        >>> events = pd.DataFrame({"customer_id": ["a", "b"], "product_id": ["P1", "P2"],
        ...     "type": ["purchase"] * 2, "ts": pd.to_datetime(["2026-01-02"] * 2, utc=True)})
        >>> side = HeldOut(events.iloc[:0], events, pd.Timestamp("2026-01-01", tz="UTC"),
        ...                ("purchase",))
        >>> side.without(["b"]).relevant_pairs()["customer_id"].tolist()
        ['a']
        >>> side.without(["b"]).summary()["unscored_customers"]
        1
        """
        return replace(self, unscored=self.unscored | frozenset(map(str, customers)))

    @property
    def catalogue_time(self) -> pd.Timestamp:
        """When the catalogue a model ranks here is taken: the latest event of either side
        (the end of the held-out window). Products launched by then are candidates, those
        launched inside the window with no interactions yet (as the nightly retraining
        after each launch ships them); products launched later are not: ranking them
        would fill the list with products nobody could buy yet."""
        latest = [frame["ts"].max() for frame in (self.train, self.held_out) if len(frame)]
        return pd.Timestamp(max(latest)) if latest else self.reference_time

    @property
    def scored_held_out(self) -> pd.DataFrame:
        """The held-out events of every customer but the :attr:`unscored`."""
        if not self.unscored:
            return self.held_out
        return self.held_out[~self.held_out["customer_id"].astype(str).isin(self.unscored)]

    def relevant_events(self) -> pd.DataFrame:
        """The scored held-out events that make their item relevant."""
        frame = self.scored_held_out
        return frame[_relevant_mask(frame, self.relevant_types, self.min_rating)]

    def relevant_pairs(self) -> pd.DataFrame:
        """Distinct relevant (customer_id, product_id) pairs, sorted."""
        pairs = self.relevant_events()[PAIR].drop_duplicates()
        return pairs.sort_values(PAIR).reset_index(drop=True)

    def relevant(
        self, items: IdVocabulary, *, exclude_train_types: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Per customer id, the sorted relevant item indices (products unknown to ``items``
        dropped; customers absent from training kept, as cold starts).

        Parameters
        ----------
        items : IdVocabulary
            The item vocabulary of the model's training interactions.
        exclude_train_types : iterable of str, optional
            Leave out items the customer already had training events of these types on,
            e.g. ``("purchase",)`` to evaluate new items only (when rankings exclude
            already-purchased items, those repeats cannot be found anyway).
        """
        chosen = self.relevant_events()
        if exclude_train_types is not None:
            seen = self.train[self.train["type"].isin(list(exclude_train_types))]
            chosen = chosen[~_pairs_in(chosen, seen)]
        return held_out_items(chosen, items, types=self.relevant_types)

    def summary(self) -> dict[str, Any]:
        """Counts, JSON-ready."""
        relevant = self.relevant_pairs()
        mask = _relevant_mask(self.held_out, self.relevant_types, self.min_rating)
        everyone = self.held_out.loc[mask, "customer_id"]
        return {
            "train_events": len(self.train),
            "held_out_events": len(self.held_out),
            "dropped_events": self.n_dropped,
            "relevant_pairs": len(relevant),
            "customers_with_relevant": int(relevant["customer_id"].nunique()),
            # Customers with relevant held-out events left unscored (no consent, say).
            "unscored_customers": int(everyone.nunique()) - int(relevant["customer_id"].nunique()),
            "reference_time": self.reference_time.isoformat(),
        }


@dataclass(frozen=True)
class EvaluationSplit:
    """One protocol's split: ``test`` for the final figures, ``validation`` for tuning.

    ``validation`` is carved from ``test.train`` only, so tuning never sees the test side.
    """

    protocol: str
    test: HeldOut
    validation: HeldOut
    params: dict[str, Any] = field(default_factory=dict)

    def without(self, customers: Iterable[str]) -> EvaluationSplit:
        """Both sides with ``customers``' held-out events scoring nothing
        (:meth:`HeldOut.without`)."""
        customers = frozenset(map(str, customers))
        return replace(
            self, test=self.test.without(customers), validation=self.validation.without(customers)
        )

    def summary(self) -> dict[str, Any]:
        """Protocol, parameters and counts, JSON-ready (for ``reports/evaluation.json``)."""
        return {
            "protocol": self.protocol,
            "params": self.params,
            "test": self.test.summary(),
            "validation": self.validation.summary(),
        }


def temporal_protocol(
    events: pd.DataFrame,
    *,
    test_days: float = 28.0,
    validation_days: float = 28.0,
    end: pd.Timestamp | str | None = None,
    relevant_types: Iterable[str] | None = None,
    min_rating: float | None = None,
) -> EvaluationSplit:
    """Global cut-off (:func:`~training.models.interactions.temporal_split`).

    Test: train on events with ``ts <= test_cut``, find the relevant items of the events
    after it (the last ``test_days``). Validation: train on ``ts <= validation_cut``,
    find those of ``(validation_cut, test_cut]``. Customers first seen after a cut are
    held out too (cold starts).

    Examples
    --------
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "a", "a"], "product_id": ["P1", "P2", "P3"],
    ...     "ts": pd.to_datetime(["2026-01-01", "2026-01-20", "2026-01-30"], utc=True),
    ...     "type": ["purchase"] * 3})
    >>> split = temporal_protocol(events, test_days=5, validation_days=14)
    >>> list(split.test.relevant_pairs()["product_id"]), len(split.test.train)
    (['P3'], 2)
    >>> list(split.validation.relevant_pairs()["product_id"]), len(split.validation.train)
    (['P2'], 1)
    """
    types = _types(events, relevant_types)
    split = temporal_split(events, test_days=test_days, validation_days=validation_days, end=end)
    test = HeldOut(
        train=split.before_test,
        held_out=split.test,
        reference_time=split.test_cut,
        relevant_types=types,
        min_rating=min_rating,
    )
    validation = HeldOut(
        train=split.train,
        held_out=split.validation,
        reference_time=split.validation_cut,
        relevant_types=types,
        min_rating=min_rating,
    )
    params = {
        "test_days": test_days,
        "validation_days": validation_days,
        "test_cut": split.test_cut.isoformat(),
        "validation_cut": split.validation_cut.isoformat(),
        "relevant_types": list(types),
        "min_rating": min_rating,
    }
    return EvaluationSplit("temporal", test, validation, params)


def leave_last_n_out(
    events: pd.DataFrame,
    *,
    n: int = 1,
    relevant_types: Iterable[str] | None = None,
    min_rating: float | None = None,
    drop_pair_history: bool = True,
) -> EvaluationSplit:
    """Hold out each customer's last ``n`` relevant events (and everything after).

    For a customer with more than ``n`` relevant events, the cut ``t_u`` is the time of
    their ``n``-th last one (ties in time keep event order); all their events with
    ``ts >= t_u`` are held out, so more than ``n`` relevant events are held out only
    when several share the cut's timestamp. With ``drop_pair_history`` (default), every
    earlier event of a held-out relevant (customer, item) pair is dropped as well, so the
    model cannot simply recall the item; ``False`` keeps that history, like the temporal
    protocol. Validation repeats the procedure on the training side.

    Examples
    --------
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "a", "a"], "product_id": ["P1", "P2", "P1"],
    ...     "ts": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True),
    ...     "type": ["purchase"] * 3})
    >>> split = leave_last_n_out(events, n=1)
    >>> list(split.test.train["product_id"]), split.test.n_dropped
    (['P2'], 1)
    >>> kept = leave_last_n_out(events, n=1, drop_pair_history=False)
    >>> list(kept.test.train["product_id"])
    ['P1', 'P2']
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    types = _types(events, relevant_types)

    def carve(frame: pd.DataFrame) -> HeldOut:
        return _leave_last_n(frame, n, types, min_rating, drop_pair_history)

    test = carve(events)
    params = {
        "n": n,
        "relevant_types": list(types),
        "min_rating": min_rating,
        "drop_pair_history": drop_pair_history,
    }
    return EvaluationSplit("leave_last_n_out", test, carve(test.train), params)


def random_ratio_split(
    events: pd.DataFrame,
    *,
    test_ratio: float = 0.25,
    validation_ratio: float = 0.25,
    relevant_types: Iterable[str] | None = None,
    min_rating: float | None = None,
    random_state: int | np.random.Generator | None = None,
) -> EvaluationSplit:
    """Hold out a seeded random share of each customer's items (e.g. MovieLens 75/25).

    The pool is each customer's distinct items with relevant-type events (all their
    ratings for MovieLens-format data, whatever the value). Of a customer's ``m`` items,
    ``round_half_up(test_ratio * m)`` are held out, capped at ``m - 1`` so at least one
    stays in training (a customer with one item keeps it). Every event of a held-out
    (customer, item) pair is held out; with ``min_rating``, only held-out ratings of at
    least ``min_rating`` are relevant.

    The draw depends on ``random_state`` and the set of pairs, not on row order. The
    validation split repeats the procedure with ``validation_ratio`` on the training side,
    with the same generator (drawn after the test split).

    Examples
    --------
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a"] * 4, "product_id": ["P1", "P2", "P3", "P4"],
    ...     "ts": pd.to_datetime(["2026-01-01"] * 4, utc=True),
    ...     "type": ["rating"] * 4, "value": [5.0, 1.0, 4.0, 2.0]})
    >>> split = random_ratio_split(events, random_state=0)
    >>> len(split.test.held_out), len(split.test.train), len(split.validation.held_out)
    (1, 3, 1)
    """
    for name, ratio in (("test_ratio", test_ratio), ("validation_ratio", validation_ratio)):
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {ratio}")
    types = _types(events, relevant_types)
    rng = np.random.default_rng(random_state)
    test = _random_ratio(events, test_ratio, types, min_rating, rng)
    validation = _random_ratio(test.train, validation_ratio, types, min_rating, rng)
    params = {
        "test_ratio": test_ratio,
        "validation_ratio": validation_ratio,
        "relevant_types": list(types),
        "min_rating": min_rating,
        "random_state": random_state if isinstance(random_state, int | None) else "generator",
    }
    return EvaluationSplit("random_ratio", test, validation, params)


PROTOCOLS: dict[str, Callable[..., EvaluationSplit]] = {
    "temporal": temporal_protocol,
    "leave_last_n_out": leave_last_n_out,
    "random_ratio": random_ratio_split,
}
"""Protocol name -> function, for configuration and the CLI."""


def make_split(protocol: str, events: pd.DataFrame, **params: Any) -> EvaluationSplit:
    """Run the protocol named ``protocol`` (a key of :data:`PROTOCOLS`) on ``events``.

    Examples
    --------
    >>> events = pd.DataFrame({"customer_id": ["a"], "product_id": ["P1"],
    ...     "ts": pd.to_datetime(["2026-01-01"], utc=True), "type": ["purchase"]})
    >>> make_split("leave_last_n_out", events, n=1).protocol
    'leave_last_n_out'
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol](events, **params)


def _types(events: pd.DataFrame, relevant_types: Iterable[str] | None) -> tuple[str, ...]:
    types = default_relevant_types(events) if relevant_types is None else tuple(relevant_types)
    if not types:
        raise ValueError("relevant_types must name at least one event type")
    return types


def _relevant_mask(
    events: pd.DataFrame, types: Iterable[str], min_rating: float | None
) -> np.ndarray:
    mask = events["type"].isin(list(types)).to_numpy()
    if min_rating is not None:
        is_rating = (events["type"] == "rating").to_numpy()
        value = pd.to_numeric(events["value"], errors="coerce").to_numpy(dtype=np.float64)
        mask &= ~is_rating | (value >= min_rating)
    return mask


def _pairs_in(events: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Whether each event's (customer_id, product_id) is one of ``pairs``."""
    index = pd.MultiIndex.from_frame(events[PAIR].astype(object))
    return np.asarray(index.isin(pd.MultiIndex.from_frame(pairs[PAIR].astype(object))))


def _latest(frame: pd.DataFrame, fallback: pd.DataFrame) -> pd.Timestamp:
    source = frame if len(frame) else fallback
    if not len(source):
        return pd.Timestamp("1970-01-01", tz="UTC")
    return pd.Timestamp(pd.to_datetime(source["ts"], utc=True).max())


def _leave_last_n(
    events: pd.DataFrame,
    n: int,
    types: tuple[str, ...],
    min_rating: float | None,
    drop_pair_history: bool,
) -> HeldOut:
    customer = events["customer_id"].reset_index(drop=True)
    ts = pd.to_datetime(events["ts"], utc=True).reset_index(drop=True)
    is_relevant_type = events["type"].isin(list(types)).to_numpy()
    relevant = pd.DataFrame({"customer_id": customer, "ts": ts})[is_relevant_type]
    relevant = relevant.sort_values(["customer_id", "ts"], kind="stable")
    from_end = relevant.groupby("customer_id", sort=False).cumcount(ascending=False)
    counts = relevant.groupby("customer_id", sort=False)["ts"].transform("size")
    cuts = relevant.loc[(from_end == n - 1) & (counts > n)].set_index("customer_id")["ts"]

    cut = customer.map(cuts)
    held = (ts >= cut).to_numpy()  # NaT (customer not eligible) compares False
    held_out = events[held]
    train = events[~held]
    before = len(train)
    if drop_pair_history:
        pairs = held_out[held_out["type"].isin(list(types))]
        train = train[~_pairs_in(train, pairs)]
    return HeldOut(
        train=train.reset_index(drop=True),
        held_out=held_out.reset_index(drop=True),
        reference_time=_latest(train, events),
        relevant_types=types,
        min_rating=min_rating,
        n_dropped=before - len(train),
    )


def _random_ratio(
    events: pd.DataFrame,
    ratio: float,
    types: tuple[str, ...],
    min_rating: float | None,
    rng: np.random.Generator,
) -> HeldOut:
    pairs = events.loc[events["type"].isin(list(types)), PAIR].astype(object).drop_duplicates()
    pairs = pairs.sort_values(PAIR).reset_index(drop=True)
    pairs["draw"] = rng.random(len(pairs))
    by_customer = pairs.groupby("customer_id", sort=False)
    size = by_customer["draw"].transform("size").to_numpy()
    n_test = np.minimum(np.floor(ratio * size + 0.5), size - 1)
    rank = by_customer["draw"].rank(method="first").to_numpy() - 1
    chosen = pairs[rank < n_test]
    held = _pairs_in(events, chosen)
    train = events[~held].reset_index(drop=True)
    return HeldOut(
        train=train,
        held_out=events[held].reset_index(drop=True),
        reference_time=_latest(train, events),
        relevant_types=types,
        min_rating=min_rating,
    )
