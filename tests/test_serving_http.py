"""A real `bentoml serve` process over real HTTP, on the trained small storefront."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segrec.settings import Settings
from tests.conftest import new_serving_workspace, serve_workspace
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


TOKEN = "test-admin-token"


def _call(
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        text, status = error.read().decode(), error.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def _post(url: str, body: Any) -> tuple[int, Any]:
    return _call(url, body)


@dataclass
class Server:
    url: str
    settings: Settings  # of the server's own data directory
    bundle_version: str


@pytest.fixture(scope="module")
def server(
    trained_small: tuple[Settings, TrainingRun], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    trained, run = trained_small
    root, settings = new_serving_workspace(trained_small, tmp_path_factory, "serving")
    env = {
        "SEGREC_ADMIN_TOKEN": TOKEN,
        "SEGREC_MAX_REQUEST_BYTES": "200000",
    }
    with serve_workspace(settings, trained, root, env) as url:
        yield Server(url, settings, run.export.bundle_version)


def _customers(settings: Settings) -> pd.DataFrame:
    return pd.read_parquet(settings.features_dir / "customer_segments.parquet")


def test_recommend_over_http(server: Server) -> None:
    customer = _customers(server.settings).iloc[0]
    status, body = _post(
        f"{server.url}/recommend", {"customer_id": customer["customer_id"], "k": 5}
    )
    assert status == 200, body
    assert len(body["items"]) == 5 and body["fallback"] is None
    assert body["segment"]["id"] == customer["segment_id"]
    assert body["bundle_version"] == server.bundle_version
    assert body["live_session"] is False
    for item in body["items"]:
        assert sum(item["contributions"].values()) == pytest.approx(item["score"], abs=1e-4)
    status, body = _post(f"{server.url}/recommend", {"customer_id": "c_nobody", "k": 3})
    assert status == 200 and body["fallback"] == "unknown_customer" and len(body["items"]) == 3


def test_every_answer_says_it_is_json(server: Server) -> None:
    # serving.service fixes each API's media type once instead of BentoML working it out
    # per response: the header must not change.
    customer = str(_customers(server.settings).iloc[0]["customer_id"])
    for path, body in (
        ("/recommend", {"customer_id": customer, "k": 2}),
        ("/similar", {"product_id": "P000001", "k": 2}),
        ("/segment", {"customer_id": customer}),
        ("/recommend/batch", {"requests": [{"customer_id": customer, "k": 2}]}),
    ):
        request = urllib.request.Request(
            f"{server.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Content-Type"] == "application/json", path
            json.loads(response.read())


def test_product_pages_use_the_product_as_context(server: Server) -> None:
    customer = _customers(server.settings).iloc[3]["customer_id"]
    status, page = _post(
        f"{server.url}/recommend",
        {"customer_id": customer, "k": 10, "placement": "product", "product_id": "P000001"},
    )
    assert status == 200
    shown = [i["product_id"] for i in page["items"]]
    assert "P000001" not in shown
    assert sum("context" in i["contributions"] for i in page["items"]) >= 5
    home = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 10})[1]
    similar = _post(f"{server.url}/similar", {"product_id": "P000001", "k": 30})[1]
    alike = {i["product_id"] for i in similar["items"]}
    assert len(alike & set(shown)) > len(alike & {i["product_id"] for i in home["items"]})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_id": "c_x", "k": 0}, "k"),
        ({"customer_id": "c_x", "k": 101}, "k"),
        ({"customer_id": "c_x", "k": "ten"}, "k"),
        ({"k": 3}, "customer_id"),
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": "c_x", "placement": "moon"}, "placement"),
        ({"customer_id": "c_x", "exclude": "P1"}, "exclude"),
        ({"customer_id": 12}, "customer_id"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(
    server: Server, body: dict[str, Any], field: str
) -> None:
    status, answer = _post(f"{server.url}/recommend", body)
    assert status == 400, answer
    assert isinstance(answer, dict) and "error" in answer
    assert field in json.dumps(answer["detail"])


def test_malformed_and_oversized_bodies_get_4xx_json(server: Server) -> None:
    status, answer = _call(f"{server.url}/recommend", raw=b'{"customer_id": "c_x", "k": ')
    assert 400 <= status < 500 and "error" in answer, (status, answer)
    status, answer = _call(f"{server.url}/recommend", raw=b"[1, 2]")
    assert 400 <= status < 500 and "error" in answer, (status, answer)
    big = {"customer_id": "c_x", "exclude": ["P" * 50] * 5000}
    status, answer = _post(f"{server.url}/recommend", big)
    assert status == 413 and "SEGREC_MAX_REQUEST_BYTES" in answer["error"]
    status, answer = _post(f"{server.url}/recommend", {"customer_id": "c_x"})
    assert status == 200, "the next request after a refusal is served"


def test_batch_answers_every_customer_in_order(server: Server) -> None:
    ids = [*_customers(server.settings)["customer_id"].iloc[5:8], "c_nobody"]
    requests = [{"customer_id": c, "k": 4} for c in ids]
    status, body = _post(f"{server.url}/recommend/batch", {"requests": requests})
    assert status == 200, body
    assert [r["customer_id"] for r in body["results"]] == ids
    assert [r["fallback"] for r in body["results"]] == [None, None, None, "unknown_customer"]
    assert all(len(r["items"]) == 4 for r in body["results"])
    # The same answer as one at a time.
    status, single = _post(f"{server.url}/recommend", {**requests[0], "placement": "email"})
    assert [i["product_id"] for i in single["items"]] == [
        i["product_id"] for i in body["results"][0]["items"]
    ]
    status, body = _post(
        f"{server.url}/recommend/batch", {"requests": [{"customer_id": "c_x"}] * 1001}
    )
    assert status == 400 and body["field"] == "requests"


def test_similar_over_http(server: Server) -> None:
    status, body = _post(f"{server.url}/similar", {"product_id": "P000001", "k": 4})
    assert status == 200 and len(body["items"]) == 4
    status, body = _post(f"{server.url}/similar", {"product_id": "P-none"})
    assert status == 404 and "unknown product_id" in body["error"]
    assert body["field"] == "product_id"


def test_segment_over_http(server: Server) -> None:
    customer = _customers(server.settings).iloc[2]
    status, body = _post(f"{server.url}/segment", {"customer_id": customer["customer_id"]})
    assert status == 200 and body["segment"]["name"] == customer["segment_name"]
    assert body["lifecycle_stage"] == customer["lifecycle_stage"]
    assert "repeat_view_share" in body["profile"]
    status, body = _post(f"{server.url}/segment", {"customer_id": "c_nobody"})
    assert status == 200 and body["segment"] is None and body["fallback"] == "unknown_customer"


def test_events_reach_the_very_next_recommendation(server: Server) -> None:
    customer = _customers(server.settings).iloc[10]["customer_id"]
    before = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 10})[1]
    shown = [i["product_id"] for i in before["items"]]
    viewed, carted, bought = shown[0], shown[1], shown[2]
    # Stamped, as a storefront does: a retried batch then carries the very same events.
    ts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    events = [
        {"customer_id": customer, "product_id": viewed, "type": "view", "ts": ts},
        {"customer_id": customer, "product_id": carted, "type": "add_to_cart", "ts": ts},
        {"customer_id": customer, "product_id": bought, "type": "purchase", "ts": ts},
        {"customer_id": customer, "product_id": "P-nope", "type": "view"},
        {"customer_id": "17850", "product_id": viewed, "type": "view"},
    ]
    status, body = _post(f"{server.url}/events", {"events": events})
    assert status == 200, body
    assert body["accepted"] == 3 and body["session_updated"] is True, body
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (3, "product_id"),
        (4, "customer_id"),
    ]
    after = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 10})[1]
    assert after["live_session"] is True
    now_shown = [i["product_id"] for i in after["items"]]
    assert not {viewed, carted} & set(now_shown)
    assert after["segment"]["assigned"] == "live"
    # Durable: the accepted events are in the log the next training run ingests.
    lines = [
        json.loads(line)
        for path in server.settings.event_log_dir.glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert {(e["product_id"], e["type"]) for e in lines if e["customer_id"] == customer} == {
        (viewed, "view"),
        (carted, "add_to_cart"),
        (bought, "purchase"),
    }
    # A retried batch is not counted twice.
    status, again = _post(f"{server.url}/events", {"events": events[:3]})
    assert again["accepted"] == 0 and again["duplicates"] == 3


def test_a_slow_online_store_degrades_to_a_fallback_not_an_error(server: Server) -> None:
    customer = _customers(server.settings).iloc[20]["customer_id"]
    database = sqlite3.connect(server.settings.feast_dir / "online.db", timeout=1)
    database.execute("BEGIN EXCLUSIVE")  # every reader now waits on the lock
    try:
        started = time.monotonic()
        status, body = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 5})
        elapsed = time.monotonic() - started
        assert status == 200 and body["fallback"] == "store_unavailable"
        assert len(body["items"]) == 5
        assert elapsed < 5.0, "answered within the budget, not after the store's own timeout"
        assert _call(f"{server.url}/readyz", method="GET")[0] == 200
    finally:
        database.rollback()
        database.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 5})[1]
        if body["fallback"] is None:
            break
        time.sleep(0.5)
    assert body["fallback"] is None, "personalisation recovers once the store is back"


def test_health_and_metrics(server: Server) -> None:
    assert _call(f"{server.url}/livez", method="GET")[0] == 200
    assert _call(f"{server.url}/readyz", method="GET")[0] == 200
    _post(f"{server.url}/recommend", {"customer_id": "c_nobody"})
    status, text = _call(f"{server.url}/metrics", method="GET")
    assert status == 200
    assert 'segrec_fallbacks_total{endpoint="recommend",reason="unknown_customer"}' in text
    assert f'version="{server.bundle_version}"' in text
    assert "bentoml_service_request_duration_seconds" in text
    assert "segrec_segment_requests_total" in text
    assert 'segrec_engine_seconds_count{endpoint="recommend"}' in text
    assert "segrec_feature_read_seconds_count" in text


def _new_version(server: Server, name: str) -> Path:
    from segrec.bundle import read_bundle, write_bundle

    source = read_bundle(server.settings.bundles_dir / server.bundle_version)
    return write_bundle(replace(source, version=name), server.settings.bundles_dir / name)


def test_admin_reload_is_guarded_checked_and_atomic(server: Server) -> None:
    url = f"{server.url}/admin/reload"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert _call(url, {})[0] == 401
    assert _call(url, {}, headers={"Authorization": "Bearer wrong"})[0] == 403
    status, body = _call(url, {}, headers=auth)
    assert status == 200 and body == {
        "swapped": False,
        "bundle_version": server.bundle_version,
        "reason": "unchanged",
        # The tactics and experiments files are re-read too; they did not change.
        "config": {"swapped": False, "reason": "unchanged"},
    }
    # A corrupted bundle is refused and the old one keeps serving.
    bad = _new_version(server, "bundle-29990101T000000")
    victim = next((bad / "arrays").glob("*.npz"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    status, body = _call(url, {"version": bad.name}, headers=auth)
    assert status == 409 and "sha256" in body["error"], body
    assert body["bundle_version"] == server.bundle_version
    status, body = _call(url, {"version": "../../etc"}, headers=auth)
    assert status == 409 and "bad bundle version" in body["error"]
    shutil.rmtree(bad)

    # Swap back and forth under concurrent requests: nothing fails, nothing mixes.
    versions = [server.bundle_version, _new_version(server, "bundle-29990102T000000").name]
    customers = list(_customers(server.settings)["customer_id"].iloc[30:60])
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def shopper(offset: int) -> None:
        n = offset
        while not stop.is_set():
            status, body = _post(
                f"{server.url}/recommend", {"customer_id": customers[n % len(customers)]}
            )
            seen.append((status, body.get("bundle_version") if isinstance(body, dict) else None))
            n += 1

    threads = [threading.Thread(target=shopper, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(6):
            target = versions[(n + 1) % 2]
            status, body = _call(url, {"version": target}, headers=auth)
            assert status == 200 and body["swapped"] and body["bundle_version"] == target, body
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(seen) > 20
    assert {s for s, _ in seen} == {200}
    assert {v for _, v in seen} <= set(versions) and len({v for _, v in seen}) == 2
    status, body = _post(f"{server.url}/recommend", {"customer_id": customers[0]})
    assert body["bundle_version"] == versions[0]
