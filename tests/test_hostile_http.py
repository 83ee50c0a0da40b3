"""Hostile and malformed input against a real `bentoml serve` process over real HTTP.

What the README's "Validation and limits" paragraph promises: bodies over the size limit
get 413 (declared or streamed), form bodies 415, batch and k limits 400 naming the field,
unknown top-level fields are ignored while unknown fields inside a batch request or an
event are rejected, odd and huge ids get a 4xx or the unknown-customer fallback (never a
500), a repeated event counts once, and events from the future or the far past are
rejected with a reason.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from segrec.settings import Settings
from tests.conftest import new_serving_workspace, serve_workspace
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_BYTES = 100_000
MAX_EVENTS = 50
MAX_CUSTOMERS = 20
SKEW = dt.timedelta(minutes=2)  # SEGREC_EVENT_CLOCK_SKEW_SECONDS, default 5 minutes
MAX_AGE = dt.timedelta(days=2)  # SEGREC_EVENT_MAX_AGE_HOURS, default 7 days
CUSTOMER = "c_00000000000000ff"  # a well-formed pseudonym nobody has
SHOPPER = "c_00000000000000ee"  # another, whose events are accepted (CUSTOMER stays unknown)


@dataclass
class Server:
    url: str
    port: int
    settings: Settings

    def post(
        self, path: str, body: Any = None, *, raw: bytes | None = None, **headers: str
    ) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


@pytest.fixture(scope="module")
def server(
    trained_small: tuple[Settings, TrainingRun], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    trained, _ = trained_small
    root, settings = new_serving_workspace(trained_small, tmp_path_factory, "hostile")
    env = {
        "SEGREC_MAX_REQUEST_BYTES": str(MAX_BYTES),
        "SEGREC_MAX_BATCH_EVENTS": str(MAX_EVENTS),
        "SEGREC_MAX_BATCH_CUSTOMERS": str(MAX_CUSTOMERS),
        "SEGREC_EVENT_CLOCK_SKEW_SECONDS": str(SKEW.total_seconds()),
        "SEGREC_EVENT_MAX_AGE_HOURS": str(MAX_AGE.total_seconds() / 3600),
    }
    with serve_workspace(settings, trained, root, env) as url:
        yield Server(url, int(url.rsplit(":", 1)[1]), settings)


def _customers(server: Server) -> list[str]:
    frame = pd.read_parquet(server.settings.features_dir / "customer_segments.parquet")
    return [str(c) for c in frame["customer_id"]]


def _product(server: Server) -> str:
    status, body = server.post("/recommend", {"customer_id": CUSTOMER, "k": 1})
    assert status == 200, body
    return str(body["items"][0]["product_id"])


def _refused(status: int, body: Any, field: str, code: int = 400) -> None:
    """A JSON error with ``status`` ``code`` that names ``field``."""
    assert status == code, (status, body)
    assert isinstance(body, dict) and "error" in body, body
    assert field in json.dumps(body), (field, body)


# --- size limits -------------------------------------------------------------------------


def test_every_endpoint_refuses_an_oversized_body_with_413_json(server: Server) -> None:
    padding = "x" * MAX_BYTES
    bodies = {
        "/recommend": {"customer_id": CUSTOMER, "category": padding},
        "/recommend/batch": {"requests": [{"customer_id": CUSTOMER, "category": padding}]},
        "/events": {"events": [{"customer_id": CUSTOMER, "session_id": padding}]},
        "/segment": {"customer_id": padding},
        "/similar": {"product_id": padding},
    }
    for path, body in bodies.items():
        status, answer = server.post(path, body)
        _refused(status, answer, "SEGREC_MAX_REQUEST_BYTES", 413)
        assert answer["field"] == "body"
    assert server.post("/recommend", {"customer_id": CUSTOMER})[0] == 200


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/recommend")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        chunk = b'{"customer_id": "c_x", "exclude": [' + b'"P000001", ' * 2000
        try:
            for _ in range(20):  # 20 x ~22 kB: past the limit after a few chunks
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413 and body["field"] == "body", body
    assert f"more than {MAX_BYTES} bytes" in body["error"]
    assert server.post("/recommend", {"customer_id": CUSTOMER})[0] == 200


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"],
)
def test_form_bodies_are_refused_with_415(server: Server, content_type: str) -> None:
    status, body = server.post(
        "/recommend", raw=b'{"customer_id": "c_x"}', **{"Content-Type": content_type}
    )
    _refused(status, body, "application/json", 415)
    assert body["field"] == "content-type"


def test_batch_limits_are_exact_and_name_the_field(server: Server) -> None:
    status, body = server.post(
        "/recommend/batch", {"requests": [{"customer_id": CUSTOMER, "k": 1}] * MAX_CUSTOMERS}
    )
    assert status == 200 and len(body["results"]) == MAX_CUSTOMERS
    status, body = server.post(
        "/recommend/batch", {"requests": [{"customer_id": CUSTOMER}] * (MAX_CUSTOMERS + 1)}
    )
    _refused(status, body, "SEGREC_MAX_BATCH_CUSTOMERS")
    assert body["field"] == "requests"

    event = {"customer_id": CUSTOMER, "product_id": "P-none", "type": "view"}
    status, body = server.post("/events", {"events": [event] * MAX_EVENTS})
    assert status == 200 and len(body["rejected"]) == MAX_EVENTS
    status, body = server.post("/events", {"events": [event] * (MAX_EVENTS + 1)})
    _refused(status, body, "SEGREC_MAX_BATCH_EVENTS")
    assert body["field"] == "events"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/recommend/batch", {"requests": [{"customer_id": CUSTOMER, "k": 0}]}, '"k"'),
        ("/recommend/batch", {"requests": [{"customer_id": CUSTOMER, "k": 101}]}, '"k"'),
        ("/recommend/batch", {"requests": [{"customer_id": ""}]}, '"customer_id"'),
        ("/recommend/batch", {"requests": {"customer_id": CUSTOMER}}, '"requests"'),
        ("/similar", {"product_id": "P000001", "k": 0}, '"k"'),
        ("/similar", {"product_id": "P000001", "k": 10_000}, '"k"'),
        ("/recommend", {"customer_id": CUSTOMER, "exclude": ["P1"] * 1001}, '"exclude"'),
        ("/events", {"events": {"customer_id": CUSTOMER}}, '"events"'),
    ],
)
def test_out_of_range_values_are_refused_naming_the_field(
    server: Server, path: str, body: dict[str, Any], field: str
) -> None:
    status, answer = server.post(path, body)
    _refused(status, answer, field)


# --- unknown fields ------------------------------------------------------------------------


def test_unknown_fields_are_ignored_at_the_top_and_rejected_inside(server: Server) -> None:
    status, body = server.post("/recommend", {"customer_id": CUSTOMER, "k": 2, "colour": "red"})
    assert status == 200 and len(body["items"]) == 2, "top level: ignored"
    status, body = server.post(
        "/recommend/batch", {"requests": [{"customer_id": CUSTOMER, "kk": 5}]}
    )
    _refused(status, body, '"kk"')
    product = _product(server)
    event = {"customer_id": SHOPPER, "product_id": product, "type": "view"}
    status, body = server.post("/events", {"events": [event, {**event, "quantiy": 3}]})
    assert status == 200 and body["accepted"] == 1, body
    assert body["rejected"] == [
        {"index": 1, "field": "quantiy", "reason": "Extra inputs are not permitted"}
    ]


# --- odd and huge ids ---------------------------------------------------------------------

ODD_IDS = [
    "c_" + "a" * 126,  # the longest accepted
    "🛒👩🏽‍💻",  # emoji with a zero-width joiner
    "مرحبا\u202eabc",  # right-to-left text with an override mark
    "c_\u0000nul",  # a NUL byte
    "c_\u200b",  # a zero-width space
    "'; DROP TABLE customers; --",
    "../../etc/passwd",
    "%00%ff",
]


@pytest.mark.parametrize("customer_id", ODD_IDS)
def test_odd_customer_ids_get_the_unknown_customer_fallback(
    server: Server, customer_id: str
) -> None:
    status, body = server.post("/recommend", {"customer_id": customer_id, "k": 3})
    assert status == 200, body
    assert body["fallback"] == "unknown_customer" and len(body["items"]) == 3
    assert body["customer_id"] == customer_id, "echoed back unchanged"
    status, body = server.post("/segment", {"customer_id": customer_id})
    assert status == 200 and body["fallback"] == "unknown_customer", body
    status, body = server.post(
        "/recommend/batch", {"requests": [{"customer_id": customer_id, "k": 2}]}
    )
    assert status == 200 and body["results"][0]["fallback"] == "unknown_customer", body


def test_huge_and_broken_ids_are_refused_not_crashed_on(server: Server) -> None:
    huge = "c_" + "9" * 10_000
    _refused(*server.post("/recommend", {"customer_id": huge}), '"customer_id"')
    _refused(*server.post("/segment", {"customer_id": huge}), '"customer_id"')
    _refused(*server.post("/similar", {"product_id": "P" * 10_000}), '"product_id"')
    batch = {"requests": [{"customer_id": huge}]}
    _refused(*server.post("/recommend/batch", batch), '"customer_id"')
    # A lone surrogate and bytes that are not UTF-8 are not JSON text.
    for raw in (b'{"customer_id": "c_\\ud800"}', b'{"customer_id": "c_\xff\xfe"}'):
        status, body = server.post("/recommend", raw=raw)
        assert status == 400 and "Invalid JSON" in json.dumps(body), (raw, body)
    nested = b'{"customer_id": "c_x", "exclude": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    status, body = server.post("/recommend", raw=nested)
    assert status == 400 and "error" in body, body
    status, body = server.post("/similar", {"product_id": "🛒\u0000"})
    _refused(status, body, "product_id", 404)


def test_odd_ids_in_events_are_rejected_per_event(server: Server) -> None:
    product = _product(server)
    events = [{"customer_id": odd, "product_id": product, "type": "view"} for odd in ODD_IDS] + [
        {"customer_id": CUSTOMER, "product_id": "🛒" * 64, "type": "view"},
        {"customer_id": CUSTOMER, "product_id": "P" * 65, "type": "view"},
        {"customer_id": CUSTOMER, "product_id": product, "type": "view", "event_id": "x" * 129},
    ]
    status, body = server.post("/events", {"events": events})
    assert status == 200 and body["accepted"] == 0, body
    fields = [r["field"] for r in body["rejected"]]
    assert fields == ["customer_id"] * len(ODD_IDS) + ["product_id", "product_id", "event_id"]


# --- duplicates and time --------------------------------------------------------------------


def _session_views(server: Server, customer: str) -> int:
    from segrec.feature_store import open_store
    from segrec.live_session import LiveSessionWriter

    writer = LiveSessionWriter(open_store(server.settings), {}, dt.timedelta(minutes=30))
    state = writer.current([customer])[customer]
    return 0 if state is None else state.session_views


def _logged(server: Server, customer: str) -> list[dict[str, Any]]:
    return [
        event
        for path in server.settings.event_log_dir.rglob("*.jsonl")
        for line in path.read_text().splitlines()
        if (event := json.loads(line))["customer_id"] == customer
    ]


def test_a_repeated_event_changes_the_session_once(server: Server) -> None:
    customer = _customers(server)[40]
    product = _product(server)
    ts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)).isoformat()
    given = {"customer_id": customer, "product_id": product, "type": "view", "event_id": "e-1"}
    derived = {"customer_id": customer, "product_id": product, "type": "view", "ts": ts}
    batch = [given, given, derived, derived]  # repeated within the batch, too
    status, body = server.post("/events", {"events": batch})
    assert status == 200, body
    assert (body["accepted"], body["duplicates"]) == (2, 2), body
    assert _session_views(server, customer) == 2
    status, again = server.post("/events", {"events": batch})
    assert (again["accepted"], again["duplicates"]) == (0, 4), again
    assert _session_views(server, customer) == 2, "the retry changed nothing"
    assert len(_logged(server, customer)) == 2, "each event logged once"


def test_events_from_the_future_or_far_past_are_rejected_with_a_reason(server: Server) -> None:
    product = _product(server)
    now = dt.datetime.now(dt.UTC)

    def event(ts: str) -> dict[str, Any]:
        return {"customer_id": SHOPPER, "product_id": product, "type": "view", "ts": ts}

    minute = dt.timedelta(minutes=1)
    cases = {
        (now + SKEW - minute).isoformat(): None,  # within the clock-skew tolerance
        (now + SKEW + minute).isoformat(): "in the future",
        "2999-01-01T00:00:00Z": "in the future",
        (now - MAX_AGE + 5 * minute).isoformat(): None,
        (now - MAX_AGE - minute).isoformat(): "older than 2 days",
        "1970-01-01T00:00:00Z": "older than 2 days",
        "0001-01-01T00:00:00+01:00": "out of range",
        "9999-12-31T23:59:59-01:00": "out of range",
        "2026-13-45T25:61:00Z": "datetime",
    }
    status, body = server.post("/events", {"events": [event(ts) for ts in cases]})
    assert status == 200, body
    reasons = {r["index"]: r for r in body["rejected"]}
    assert body["accepted"] == sum(why is None for why in cases.values())
    for index, why in enumerate(cases.values()):
        if why is None:
            assert index not in reasons, reasons.get(index)
        else:
            assert reasons[index]["field"] == "ts" and why in reasons[index]["reason"], (
                index,
                reasons.get(index),
            )
