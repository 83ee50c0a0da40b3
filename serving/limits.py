"""Request limits as ASGI middleware, checked before the service reads a body.

- :class:`BodySizeLimit`: an oversized body is refused with 413, by its Content-Length
  or, for chunked bodies, as soon as the bytes received pass the limit.
- :class:`JsonBodiesOnly`: the JSON APIs refuse form and multipart bodies with 415
  (BentoML would parse them as forms, and a multipart body without a boundary made it
  answer 500).
- :class:`ConcurrencyLimit`: past ``SEGREC_MAX_CONCURRENCY`` requests in flight, a new one
  is answered 429 at once, with ``Retry-After`` and a JSON body naming the limit. It
  replaces BentoML's ``traffic.max_concurrency``, whose 429 has neither and which runs
  outside the service's middleware, where no header can be added.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Collection
from typing import Any

logger = logging.getLogger("segrec.limits")

Scope = dict[str, Any]
Message = dict[str, Any]
FORM_TYPES = (b"multipart/", b"application/x-www-form-urlencoded")


class BodySizeLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._refuse(send, 400, "Content-Length is not a number")
                return
            if size > self.max_bytes:
                await self._refuse(send, 413, self._too_large(size))
                return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer now and tell the app the client left: it stops reading, and
                    # whatever it tries to send afterwards is dropped.
                    refused = True
                    await self._refuse(send, 413, self._too_large(received, streamed=True))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # The app's complaint about the "disconnect"; the client already has its 413.
            if not refused:
                raise

    def _too_large(self, size: int, *, streamed: bool = False) -> str:
        amount = f"more than {self.max_bytes}" if streamed else str(size)
        return (
            f"request body of {amount} bytes exceeds the limit of {self.max_bytes} "
            "(SEGREC_MAX_REQUEST_BYTES)"
        )

    @staticmethod
    async def _refuse(send: Any, status: int, message: str) -> None:
        await refuse(send, status, message, "body")


class JsonBodiesOnly:
    """Refuse ``POST`` bodies to ``paths`` sent as forms (415); other content types are
    read as JSON, as BentoML does (a client that sends no Content-Type still works)."""

    def __init__(self, app: Any, paths: Collection[str]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            headers = dict(scope.get("headers") or [])
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media.startswith(FORM_TYPES):
                await refuse(
                    send,
                    415,
                    f"{media.decode(errors='replace')} bodies are not accepted: "
                    "send the request as application/json",
                    "content-type",
                )
                return
        await self.app(scope, receive, send)


# As BentoML's limit: probes and metrics must answer however busy the worker is.
EXEMPT_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})


def bentoml_workers(service_name: str) -> int:
    """Workers BentoML starts for ``service_name`` (its ``services.<name>.workers`` config,
    as ``BENTOML_CONFIG_OVERRIDES`` sets it); 1 when unset or unreadable."""
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        workers = BentoMLContainer.config.services.get()[service_name].get("workers")
    except Exception:  # another BentoML layout: one worker, as BentoML's default
        logger.warning("BentoML's worker count unreadable; the concurrency limit assumes 1")
        return 1
    if workers == "cpu_count":
        return os.cpu_count() or 1
    return int(workers or 1)


class ConcurrencyLimit:
    """At most ``ceil(max_concurrency / workers)`` requests in flight in this worker (as
    BentoML splits its own limit); the next gets 429 with ``Retry-After`` at once."""

    def __init__(
        self,
        app: Any,
        max_concurrency: int,
        retry_after_seconds: int,
        workers: Callable[[], int] = lambda: 1,
    ) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.limit = math.ceil(max_concurrency / max(1, workers()))
        self.retry_after = str(retry_after_seconds).encode()
        self.in_flight = 0
        self._body = json.dumps(
            {
                "error": f"too many requests in flight: at most {max_concurrency} per pod "
                f"({self.limit} in this worker); retry after {retry_after_seconds} s",
                "limit": "SEGREC_MAX_CONCURRENCY",
                "max_concurrency": max_concurrency,
                "retry_after_seconds": retry_after_seconds,
            }
        ).encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await send_json(send, 429, self._body, [(b"retry-after", self.retry_after)])
            return
        # One event loop per worker: the counter needs no lock.
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def refuse(send: Any, status: int, message: str, field: str) -> None:
    """Answer ``status`` with the service's JSON error body."""
    await send_json(send, status, json.dumps({"error": message, "field": field}).encode())


async def send_json(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``status`` with the JSON ``body`` and any extra ``headers``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
