"""Live session aggregates: fold validated storefront events into the customer's current
session and push it to Feast's online store, so the next read reflects it.

Used by ``POST /events``. The offline copy (``customer_sessions.parquet``, for training
reads) is replayed from the event log by ``training/features/sessions.py`` through the
same :func:`fold`, :func:`from_stored` and :func:`session_frame`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

SESSION_VIEW = "customer_session"
SESSION_PUSH_SOURCE = "customer_session_push"
MAX_ITEMS = 50  # the newest items kept per list; a session is a page or two, not a history
SESSION_FIELDS = (
    "session_id",
    "session_views",
    "session_carts",
    "cart_value",
    "last_event_unix",
    "viewed_items",
    "carted_items",
    "categories_touched",
    "purchased_items",
)


@dataclass(frozen=True)
class LiveEvent:
    """A storefront event that has passed validation."""

    customer_id: str
    product_id: str
    type: str  # view, add_to_cart, remove_from_cart, purchase, rating
    ts: dt.datetime
    quantity: int = 1
    price: float | None = None
    session_id: str | None = None
    value: float | None = None  # the rating of a rating event
    # Idempotency key: the client's, or derived from the event's content when absent, so
    # a retried batch is logged and ingested once.
    event_id: str = ""


@dataclass(frozen=True)
class SessionState:
    session_id: str
    session_views: int = 0
    session_carts: int = 0
    cart_value: float = 0.0
    last_event_unix: int = 0
    viewed_items: tuple[str, ...] = ()
    carted_items: tuple[str, ...] = ()
    categories_touched: tuple[str, ...] = ()
    purchased_items: tuple[str, ...] = ()
    cart_lines: dict[str, float] = field(default_factory=dict, compare=False)


def _push_front(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return (item, *(i for i in items if i != item))[:MAX_ITEMS]


def advance(
    state: SessionState | None,
    event: LiveEvent,
    category: str | None,
    timeout: dt.timedelta,
) -> SessionState:
    """The session after ``event``: a new one when the session id changes or the customer
    was idle longer than ``timeout``."""
    unix = int(event.ts.timestamp())
    session_id = event.session_id or (state.session_id if state else f"live-{unix}")
    expired = state is not None and unix - state.last_event_unix > timeout.total_seconds()
    if state is None or expired or (event.session_id and event.session_id != state.session_id):
        state = SessionState(session_id=session_id)
    line_value = event.quantity * (event.price or 0.0)
    lines = dict(state.cart_lines)
    carted = state.carted_items
    if event.type == "view":
        state = replace(
            state,
            session_views=state.session_views + 1,
            viewed_items=_push_front(state.viewed_items, event.product_id),
        )
    elif event.type == "add_to_cart":
        lines[event.product_id] = lines.get(event.product_id, 0.0) + line_value
        carted = _push_front(carted, event.product_id)
        state = replace(state, session_carts=state.session_carts + 1)
    elif event.type in ("remove_from_cart", "purchase"):
        # A purchase empties those lines from the cart; a removal takes them out.
        lines.pop(event.product_id, None)
        carted = tuple(i for i in carted if i != event.product_id)
        if event.type == "purchase":
            state = replace(
                state, purchased_items=_push_front(state.purchased_items, event.product_id)
            )
    if category:
        state = replace(state, categories_touched=_push_front(state.categories_touched, category))
    return replace(
        state,
        carted_items=carted,
        cart_lines=lines,
        cart_value=round(sum(lines.values()), 2),
        last_event_unix=max(unix, state.last_event_unix),
    )


def fold(
    states: Mapping[str, SessionState | None],
    events: Iterable[LiveEvent],
    product_categories: Mapping[str, str],
    timeout: dt.timedelta,
) -> dict[str, SessionState]:
    """The sessions after one batch of ``events``, from each customer's stored session in
    ``states`` (None: none yet): events fold in time order per customer. One row per
    customer touched. Pure, so ``POST /events`` and the offline copy replayed from the
    event log (``training/features/sessions.py``) cannot drift apart."""
    current: dict[str, SessionState | None] = dict(states)
    touched: dict[str, None] = {}
    for event in sorted(events, key=lambda e: (e.customer_id, e.ts)):
        current[event.customer_id] = advance(
            current.get(event.customer_id),
            event,
            product_categories.get(event.product_id),
            timeout,
        )
        touched[event.customer_id] = None
    return {c: s for c in touched if (s := current[c]) is not None}


def stored_values(state: SessionState) -> dict[str, Any]:
    """What the online store keeps of a session: the ``customer_session`` fields."""
    return {
        "session_id": state.session_id,
        "session_views": state.session_views,
        "session_carts": state.session_carts,
        "cart_value": float(state.cart_value),
        "last_event_unix": state.last_event_unix,
        "viewed_items": list(state.viewed_items),
        "carted_items": list(state.carted_items),
        "categories_touched": list(state.categories_touched),
        "purchased_items": list(state.purchased_items),
    }


def from_stored(values: Mapping[str, Any]) -> SessionState | None:
    """The session as read back from stored ``values`` (None without a session)."""
    session_id = values.get("session_id")
    if not session_id:
        return None
    carted = tuple(values.get("carted_items") or ())
    value = float(values.get("cart_value") or 0.0)
    return SessionState(
        session_id=session_id,
        session_views=int(values.get("session_views") or 0),
        session_carts=int(values.get("session_carts") or 0),
        cart_value=value,
        last_event_unix=int(values.get("last_event_unix") or 0),
        viewed_items=tuple(values.get("viewed_items") or ()),
        carted_items=carted,
        categories_touched=tuple(values.get("categories_touched") or ()),
        purchased_items=tuple(values.get("purchased_items") or ()),
        # Line values are not stored; spread the cart value over its items.
        cart_lines={item: value / len(carted) for item in carted} if carted else {},
    )


def session_frame(sessions: Iterable[tuple[str, SessionState]]) -> pd.DataFrame:
    """One ``customer_session`` row per (customer, session), stamped with the session's
    last event: what ``POST /events`` pushes online and what the offline copy holds."""
    pairs = list(sessions)
    rows = [stored_values(s) for _, s in pairs]
    frame = pd.DataFrame(
        {
            "customer_id": [c for c, _ in pairs],
            **{name: [row[name] for row in rows] for name in SESSION_FIELDS},
            "event_timestamp": [
                dt.datetime.fromtimestamp(s.last_event_unix, dt.UTC) for _, s in pairs
            ],
        }
    )
    return frame.astype(
        {"session_views": "int64", "session_carts": "int64", "last_event_unix": "int64"}
    )


# Feast's stores keep microseconds: the smallest step that makes a stamp newer.
STAMP_STEP = dt.timedelta(microseconds=1)


def _aware(stamp: dt.datetime | None) -> dt.datetime | None:
    """Stores return naive UTC (SQLite) or aware (Redis) stamps: make them comparable."""
    if stamp is None or stamp.tzinfo is not None:
        return stamp
    return stamp.replace(tzinfo=dt.UTC)


def entity_key(customer_id: str) -> Any:
    """Feast's key of a customer's row in the online store."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)])


def session_rows(
    view: Any,
    states: Mapping[str, SessionState],
    stored_at: Mapping[str, dt.datetime] | None = None,
) -> list[tuple[Any, dict[str, Any], dt.datetime, None]]:
    """Feast's online rows (entity key, value protos by feature, event time, no created
    time) of ``view`` for ``states``, converted with Feast's own type map.

    A row is stamped with its session's last event, but always after ``stored_at`` (the
    stamp of the row it replaces, if any): Feast's Redis store skips a write that is not
    newer than the stored one, and event times are whole seconds, so a second batch of
    events within the same second (or one arriving late) would otherwise be lost.
    """
    from feast.type_map import python_values_to_proto_values

    stored = [stored_values(state) for state in states.values()]
    columns = {
        feature.name: python_values_to_proto_values(
            [row[feature.name] for row in stored], feature.dtype.to_value_type()
        )
        for feature in view.features
    }
    before = stored_at or {}
    rows = []
    for i, (customer, state) in enumerate(states.items()):
        stamp = dt.datetime.fromtimestamp(state.last_event_unix, dt.UTC)
        if customer in before:
            stamp = max(stamp, before[customer] + STAMP_STEP)
        rows.append((entity_key(customer), {n: v[i] for n, v in columns.items()}, stamp, None))
    return rows


class LiveSessionWriter:
    """Reads the current session from the online store, folds events in, pushes it back."""

    def __init__(
        self, store: Any, product_categories: Mapping[str, str], timeout: dt.timedelta
    ) -> None:
        self.store = store
        self.product_categories = product_categories
        self.timeout = timeout
        self._view: Any = None  # the customer_session view and Feast's provider, on first use
        self._provider: Any = None

    def current(self, customer_ids: list[str]) -> dict[str, SessionState | None]:
        """The stored session of each customer (None without one), as Feast's
        ``get_online_features`` returns it."""
        return {customer: state for customer, (_, state) in self._read(customer_ids).items()}

    def _read(
        self, customer_ids: list[str]
    ) -> dict[str, tuple[dt.datetime | None, SessionState | None]]:
        """Each customer's stored stamp and session, read through the provider for the same
        reason as :meth:`push` writes through it."""
        from feast.type_map import feast_value_type_to_python_type

        view, provider = self._target()
        keys = [entity_key(customer) for customer in customer_ids]
        rows = provider.online_read(self.store.config, view, keys, list(SESSION_FIELDS))
        return {
            customer: (
                _aware(stamp),
                from_stored(
                    {n: feast_value_type_to_python_type(v) for n, v in (values or {}).items()}
                ),
            )
            for customer, (stamp, values) in zip(customer_ids, rows, strict=True)
        }

    def _target(self) -> tuple[Any, Any]:
        """The customer_session view and Feast's provider, looked up once."""
        if self._view is None:
            self._view = self.store.get_feature_view(SESSION_VIEW)
            self._provider = self.store._get_provider()
        return self._view, self._provider

    def apply(self, events: Iterable[LiveEvent]) -> dict[str, SessionState]:
        """Fold ``events`` (in time order per customer) and push one row per customer."""
        batch = list(events)
        if not batch:
            return {}
        stored = self._read(list(dict.fromkeys(e.customer_id for e in batch)))
        states = {customer: state for customer, (_, state) in stored.items()}
        final = fold(states, batch, self.product_categories, self.timeout)
        self.push(final, {c: stamp for c, (stamp, _) in stored.items() if stamp is not None})
        return final

    def push(
        self,
        states: Mapping[str, SessionState],
        stored_at: Mapping[str, dt.datetime] | None = None,
    ) -> None:
        """Write one ``customer_session`` row per customer to the online store."""
        # Feast's rows built here and handed to the provider's online_write_batch (what
        # FeatureStore.push and write_to_online_store end in): their DataFrame, Arrow and
        # registry round trips were 85% of the write's CPU and a fifth of the worker's
        # under the storefront mix (py-spy, 2026-11-23). tests/test_feature_store.py holds
        # the stored rows byte-equal to Feast's own write and the push source to this one
        # view.
        if not states:
            return
        view, provider = self._target()
        provider.online_write_batch(
            self.store.config, view, session_rows(view, states, stored_at), progress=None
        )
