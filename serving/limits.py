"""Request-size limit as ASGI middleware: an oversized body is refused with 413 before
the service reads it into memory, by its Content-Length or, for chunked bodies, as soon
as the bytes received pass the limit."""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


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
        body = json.dumps({"error": message, "field": "body"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
