"""Group commit of /events: concurrent calls share writes, each waits for its own."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import pytest

from segrec.live_session import LiveEvent
from serving.event_batcher import EventBatcher


def _event(n: int) -> LiveEvent:
    return LiveEvent(
        customer_id=f"c_{n:016x}",
        product_id="P1",
        type="view",
        ts=dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
        event_id=f"e{n}",
    )


def test_concurrent_submissions_share_writes_and_all_land() -> None:
    writes: list[list[str]] = []
    gate = threading.Event()

    def write(events: list[LiveEvent]) -> str | None:
        gate.wait(5)  # the first write is slow: everything after it queues up
        time.sleep(0.01)
        writes.append([e.event_id for e in events])
        return None

    async def main() -> list[str | None]:
        batcher = EventBatcher(write)
        first = asyncio.create_task(batcher.submit([_event(0)]))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit([_event(n)])) for n in range(1, 21)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    outcomes = asyncio.run(main())
    assert outcomes == [None] * 21
    assert sorted(e for batch in writes for e in batch) == sorted(f"e{n}" for n in range(21))
    assert len(writes) == 2  # the first call alone, then the 20 that waited, together


def test_a_failed_write_fails_its_callers_and_the_next_write_still_runs() -> None:
    calls = 0

    def write(events: list[LiveEvent]) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        return "store down"

    async def main() -> None:
        batcher = EventBatcher(write)
        with pytest.raises(OSError, match="disk full"):
            await batcher.submit([_event(1)])
        assert await batcher.submit([_event(2)]) == "store down"
        assert await batcher.submit([]) is None

    asyncio.run(main())
    assert calls == 2
