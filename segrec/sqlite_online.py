"""Feast's SQLite online store read directly: every feature view of a service in one query.

The provider's ``online_read`` takes one call per view, each with its own cursor, Python
lists and a ``datetime`` parsed per row. This reads the same rows of the same tables in
one ``UNION ALL`` query on a connection kept per thread, and hands back the serialised
values for the caller to decode; it returns what the provider returns (tested equal):

- Feast's table per view (``<project>_<view>``) and its serialised entity keys;
- every row of the entity, not only the requested features: an entity with any row is
  present, and its event time is the one of its newest-written row (the provider's is its
  last row, and its query walks an entity's rows in rowid order);
- that event time as the provider converts it (Feast stores ``datetime.timestamp()`` of a
  naive UTC time, i.e. read as local time, and converts it back the same way).

Connections are read-only (``mode=ro``), so a reader never takes a write lock, and they
wait at most ``busy_timeout`` seconds for a writer's lock (the provider waits 5 s): a
materialisation holding the file gets a quick ``database is locked`` error. A store file
replaced on disk (a new inode) is reopened on the next read; any other error drops the
connection and the query runs once more on a fresh one.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What a writer's lock may cost a read; the serving budget is 50 ms.
BUSY_TIMEOUT_SECONDS = 0.05
# Keys per query (one bound parameter each; SQLite allows 999 on old builds).
MAX_KEYS_PER_QUERY = 500
_SQL_CACHE_KEYS = 64  # queries for up to this many keys are kept
_SECONDS_CACHE_SIZE = 4096

# One view's row for one entity: (event time in epoch seconds, feature -> serialised
# Value), or (None, None) when the entity has no row in the view.
ViewRow = tuple[float | None, dict[str, bytes] | None]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    busy = code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return busy or "locked" in str(error)


class SqliteOnlineRows:
    """Reads rows of several Feast SQLite online-store tables for a list of entity keys.

    Parameters
    ----------
    path
        The SQLite file (Feast's ``online_store.path``, resolved against the repo).
    tables
        The tables to read, one per feature view, in the order the rows come back.
    busy_timeout
        Seconds a read waits for a writer's lock before ``database is locked``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        tables: Sequence[str],
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ) -> None:
        self.path = Path(path).absolute()
        self.tables = list(tables)
        self.busy_timeout = busy_timeout
        self._uri = self.path.as_uri() + "?mode=ro"
        self._local = threading.local()  # sqlite3 connections stay in their thread
        self._sql: dict[int, str] = {}  # number of keys -> query
        self._seconds: dict[Any, float] = {}  # stored event_ts -> epoch seconds

    def read(self, keys: Sequence[bytes], *, wait: bool = True) -> list[list[ViewRow]]:
        """Per table, per key (in the order given): the entity's event time and values.

        ``wait=False`` fails at once with ``database is locked`` instead of waiting up to
        ``busy_timeout`` for a writer: for a caller that must not block (an event loop).
        """
        # table -> key position -> [rowid, event_ts, {feature: value}] of the newest row
        found: list[list[list[Any] | None]] = [[None] * len(keys) for _ in self.tables]
        for start in range(0, len(keys), MAX_KEYS_PER_QUERY):
            chunk = keys[start : start + MAX_KEYS_PER_QUERY]
            for table, position, rowid, name, value, stamp in self._query(chunk, wait):
                entries = found[table]
                entry = entries[start + position]
                if entry is None:
                    entries[start + position] = [rowid, stamp, {name: value}]
                    continue
                entry[2][name] = value
                if rowid > entry[0]:
                    entry[0] = rowid
                    entry[1] = stamp
        return [
            [(None, None) if e is None else (self._event_seconds(e[1]), e[2]) for e in entries]
            for entries in found
        ]

    def close(self) -> None:
        """Close this thread's connection (the next read opens a new one)."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _query(self, keys: Sequence[bytes], wait: bool = True) -> list[tuple[Any, ...]]:
        """Rows of every table for ``keys``: (table, key position, rowid, feature, value,
        event_ts); once more on a new connection after an error other than a lock."""
        sql = self._sql.get(len(keys)) or self._build_sql(len(keys))
        params = list(keys) if len(keys) > 1 else list(keys) * len(self.tables)
        try:
            return self._connection(wait).execute(sql, params).fetchall()
        except sqlite3.Error as error:
            self.close()
            if is_busy(error):
                raise
            # The file was replaced or its tables recreated under this connection.
            return self._connection(wait).execute(sql, params).fetchall()

    def _build_sql(self, count: int) -> str:
        if count == 1:  # the request path: one customer
            sql = " UNION ALL ".join(
                f"SELECT {i}, 0, rowid, feature_name, value, event_ts "
                f"FROM {_quote(table)} WHERE entity_key = ?"
                for i, table in enumerate(self.tables)
            )
        else:
            values = ",".join(f"({position}, ?)" for position in range(count))
            sql = f"WITH k(i, key) AS (VALUES {values}) " + " UNION ALL ".join(
                f"SELECT {i}, k.i, t.rowid, t.feature_name, t.value, t.event_ts "
                f"FROM k JOIN {_quote(table)} AS t ON t.entity_key = k.key"
                for i, table in enumerate(self.tables)
            )
        if count <= _SQL_CACHE_KEYS:
            self._sql[count] = sql
        return sql

    def _connection(self, wait: bool = True) -> sqlite3.Connection:
        stat = os.stat(self.path)  # FileNotFoundError when the store is gone: the caller's
        identity = (stat.st_dev, stat.st_ino)
        local = self._local
        connection: sqlite3.Connection | None = getattr(local, "connection", None)
        if connection is None or local.identity != identity:
            if connection is not None:  # the store was replaced: read the new file
                connection.close()
            local.connection = None
            connection = sqlite3.connect(self._uri, uri=True, timeout=self.busy_timeout)
            local.connection, local.identity, local.waits = connection, identity, True
        if local.waits != wait:
            milliseconds = round(self.busy_timeout * 1000) if wait else 0
            connection.execute(f"PRAGMA busy_timeout = {milliseconds}")
            local.waits = wait
        return connection

    def _event_seconds(self, stored: Any) -> float:
        """Feast's reading of a stored ``event_ts``: ``datetime.fromtimestamp(int(text))``
        (naive, local), then taken as UTC."""
        seconds = self._seconds.get(stored)
        if seconds is None:
            if isinstance(stored, int):
                number = stored
            else:  # Feast's converter sees the text (or bytes) SQLite holds
                number = int(stored.decode() if isinstance(stored, bytes) else str(stored))
            seconds = dt.datetime.fromtimestamp(number).replace(tzinfo=dt.UTC).timestamp()
            if len(self._seconds) >= _SECONDS_CACHE_SIZE:
                self._seconds.clear()
            self._seconds[stored] = seconds
        return seconds
