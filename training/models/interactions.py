"""Customer x product interactions from clean events, id vocabularies and temporal splits.

Every model trains on one :class:`Interactions`: the events of known customers and
products as integer indices (sorted by customer, then time), ages in days relative to a
reference time, optional product attributes (for the content model) and optional
customer segments (for segment popularity).

Event-type weights (:class:`EventWeights`, used by the confidence matrix, popularity,
ALS and the content profiles):

================  ======  ==============================================================
event type        weight  why
================  ======  ==============================================================
view              1       the weakest signal, and the most frequent one
add_to_cart       3       intent to buy
purchase          5       the strongest implicit signal; repeats add up
rating            3       the customer used the item (its value matters to SVD only)
remove_from_cart  0       not a positive signal; the earlier add_to_cart still counts
================  ======  ==============================================================

Quantities do not multiply weights: a bulk order is one decision, and quantity
outliers would otherwise dominate. Optional recency decay multiplies each event's weight
by ``0.5 ** (age_days / half_life_days)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from segrec.scoring import EVENT_TYPES, CustomerState, decay

DAY = pd.Timedelta(days=1)
LAUNCH_COLUMN = "launch_ts"  # products: when the product went on sale (optional)


def launched_by(products: pd.DataFrame, when: pd.Timestamp | str) -> np.ndarray:
    """Per products row: on sale at ``when``, i.e. launched by then or undated (the
    catalogue has it and nothing says otherwise). Every row without a ``launch_ts``
    column. Naive ``when`` is UTC.

    >>> products = pd.DataFrame({"launch_ts": ["2026-01-01", None, "2026-03-01"]})
    >>> launched_by(products, "2026-02-01").tolist()
    [True, True, False]
    """
    if LAUNCH_COLUMN not in products:
        return np.ones(len(products), dtype=bool)
    shown = pd.Timestamp(when)
    if shown.tzinfo is None:
        shown = shown.tz_localize("UTC")
    launch = pd.to_datetime(products[LAUNCH_COLUMN], utc=True)
    return ~(launch > shown).to_numpy(dtype=bool)


class IdVocabulary:
    """Raw ids <-> contiguous indices, like Surprise's raw and inner ids.

    Unknown ids map to -1 instead of raising, so a lookup never turns into an
    ``IndexError`` further down; every model treats -1 as "unknown".

    Parameters
    ----------
    ids : iterable of str
        The ids in index order; duplicates keep their first position.

    Examples
    --------
    >>> vocab = IdVocabulary(["P2", "P1"])
    >>> vocab.index(["P1", "P9"])
    array([ 1, -1])
    >>> vocab.ids([0])
    array(['P2'], dtype=object)
    """

    def __init__(self, ids: Iterable[str]) -> None:
        values = pd.unique(pd.Series(list(ids), dtype=object))
        self._index = pd.Index(values, dtype=object)

    @classmethod
    def from_values(cls, values: Iterable[str]) -> IdVocabulary:
        """The sorted distinct values, so the order does not depend on event order."""
        return cls(sorted(set(values)))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, raw_id: object) -> bool:
        return raw_id in self._index

    def __repr__(self) -> str:
        return f"IdVocabulary({len(self)} ids)"

    def index(self, ids: Iterable[str]) -> np.ndarray:
        """Indices of ``ids``; -1 for ids not in the vocabulary."""
        return self._index.get_indexer(pd.Index(list(ids), dtype=object)).astype(np.int64)

    def index_of(self, raw_id: str) -> int:
        """Index of one id; -1 when unknown."""
        return int(self.index([raw_id])[0])

    def ids(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        """Raw ids at ``indices`` (which must be valid)."""
        return self._index.to_numpy()[np.asarray(indices, dtype=np.int64)]

    def to_array(self) -> np.ndarray:
        """The ids as a unicode array, storable with ``np.save(..., allow_pickle=False)``."""
        return self._index.to_numpy().astype(str)


@dataclass(frozen=True)
class EventWeights:
    """Weight of each event type in confidences, popularity and content profiles.

    Defaults: view 1 < add_to_cart 3 < purchase 5; rating 3; remove_from_cart 0 (see the
    module docstring for why).

    Examples
    --------
    >>> EventWeights(view=0.5).as_array()
    array([0.5, 3. , 5. , 3. , 0. ])
    """

    view: float = 1.0
    add_to_cart: float = 3.0
    purchase: float = 5.0
    rating: float = 3.0
    remove_from_cart: float = 0.0

    def as_array(self) -> np.ndarray:
        """Weights indexed by event type code (:data:`~segrec.scoring.EVENT_TYPES`)."""
        return np.array([getattr(self, name) for name in EVENT_TYPES], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Interactions:
    """The events of known customers and products, as indices, sorted by customer and time.

    Build with :meth:`from_events`. The events of customer ``u`` are the positions
    ``indptr[u]:indptr[u + 1]`` of the per-event arrays.

    Attributes
    ----------
    customers, items : IdVocabulary
    customer, item : ndarray of int32
        Customer and item index of each event.
    type_code : ndarray of int8
        Event type code (index into ``EVENT_TYPES``).
    age_days : ndarray of float64
        Days between the event and ``reference_time`` (never negative).
    value : ndarray of float64
        The rating of ``rating`` events, NaN otherwise.
    indptr : ndarray of int64
        Event offsets per customer, length ``n_customers + 1``.
    reference_time : pandas.Timestamp
        "Now" for recency: the end of the training window.
    products : DataFrame or None
        Product attributes, row ``i`` describing item ``i``.
    segments : ndarray of int64 or None
        Segment of each customer, -1 when unknown.
    dropped_events : int
        Events left out: unknown customer, product or event type.
    listed : ndarray of bool or None
        Items in the catalogue at ``catalogue_time`` (see :meth:`from_events`): the
        candidates a ranking may hold. None: every item.

    Examples
    --------
    >>> events = pd.DataFrame({
    ...     "customer_id": ["c1", "c1", "c2"], "product_id": ["P1", "P2", "P1"],
    ...     "ts": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True),
    ...     "type": ["view", "purchase", "view"], "value": [None, None, None]})
    >>> data = Interactions.from_events(events)
    >>> data.confidence().toarray()
    array([[1., 5.],
           [1., 0.]], dtype=float32)
    """

    customers: IdVocabulary
    items: IdVocabulary
    customer: np.ndarray
    item: np.ndarray
    type_code: np.ndarray
    age_days: np.ndarray
    value: np.ndarray
    indptr: np.ndarray
    reference_time: pd.Timestamp
    products: pd.DataFrame | None = None
    segments: np.ndarray | None = None
    dropped_events: int = 0
    listed: np.ndarray | None = None

    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame,
        *,
        products: pd.DataFrame | None = None,
        customer_ids: Iterable[str] | None = None,
        reference_time: pd.Timestamp | str | None = None,
        segments: Mapping[str, int] | pd.Series | None = None,
        catalogue_time: pd.Timestamp | str | None = None,
    ) -> Interactions:
        """Index clean events (columns ``customer_id, product_id, ts, type, value``).

        Parameters
        ----------
        events : DataFrame
            Clean events; other columns are ignored.
        products : DataFrame, optional
            Clean products. When given, its ``product_id`` order is the item vocabulary
            (so products without events still get an index, for cold start), and events
            on other products are dropped. Otherwise the vocabulary is the sorted
            distinct product ids of the events.
        customer_ids : iterable of str, optional
            The customer vocabulary; default the sorted distinct customers of the events.
        reference_time : Timestamp, optional
            "Now" for ages; default the latest event. Events after it raise, because
            they would leak the future into training: split first.
        segments : mapping or Series of customer id -> segment, optional
            See :meth:`with_segments`.
        catalogue_time : Timestamp, optional
            When the catalogue being ranked is taken (default ``reference_time``): products
            whose ``launch_ts`` is after it are not ``listed``. An evaluation passes the
            end of its held-out window, so products launched inside the window are
            candidates (with no interactions, as the nightly retraining after each launch
            would ship them) and products launched later are not.
        """
        ts = pd.to_datetime(events["ts"], utc=True)
        now = ts.max() if reference_time is None else pd.Timestamp(reference_time)
        if now.tzinfo is None:
            now = now.tz_localize("UTC")
        if len(events) and ts.max() > now:
            raise ValueError(
                f"events after reference_time {now} (latest {ts.max()}): "
                "split by time before building training interactions"
            )
        product_ids = events["product_id"].astype(object)
        if products is not None:
            items = IdVocabulary(products["product_id"].astype(str))
        else:
            items = IdVocabulary.from_values(product_ids.dropna())
        if customer_ids is not None:
            customers = IdVocabulary(customer_ids)
        else:
            customers = IdVocabulary.from_values(events["customer_id"].dropna())

        customer = customers.index(events["customer_id"].astype(object))
        item = items.index(product_ids)
        type_code = pd.Categorical(events["type"], categories=list(EVENT_TYPES)).codes
        keep = (customer >= 0) & (item >= 0) & (type_code >= 0)
        age = ((now - ts) / DAY).to_numpy(dtype=np.float64)
        if "value" in events:
            value = pd.to_numeric(events["value"], errors="coerce").to_numpy(dtype=np.float64)
        else:
            value = np.full(len(events), np.nan)

        customer, item, type_code, age, value = (
            customer[keep],
            item[keep],
            type_code[keep],
            age[keep],
            value[keep],
        )
        # Oldest first within a customer: larger age = earlier.
        order = np.lexsort((-age, customer))
        indptr = np.zeros(len(customers) + 1, dtype=np.int64)
        np.cumsum(np.bincount(customer, minlength=len(customers)), out=indptr[1:])
        aligned = listed = None
        if products is not None:
            aligned = products.drop_duplicates("product_id").reset_index(drop=True)
            if LAUNCH_COLUMN in aligned:
                listed = launched_by(aligned, now if catalogue_time is None else catalogue_time)
        data = cls(
            customers=customers,
            items=items,
            customer=customer[order].astype(np.int32),
            item=item[order].astype(np.int32),
            type_code=type_code[order].astype(np.int8),
            age_days=age[order],
            value=value[order],
            indptr=indptr,
            reference_time=now,
            products=aligned,
            dropped_events=int((~keep).sum()),
            listed=listed,
        )
        return data if segments is None else data.with_segments(segments)

    def with_segments(self, segments: Mapping[str, int] | pd.Series) -> Interactions:
        """A copy with each customer's segment (customer id -> int); missing ones get -1."""
        mapping = pd.Series(segments, dtype="Int64") if isinstance(segments, Mapping) else segments
        aligned = pd.Series(mapping).reindex(self.customers.ids(np.arange(self.n_customers)))
        values = aligned.fillna(-1).to_numpy(dtype=np.int64)
        return dataclasses.replace(self, segments=values)

    @property
    def n_customers(self) -> int:
        return len(self.customers)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_events(self) -> int:
        return len(self.customer)

    def event_weights(
        self, weights: EventWeights, half_life_days: float | None = None
    ) -> np.ndarray:
        """Each event's type weight, times its recency decay when a half-life is given."""
        result = weights.as_array()[self.type_code]
        if half_life_days is not None:
            result = result * decay(self.age_days, half_life_days)
        return result

    def confidence(
        self, weights: EventWeights | None = None, half_life_days: float | None = None
    ) -> sp.csr_matrix:
        """Customer x item confidence: summed event weights (optionally decayed).

        A float32 CSR matrix of shape ``(n_customers, n_items)`` with sorted indices and
        no stored zeros (so a row's ``nnz`` is the customer's number of items).
        """
        w = self.event_weights(weights or EventWeights(), half_life_days)
        matrix = sp.csr_matrix(
            (w.astype(np.float32), (self.customer, self.item)),
            shape=(self.n_customers, self.n_items),
            dtype=np.float32,
        )
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        matrix.sort_indices()
        return matrix

    def state(self, customer: int) -> CustomerState:
        """The customer's events as a :class:`CustomerState` (empty when unknown)."""
        if not 0 <= customer < self.n_customers:
            return CustomerState()
        lo, hi = self.indptr[customer], self.indptr[customer + 1]
        segment = -1 if self.segments is None else int(self.segments[customer])
        return CustomerState(
            items=self.item[lo:hi],
            types=self.type_code[lo:hi],
            age_days=self.age_days[lo:hi],
            segment=segment,
        )

    def items_of(self, customer: int, types: Iterable[str] | None = None) -> np.ndarray:
        """Distinct items of the customer's events (of the given types), sorted."""
        if not 0 <= customer < self.n_customers:
            return np.empty(0, dtype=np.int64)
        lo, hi = self.indptr[customer], self.indptr[customer + 1]
        items = self.item[lo:hi]
        if types is not None:
            codes = [EVENT_TYPES.index(t) for t in types]
            items = items[np.isin(self.type_code[lo:hi], codes)]
        return np.unique(items).astype(np.int64)


def customer_state(
    events: pd.DataFrame,
    items: IdVocabulary,
    *,
    now: pd.Timestamp | str,
    segment: int = -1,
) -> CustomerState:
    """A :class:`CustomerState` from one customer's raw events (e.g. a live session).

    Products unknown to ``items`` and unknown event types are dropped; events after
    ``now`` count as age 0.
    """
    ts = pd.to_datetime(events["ts"], utc=True)
    now_ts = pd.Timestamp(now)
    if now_ts.tzinfo is None:
        now_ts = now_ts.tz_localize("UTC")
    codes = pd.Categorical(events["type"], categories=list(EVENT_TYPES)).codes
    item = items.index(events["product_id"].astype(object))
    keep = codes >= 0
    return CustomerState(
        items=item[keep],
        types=codes[keep],
        age_days=((now_ts - ts) / DAY).to_numpy(dtype=np.float64)[keep],
        segment=segment,
    )


@dataclass(frozen=True)
class TemporalSplit:
    """Events split at two cuts: train ``<= validation_cut <`` validation ``<= test_cut <`` test.

    Fit on ``train`` (reference time ``validation_cut``) and tune on ``validation``; for
    the final test, refit on ``before_test`` (reference time ``test_cut``) and evaluate on
    ``test``. No event after a cut reaches the side before it.
    """

    validation_cut: pd.Timestamp
    test_cut: pd.Timestamp
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    @property
    def before_test(self) -> pd.DataFrame:
        """Train and validation events: what the final model may see."""
        return pd.concat([self.train, self.validation], ignore_index=True)


def temporal_split(
    events: pd.DataFrame,
    *,
    test_days: float = 28.0,
    validation_days: float = 28.0,
    end: pd.Timestamp | str | None = None,
) -> TemporalSplit:
    """Split events by time: the last ``test_days`` are test, the ``validation_days``
    before them validation, everything earlier train.

    Parameters
    ----------
    events : DataFrame
        Clean events with a ``ts`` column.
    test_days, validation_days : float, default=28
        Window lengths; ``validation_days=0`` gives an empty validation set.
    end : Timestamp, optional
        End of the data; default the latest event.

    Examples
    --------
    >>> events = pd.DataFrame({"ts": pd.date_range("2026-01-01", periods=60, freq="D",
    ...                                            tz="UTC")})
    >>> split = temporal_split(events, test_days=10, validation_days=10)
    >>> len(split.train), len(split.validation), len(split.test)
    (40, 10, 10)
    """
    if test_days < 0 or validation_days < 0:
        raise ValueError("test_days and validation_days must be >= 0")
    ts = pd.to_datetime(events["ts"], utc=True)
    last = ts.max() if end is None else pd.Timestamp(end)
    if last.tzinfo is None:
        last = last.tz_localize("UTC")
    test_cut = last - pd.Timedelta(days=test_days)
    validation_cut = test_cut - pd.Timedelta(days=validation_days)
    return TemporalSplit(
        validation_cut=validation_cut,
        test_cut=test_cut,
        train=events[ts <= validation_cut].reset_index(drop=True),
        validation=events[(ts > validation_cut) & (ts <= test_cut)].reset_index(drop=True),
        test=events[ts > test_cut].reset_index(drop=True),
    )


def held_out_items(
    events: pd.DataFrame,
    items: IdVocabulary,
    *,
    types: Iterable[str] = ("purchase",),
) -> dict[str, np.ndarray]:
    """Per customer id, the sorted distinct item indices of held-out events of ``types``.

    Keyed by raw customer id, so customers unseen in training (cold start) are kept;
    products unknown to ``items`` are dropped (no model can rank them).
    """
    chosen = events[events["type"].isin(list(types))]
    item = items.index(chosen["product_id"].astype(object))
    frame = pd.DataFrame({"customer_id": chosen["customer_id"].to_numpy(), "item": item})
    frame = frame[frame["item"] >= 0]
    return {
        str(customer): np.unique(group.to_numpy(dtype=np.int64))
        for customer, group in frame.groupby("customer_id", sort=True)["item"]
    }
