"""Event validation and the request-size limit, without a trained bundle."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.events import event_id_of, validate_events
from serving.limits import BodySizeLimit

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
CATALOGUE = {"P000001", "P000002"}
CUSTOMER = "c_0123456789abcdef"


def _event(**overrides: Any) -> dict[str, Any]:
    return {"customer_id": CUSTOMER, "product_id": "P000001", "type": "view", **overrides}


def test_good_events_are_accepted_with_defaults() -> None:
    accepted, rejected = validate_events(
        [
            _event(),
            _event(type="add_to_cart", quantity=2, price=9.5, session_id="s1"),
            _event(type="rating", value=4, ts="2026-11-23T11:00:00+01:00"),
        ],
        CATALOGUE,
        NOW,
    )
    assert rejected == []
    assert [e.type for e in accepted] == ["view", "add_to_cart", "rating"]
    assert accepted[0].ts == NOW and accepted[0].quantity == 1
    assert accepted[2].ts == dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
    assert accepted[2].value == 4
    assert all(e.event_id.startswith("live-") for e in accepted)


@pytest.mark.parametrize(
    ("event", "field", "words"),
    [
        (_event(customer_id="17850"), "customer_id", "pseudonymous"),
        (_event(product_id="P-unknown"), "product_id", "unknown product"),
        (_event(type="wishlist"), "type", "view"),
        (_event(quantity=0), "quantity", "greater than or equal to 1"),
        (_event(price=-1), "price", "greater than or equal to 0"),
        (_event(type="rating"), "value", "needs a value"),
        (_event(value=3), "value", "only rating events"),
        (_event(ts="2026-11-23T12:00:00"), "ts", "time zone"),
        (_event(ts="2026-12-24T12:00:00Z"), "ts", "future"),
        (_event(ts="2026-01-01T12:00:00Z"), "ts", "older than"),
        (_event(ts="yesterday"), "ts", "datetime"),
        (_event(colour="red"), "colour", "Extra inputs"),
        ("not an object", "", "expected an object"),
    ],
)
def test_each_bad_event_is_rejected_with_its_field_and_reason(
    event: Any, field: str, words: str
) -> None:
    accepted, rejected = validate_events([_event(), event], CATALOGUE, NOW)
    assert len(accepted) == 1, "one bad event must not sink the batch"
    assert len(rejected) == 1
    assert rejected[0].index == 1 and rejected[0].field == field
    assert words in rejected[0].reason


def test_a_retried_event_keeps_its_id() -> None:
    first, _ = validate_events([_event(ts="2026-11-23T11:59:00Z")], CATALOGUE, NOW)
    again, _ = validate_events([_event(ts="2026-11-23T11:59:00Z")], CATALOGUE, NOW)
    assert first[0].event_id == again[0].event_id
    other, _ = validate_events([_event(ts="2026-11-23T11:58:00Z")], CATALOGUE, NOW)
    assert other[0].event_id != first[0].event_id
    given, _ = validate_events([_event(event_id="shop-42")], CATALOGUE, NOW)
    assert given[0].event_id == "shop-42"
    assert event_id_of  # the function the service and tests share


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


@pytest.fixture
def limited() -> httpx.AsyncClient:
    app = BodySizeLimit(Starlette(routes=[Route("/echo", _echo, methods=["POST"])]), 1000)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _post(client: httpx.AsyncClient, content: Any, **kw: Any) -> httpx.Response:
    async with client:
        return await client.post("/echo", content=content, **kw)


def test_bodies_over_the_limit_get_413_naming_the_limit(limited: httpx.AsyncClient) -> None:
    import asyncio

    ok = asyncio.run(_post(limited, b"x" * 1000))
    assert ok.status_code == 200 and ok.json() == {"bytes": 1000}


def test_declared_and_streamed_oversize_bodies_are_refused() -> None:
    import asyncio

    def client() -> httpx.AsyncClient:
        app = BodySizeLimit(Starlette(routes=[Route("/echo", _echo, methods=["POST"])]), 1000)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")

    big = asyncio.run(_post(client(), b"x" * 1001))
    assert big.status_code == 413
    assert "1001 bytes exceeds the limit of 1000" in big.json()["error"]

    async def chunks() -> Any:
        for _ in range(5):
            yield b"y" * 400

    streamed = asyncio.run(_post(client(), chunks()))
    assert streamed.status_code == 413 and streamed.json()["field"] == "body"
    assert "more than 1000 bytes" in streamed.json()["error"]


def test_live_recency_rescales_missed_visits_with_the_idle_days() -> None:
    from serving.engine import _recency_now

    stored = {"days_since_last_event": 60.0, "missed_visits": 6.0, "tenure_days": 400.0}
    # A lapsed customer back in a session 3 hours ago: 6 missed visits in 60 days -> 0.0125.
    live = _recency_now(stored, idle_days=0.125)
    assert live["days_since_last_event"] == 0.125
    assert live["missed_visits"] == pytest.approx(6.0 * 0.125 / 60.0)
    assert live["tenure_days"] == 400.0 and stored["missed_visits"] == 6.0
    unknown = _recency_now({"days_since_last_event": float("nan"), "missed_visits": 2.0}, 0.5)
    assert unknown["missed_visits"] == 2.0  # nothing to scale by: left as stored
