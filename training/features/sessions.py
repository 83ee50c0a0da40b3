"""The offline copy of the live session aggregates, replayed from the durable event log.

``POST /events`` logs each accepted batch (one ``EventLog.append``, one ``received_at``),
reads each customer's session from the online store, folds the batch in and pushes one
``customer_session`` row per customer. This module replays the log batch by batch through
the same code (:func:`segrec.live_session.fold`, with the previous session passed through
:func:`~segrec.live_session.stored_values` and :func:`~segrec.live_session.from_stored` as
the online store round-trips it, cart lines and all) and writes the rows that were pushed,
one per customer per batch, to ``customer_sessions.parquet``: the batch source behind the
``customer_session_push`` push source. A point-in-time read at time t then sees the session
serving saw at t.

- Batches are replayed in the order they were received (``received_at``, then file and
  line): the order in which serving read and wrote the sessions.
- Two rows of one customer stamped with the same second (two batches within a second)
  keep the later one, as the SQLite online store does; Feast's point-in-time join has no
  rule between equal timestamps.
- Erased customers (the suppression list) never appear: erasure removes their lines from
  the log and their rows from this file, and the list keeps a rebuild from bringing back
  lines written after the erasure.
- An empty or missing log writes an empty file with the view's schema, so offline reads
  of the view work before the first live event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segrec.event_log import LogLine, read_event_log
from segrec.live_session import (
    SESSION_FIELDS,
    LiveEvent,
    SessionState,
    fold,
    from_stored,
    session_frame,
    stored_values,
)
from segrec.settings import Settings
from segrec.suppression import SuppressionList

SESSION_FILE = "customer_sessions.parquet"
# Arrow types of the customer_session view's fields (as feature_definitions.py declares
# them), in the view's order, between the join key and the timestamp.
FIELD_TYPES = {
    "session_id": pa.string(),
    "session_views": pa.int64(),
    "session_carts": pa.int64(),
    "cart_value": pa.float64(),
    "last_event_unix": pa.int64(),
    "viewed_items": pa.list_(pa.string()),
    "carted_items": pa.list_(pa.string()),
    "categories_touched": pa.list_(pa.string()),
    "purchased_items": pa.list_(pa.string()),
}
SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        *(pa.field(name, FIELD_TYPES[name]) for name in SESSION_FIELDS),
        pa.field("event_timestamp", pa.timestamp("ns", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class SessionBuild:
    path: Path
    rows: int
    customers: int
    batches: int
    events: int
    bad_lines: int  # unparseable or incomplete log lines, left to the ingest to report
    withheld_events: int  # of erased customers


@dataclass(frozen=True)
class LoggedBatch:
    """One ``POST /events`` batch as logged: one append, one ``received_at``."""

    received_at: dt.datetime
    source: tuple[str, int]  # file and first line: a stable order within one instant
    events: list[LiveEvent]


def _event(record: Mapping[str, Any]) -> LiveEvent:
    """A logged event (the format of :mod:`segrec.event_log`) as serving folded it."""
    price, value = record.get("price"), record.get("value")
    return LiveEvent(
        customer_id=str(record["customer_id"]),
        product_id=str(record["product_id"]),
        type=str(record["type"]),
        ts=dt.datetime.fromisoformat(str(record["ts"])),
        quantity=int(record.get("quantity") or 1),
        price=None if price is None else float(price),
        session_id=record.get("session_id"),
        value=None if value is None else float(value),
        event_id=str(record.get("event_id") or ""),
    )


def logged_batches(lines: Iterable[LogLine]) -> tuple[list[LoggedBatch], int]:
    """The log's ``/events`` batches in the order serving applied them, and the number of
    lines that could not be read as events."""
    batches: dict[tuple[Path, str], LoggedBatch] = {}
    bad = 0
    for line in lines:
        if line.record is None:
            bad += 1
            continue
        try:
            received = str(line.record["received_at"])
            event = _event(line.record)
            received_at = dt.datetime.fromisoformat(received)
            if received_at.tzinfo is None or event.ts.tzinfo is None:
                raise ValueError("naive time: the log writes UTC offsets")
        except (KeyError, TypeError, ValueError):
            bad += 1
            continue
        # One append writes a whole batch to one file with one received_at.
        key = (line.path, received)
        if key not in batches:
            batches[key] = LoggedBatch(received_at, (str(line.path), line.line), [])
        batches[key].events.append(event)
    ordered = sorted(batches.values(), key=lambda b: (b.received_at, b.source))
    return ordered, bad


def replay_sessions(
    batches: Iterable[Iterable[LiveEvent]],
    product_categories: Mapping[str, str],
    timeout: dt.timedelta,
    erased: Container[str] = frozenset(),
) -> pd.DataFrame:
    """The ``customer_session`` rows ``POST /events`` pushed for ``batches`` (in the
    order they were applied), one per customer per batch, without ``erased`` customers."""
    stored: dict[str, dict[str, Any]] = {}
    pushed: list[tuple[str, SessionState]] = []
    for batch in batches:
        events = [e for e in batch if e.customer_id not in erased]
        if not events:
            continue
        states: dict[str, SessionState | None] = {
            c: from_stored(stored[c]) if c in stored else None
            for c in dict.fromkeys(e.customer_id for e in events)
        }
        final = fold(states, events, product_categories, timeout)
        stored.update({c: stored_values(s) for c, s in final.items()})
        pushed.extend(final.items())
    if not pushed:
        return SCHEMA.empty_table().to_pandas()
    rows = session_frame(pushed)
    return rows.drop_duplicates(["customer_id", "event_timestamp"], keep="last").reset_index(
        drop=True
    )


def write_sessions(settings: Settings, product_categories: Mapping[str, str]) -> SessionBuild:
    """Replay the event log (``settings.event_log_dir``) into ``customer_sessions.parquet``
    under ``settings.features_dir``, replaced atomically (serving pods and Feast may be
    reading the old one). ``product_categories``: category by product id, as serving has
    them (the catalogue the events were validated against)."""
    timeout = dt.timedelta(minutes=settings.session_timeout_minutes)
    out_dir = settings.features_dir
    batches, bad = logged_batches(read_event_log(settings.event_log_dir))
    erased = SuppressionList(settings.suppression_file).ids()
    events = sum(len(b.events) for b in batches)
    withheld = sum(e.customer_id in erased for b in batches for e in b.events)
    rows = replay_sessions((b.events for b in batches), product_categories, timeout, erased)
    table = pa.Table.from_pandas(rows, schema=SCHEMA, preserve_index=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SESSION_FILE
    temporary = path.with_name(f".{path.name}.writing")
    pq.write_table(table, temporary, compression="zstd")
    temporary.replace(path)
    return SessionBuild(
        path=path,
        rows=table.num_rows,
        customers=int(rows["customer_id"].nunique()),
        batches=len(batches),
        events=events,
        bad_lines=bad,
        withheld_events=int(withheld),
    )
