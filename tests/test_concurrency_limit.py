"""The concurrency limit as ASGI middleware: past the limit a request gets 429 at once with
Retry-After and a JSON body naming the limit; probes and metrics pass however busy the
worker is; the limit is split across BentoML's workers as BentoML splits its own. The
real server's overload scenario is in ``tests/test_faults_sqlite.py``.

What it costs every request that passes (``/recommend`` included) is printed:
``.venv/bin/pytest -s tests/test_concurrency_limit.py -k cost``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from serving.limits import ConcurrencyLimit


class SlowApp:
    """An app whose requests stay in flight until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.started += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def _request(app: Any, path: str) -> tuple[int, dict[str, str], Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(sent[1]["body"])


def test_past_the_limit_429_with_retry_after_and_probes_pass() -> None:
    async def main() -> None:
        inner = SlowApp()
        app = ConcurrencyLimit(inner, max_concurrency=3, retry_after_seconds=2)
        busy = [asyncio.create_task(_request(app, "/recommend")) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert inner.started == 3 and app.in_flight == 3
        status, headers, body = await _request(app, "/events")
        assert status == 429 and headers["retry-after"] == "2"
        assert headers["content-type"] == "application/json"
        assert body["limit"] == "SEGREC_MAX_CONCURRENCY" and body["max_concurrency"] == 3
        assert body["retry_after_seconds"] == 2 and "3" in body["error"]
        assert inner.started == 3, "the refused request never reached the app"
        probes = [asyncio.create_task(_request(app, p)) for p in ("/livez", "/readyz", "/metrics")]
        await asyncio.sleep(0.01)
        assert inner.started == 6, "probes pass the limit"
        inner.release.set()
        answers = await asyncio.gather(*busy, *probes)
        assert [a[0] for a in answers] == [200] * 6
        assert app.in_flight == 0
        assert (await _request(app, "/recommend"))[0] == 200, "room again"

    asyncio.run(main())


def test_the_limit_is_split_across_workers() -> None:
    assert ConcurrencyLimit(SlowApp(), 32, 1, workers=lambda: 1).limit == 32
    assert ConcurrencyLimit(SlowApp(), 32, 1, workers=lambda: 3).limit == 11
    assert ConcurrencyLimit(SlowApp(), 2, 1, workers=lambda: 4).limit == 1


def test_cost_per_passing_request() -> None:
    """Printed, not asserted: what the middleware adds to a request it lets through."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    limited = ConcurrencyLimit(app, 32, 1)
    scope = {"type": "http", "path": "/recommend", "method": "POST", "headers": []}
    rounds = 200_000

    async def timed(target: Any) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            await target(scope, None, None)
        return time.perf_counter() - started

    async def main() -> tuple[float, float]:
        return await timed(app), await timed(limited)

    bare, wrapped = asyncio.run(main())
    print(f"\nConcurrencyLimit adds {(wrapped - bare) / rounds * 1e6:.2f} µs per request")
