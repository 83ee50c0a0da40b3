"""Live session aggregates: fold validated storefront events into the customer's current
session and push it to Feast's online store, so the next read reflects it.

Used by ``POST /events``; the offline copy for retraining comes from the event log.
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


class LiveSessionWriter:
    """Reads the current session from the online store, folds events in, pushes it back."""

    def __init__(
        self, store: Any, product_categories: Mapping[str, str], timeout: dt.timedelta
    ) -> None:
        self.store = store
        self.product_categories = product_categories
        self.timeout = timeout
        self._refs = [f"{SESSION_VIEW}:{name}" for name in SESSION_FIELDS]

    def current(self, customer_ids: list[str]) -> dict[str, SessionState | None]:
        response = self.store.get_online_features(
            features=self._refs, entity_rows=[{"customer_id": c} for c in customer_ids]
        ).to_dict()
        states: dict[str, SessionState | None] = {}
        for i, customer_id in enumerate(customer_ids):
            session_id = response["session_id"][i]
            if not session_id:
                states[customer_id] = None
                continue
            carted = tuple(response["carted_items"][i] or ())
            value = float(response["cart_value"][i] or 0.0)
            states[customer_id] = SessionState(
                session_id=session_id,
                session_views=int(response["session_views"][i] or 0),
                session_carts=int(response["session_carts"][i] or 0),
                cart_value=value,
                last_event_unix=int(response["last_event_unix"][i] or 0),
                viewed_items=tuple(response["viewed_items"][i] or ()),
                carted_items=carted,
                categories_touched=tuple(response["categories_touched"][i] or ()),
                purchased_items=tuple(response["purchased_items"][i] or ()),
                # Line values are not stored; spread the cart value over its items.
                cart_lines={item: value / len(carted) for item in carted} if carted else {},
            )
        return states

    def apply(self, events: Iterable[LiveEvent]) -> dict[str, SessionState]:
        """Fold ``events`` (in time order per customer) and push one row per customer."""
        ordered = sorted(events, key=lambda e: (e.customer_id, e.ts))
        if not ordered:
            return {}
        customers = list(dict.fromkeys(e.customer_id for e in ordered))
        states = self.current(customers)
        for event in ordered:
            states[event.customer_id] = advance(
                states[event.customer_id],
                event,
                self.product_categories.get(event.product_id),
                self.timeout,
            )
        final = {c: s for c, s in states.items() if s is not None}
        self.push(final)
        return final

    def push(self, states: Mapping[str, SessionState]) -> None:
        from feast.data_source import PushMode

        frame = pd.DataFrame(
            {
                "customer_id": list(states),
                "session_id": [s.session_id for s in states.values()],
                "session_views": pd.array([s.session_views for s in states.values()], "int64"),
                "session_carts": pd.array([s.session_carts for s in states.values()], "int64"),
                "cart_value": [float(s.cart_value) for s in states.values()],
                "last_event_unix": pd.array([s.last_event_unix for s in states.values()], "int64"),
                "viewed_items": [list(s.viewed_items) for s in states.values()],
                "carted_items": [list(s.carted_items) for s in states.values()],
                "categories_touched": [list(s.categories_touched) for s in states.values()],
                "purchased_items": [list(s.purchased_items) for s in states.values()],
                "event_timestamp": [
                    dt.datetime.fromtimestamp(s.last_event_unix, dt.UTC) for s in states.values()
                ],
            }
        )
        self.store.push(SESSION_PUSH_SOURCE, frame, to=PushMode.ONLINE)
