"""Validate storefront events one by one, for ``POST /events``.

A batch is never refused as a whole for one bad event: each event is checked on its own
and either accepted (a :class:`segrec.live_session.LiveEvent`) or rejected with its
position, the field at fault and the reason. Accepted events without an ``event_id`` get
one derived from their content, so a batch the storefront retries is counted once.

Rules, beyond types: the customer id is a pseudonym (``c_`` and 16 hex digits), the
product is in the serving bundle's catalogue, the event is not from the future (clock
skew allowed) nor older than the live session window's reach, quantities are 1..10,000,
prices are non-negative and finite, and a rating carries a value from 1 to 5.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from segrec.live_session import LiveEvent
from segrec.pseudonym import CUSTOMER_ID_PATTERN

EventType = Literal["view", "add_to_cart", "remove_from_cart", "purchase", "rating"]
# Defaults; the service takes SEGREC_EVENT_CLOCK_SKEW_SECONDS and SEGREC_EVENT_MAX_AGE_HOURS.
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
MAX_EVENT_AGE = dt.timedelta(days=7)  # older events belong to a batch import, not a session
MAX_QUANTITY = 10_000


class StorefrontEvent(BaseModel):
    """One event as the storefront sends it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    customer_id: str = Field(pattern=CUSTOMER_ID_PATTERN, description="Pseudonymous id.")
    product_id: str = Field(min_length=1, max_length=64)
    type: EventType
    ts: dt.datetime | None = Field(None, description="When it happened (default: received).")
    quantity: int = Field(1, ge=1, le=MAX_QUANTITY)
    price: float | None = Field(None, ge=0)
    value: float | None = Field(None, ge=1, le=5, description="The rating, for rating events.")
    session_id: str | None = Field(None, max_length=128)
    event_id: str | None = Field(None, min_length=1, max_length=128)

    @field_validator("price", "value")
    @classmethod
    def _finite(cls, number: float | None) -> float | None:
        if number is not None and not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number

    @field_validator("ts")
    @classmethod
    def _utc(cls, ts: dt.datetime | None) -> dt.datetime | None:
        if ts is None:
            return None
        if ts.tzinfo is None:
            raise ValueError("needs a time zone (e.g. 2026-11-23T10:15:00Z)")
        try:
            return ts.astimezone(dt.UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC time
            raise ValueError("is out of range once converted to UTC") from None


@dataclass(frozen=True)
class Rejection:
    index: int  # position in the batch
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


def event_id_of(event: StorefrontEvent, ts: dt.datetime) -> str:
    """The client's id, or a content hash: the same event sent twice gets the same id."""
    if event.event_id:
        return event.event_id
    key = "|".join(
        str(part)
        for part in (
            event.customer_id,
            event.product_id,
            event.type,
            ts.isoformat(),
            event.quantity,
            event.session_id,
        )
    )
    return "live-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def validate_events(
    raw_events: Sequence[Any],
    catalogue: Container[str],
    now: dt.datetime,
    erased: Container[str] = frozenset(),
    *,
    max_skew: dt.timedelta = MAX_CLOCK_SKEW,
    max_age: dt.timedelta = MAX_EVENT_AGE,
) -> tuple[list[LiveEvent], list[Rejection]]:
    """Accepted events (in batch order) and the rejected ones with reasons; events of
    ``erased`` customers (the suppression list) are refused, never stored. An event's
    ``ts`` may be at most ``max_skew`` ahead of ``now`` and ``max_age`` behind it (the
    service passes ``SEGREC_EVENT_CLOCK_SKEW_SECONDS`` and ``SEGREC_EVENT_MAX_AGE_HOURS``)."""
    accepted: list[LiveEvent] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            rejected.append(Rejection(index, "", f"expected an object, got {type(raw).__name__}"))
            continue
        try:
            event = StorefrontEvent.model_validate(raw)
        except ValidationError as error:
            first = error.errors(include_url=False, include_context=False)[0]
            field = ".".join(str(part) for part in first["loc"])
            rejected.append(Rejection(index, field, _reason(first)))
            continue
        if event.customer_id in erased:
            rejected.append(Rejection(index, "customer_id", "customer erased: events refused"))
            continue
        ts = event.ts or now
        problem = _check(event, ts, catalogue, now, max_skew, max_age)
        if problem:
            rejected.append(Rejection(index, *problem))
            continue
        accepted.append(
            LiveEvent(
                customer_id=event.customer_id,
                product_id=event.product_id,
                type=event.type,
                ts=ts,
                quantity=event.quantity,
                price=event.price,
                session_id=event.session_id,
                value=event.value,
                event_id=event_id_of(event, ts),
            )
        )
    return accepted, rejected


def _check(
    event: StorefrontEvent,
    ts: dt.datetime,
    catalogue: Container[str],
    now: dt.datetime,
    max_skew: dt.timedelta,
    max_age: dt.timedelta,
) -> tuple[str, str] | None:
    if event.product_id not in catalogue:
        return "product_id", f"unknown product {event.product_id!r}"
    if ts > now + max_skew:
        return "ts", f"{ts.isoformat()} is in the future (now {now.isoformat()})"
    if ts < now - max_age:
        return "ts", f"{ts.isoformat()} is older than {_span(max_age)}: import it instead"
    if event.type == "rating" and event.value is None:
        return "value", "a rating event needs a value from 1 to 5"
    if event.type != "rating" and event.value is not None:
        return "value", f"only rating events carry a value, not {event.type}"
    return None


def _span(age: dt.timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours % 24 == 0 else f"{hours:g} hours"


def _reason(error: Any) -> str:
    message = str(error["msg"])
    # Pydantic's pattern message quotes the regex; say what the id should look like.
    if error["type"] == "string_pattern_mismatch":
        return "must be a pseudonymous customer id: c_ followed by 16 hex digits"
    return re.sub(r"^Value error, ", "", message)
