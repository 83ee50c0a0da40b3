"""Online feature reads within a time budget: a slow store costs a fallback, not a hang.

Feast's clients block (SQLite file locks, a Redis socket waiting on a dead server); the
request path cannot. Reads run on a small dedicated thread pool and are given
``timeout_ms``; past it the request gets the same answer as a store that is down
(``store_unavailable``, defaults for every feature) while the stuck read finishes in the
background. When every reader thread is already stuck, new requests fall back at once
instead of queueing behind them, and the store is probed again on the next request.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from segrec.online_features import FeatureVector, OnlineFeatureReader


class BudgetedFeatureSource:
    """Wraps an :class:`OnlineFeatureReader`; same ``read_many``, bounded in time."""

    def __init__(
        self,
        reader: OnlineFeatureReader,
        timeout_ms: float,
        threads: int = 4,
        on_read: Callable[[float], None] | None = None,
    ) -> None:
        self.reader = reader
        self.on_read = on_read  # called with each completed read's seconds (metrics)
        self.timeout = timeout_ms / 1000.0
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="feast-read")
        self._busy = 0
        self._lock = threading.Lock()
        self.timeouts = 0  # reads abandoned past the budget (for metrics and tests)

    def __getattr__(self, name: str) -> Any:
        # clock, defaults(), features...: whatever the engine or service reads off a reader.
        # Only called for names not found normally; "reader" itself missing (mid-copy or
        # unpickling) must not recurse.
        if name == "reader":
            raise AttributeError(name)
        return getattr(self.reader, name)

    def read_many(self, entity_ids: Sequence[str]) -> list[FeatureVector]:
        vectors = self._read_now(entity_ids)
        if vectors is not None:
            return vectors
        with self._lock:
            if self._busy >= self.threads:
                return self._unavailable(entity_ids, "every online-store reader is stuck")
            self._busy += 1
        future = self._pool.submit(self._read, list(entity_ids))
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            self.timeouts += 1
            budget = round(self.timeout * 1000)
            return self._unavailable(entity_ids, f"online store slower than {budget} ms")

    async def read_many_async(self, entity_ids: Sequence[str]) -> list[FeatureVector]:
        """:meth:`read_many` for the event loop: the request waits without holding a thread
        (one hop to the reader pool and back, instead of two through BentoML's), unless
        the store answers without waiting."""
        vectors = self._read_now(entity_ids)
        if vectors is not None:
            return vectors
        with self._lock:
            if self._busy >= self.threads:
                return self._unavailable(entity_ids, "every online-store reader is stuck")
            self._busy += 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._read, list(entity_ids))
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            self.timeouts += 1
            budget = round(self.timeout * 1000)
            return self._unavailable(entity_ids, f"online store slower than {budget} ms")

    def _read_now(self, entity_ids: Sequence[str]) -> list[FeatureVector] | None:
        """The read on this thread when the store can answer without waiting (a local
        SQLite file no writer holds): the hop to the pool and back cost more than the
        read itself. None otherwise."""
        started = time.perf_counter()
        vectors = self.reader.read_many_now(entity_ids)
        if vectors is not None and self.on_read is not None:
            self.on_read(time.perf_counter() - started)
        return vectors

    def _read(self, entity_ids: list[str]) -> list[FeatureVector]:
        started = time.perf_counter()
        try:
            return self.reader.read_many(entity_ids)
        finally:
            if self.on_read is not None:
                self.on_read(time.perf_counter() - started)
            with self._lock:
                self._busy -= 1

    def _unavailable(self, entity_ids: Sequence[str], reason: str) -> list[FeatureVector]:
        missing = [f"{view}:{short}" for view, short, _, _ in self.reader.features.values()]
        return [
            FeatureVector(
                entity_id=e, values=self.reader.defaults(), missing=list(missing), error=reason
            )
            for e in entity_ids
        ]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
