"""State every serving worker and pod must agree on, kept where the online store is: the
suppression list (erased customers, by keyed pseudonym) and the claims on event ids.

- Redis (``online_store=redis``, every pod shares it): the set ``segrec:suppressed`` and one
  key per claimed event, ``segrec:event:<keyed hash>``, written with ``SET NX EX`` so the
  first claimant wins and the key expires by itself.
- SQLite (the embedded default, one pod): two tables in ``Settings.shared_state_file``,
  which every worker of the pod opens; WAL journal, so a claim never waits for a reader.

Keys and rows hold pseudonyms and keyed hashes only, never a raw id. Every operation waits
at most ``Settings.shared_state_timeout_seconds``; past it, or with the store out of reach,
it raises :class:`SharedStateUnavailable`.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from segrec.settings import Settings

SUPPRESSED_KEY = "segrec:suppressed"
EVENT_KEY_PREFIX = "segrec:event:"
# SET NX EX for every key in one command: half the cost of a pipeline of SETs at 50 keys
# (redis-py packs each command in Python). Returns the 1-based positions of keys won.
_CLAIM_SCRIPT = """
local won = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) then won[#won + 1] = i end
end
return won
"""
_CHUNK = 400  # keys per SQL statement (two bound parameters each, far below the limit)
_PRUNE_EVERY_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressed (
    customer_id TEXT PRIMARY KEY, suppressed_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_claims (
    key TEXT PRIMARY KEY, expires REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_claims_expiry ON event_claims (expires);
"""


class SharedStateUnavailable(RuntimeError):
    """The shared store did not answer in time or at all; nothing was changed."""


class SharedState(Protocol):
    def suppressed(self, customer_ids: Collection[str]) -> set[str]:
        """Which of ``customer_ids`` are on the suppression list."""
        ...

    def suppress(self, customer_ids: Collection[str]) -> set[str]:
        """Add ``customer_ids`` durably; returns those not listed before."""
        ...

    def all_suppressed(self) -> set[str]: ...

    def claim(self, keys: Sequence[str], ttl_seconds: float) -> set[str]:
        """Claim ``keys`` for ``ttl_seconds``; returns the ones nobody held."""
        ...

    def release(self, keys: Sequence[str]) -> None: ...


def open_shared_state(settings: Settings) -> SharedState:
    """The shared state of the configured online store (connects on first use)."""
    if settings.online_store == "redis":
        return RedisSharedState(settings.redis_url, settings.shared_state_timeout_seconds)
    return SqliteSharedState(settings.shared_state_file, settings.shared_state_timeout_seconds)


# ---- Redis -----------------------------------------------------------------------------
def redis_options(connection_string: str) -> dict[str, Any]:
    """``redis.Redis`` arguments from Feast's connection string (``host:port,key=value``),
    so one ``SEGREC_REDIS_URL`` serves Feast and this module alike."""
    parts = [part.strip() for part in connection_string.split(",") if part.strip()]
    nodes = [part for part in parts if "=" not in part]
    if not nodes:
        raise ValueError(f"no host:port in the Redis connection string {connection_string!r}")
    host, _, port = nodes[0].partition(":")
    options: dict[str, Any] = {"host": host, "port": int(port or 6379)}
    for part in parts:
        if "=" in part:
            key, value = part.split("=", 1)
            try:
                options[key] = json.loads(value)
            except json.JSONDecodeError:
                options[key] = value
    return options


class RedisSharedState:
    def __init__(self, connection_string: str, timeout: float) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._errors = (redis.RedisError, OSError)
        # No retries: a dead Redis must cost one timeout, not four.
        self.client = redis.Redis(
            **redis_options(connection_string),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._claim = self.client.register_script(_CLAIM_SCRIPT)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as error:
            raise SharedStateUnavailable(f"Redis: {type(error).__name__}: {error}") from error

    def suppressed(self, customer_ids: Collection[str]) -> set[str]:
        ids = list(customer_ids)
        if not ids:
            return set()
        with self._guard():
            flags = self.client.smismember(SUPPRESSED_KEY, ids)
        return {c for c, flag in zip(ids, flags, strict=True) if flag}

    def suppress(self, customer_ids: Collection[str]) -> set[str]:
        ids = list(customer_ids)
        if not ids:
            return set()
        with self._guard():
            pipe = self.client.pipeline(transaction=True)
            for customer in ids:
                pipe.sadd(SUPPRESSED_KEY, customer)
            added = pipe.execute()
        return {c for c, n in zip(ids, added, strict=True) if n}

    def all_suppressed(self) -> set[str]:
        with self._guard():
            members = self.client.smembers(SUPPRESSED_KEY)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    def claim(self, keys: Sequence[str], ttl_seconds: float) -> set[str]:
        if not keys:
            return set()
        expiry = max(1, math.ceil(ttl_seconds))
        with self._guard():
            won = self._claim(keys=[EVENT_KEY_PREFIX + key for key in keys], args=[expiry])
        return {keys[int(position) - 1] for position in won}

    def release(self, keys: Sequence[str]) -> None:
        if keys:
            with self._guard():
                self.client.delete(*(EVENT_KEY_PREFIX + key for key in keys))


# ---- SQLite ----------------------------------------------------------------------------
class SqliteSharedState:
    def __init__(self, path: Path, timeout: float) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()  # sqlite3 connections stay in their thread
        self._next_prune = 0.0

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement is its own transaction, holding the lock briefly.
        connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            # Claims may be lost with the machine (a retry is then counted twice, once);
            # suppressions are written with FULL (see suppress).
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except sqlite3.Error:
            connection.close()
            raise
        self._local.connection = connection
        return connection

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except (sqlite3.Error, OSError) as error:
            # A replaced or damaged file: the next call opens it afresh.
            stale = getattr(self._local, "connection", None)
            self._local.connection = None
            if stale is not None:
                stale.close()
            raise SharedStateUnavailable(f"SQLite {self.path.name}: {error}") from error

    def suppressed(self, customer_ids: Collection[str]) -> set[str]:
        ids = list(customer_ids)
        found: set[str] = set()
        with self._guard() as connection:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT customer_id FROM suppressed WHERE customer_id IN ({marks})", chunk
                )
                found.update(row[0] for row in rows)
        return found

    def suppress(self, customer_ids: Collection[str]) -> set[str]:
        added: set[str] = set()
        now = time.time()
        with self._guard() as connection:
            # An acknowledged erasure must survive a crash: fsync this commit.
            connection.execute("PRAGMA synchronous=FULL")
            try:
                for customer in customer_ids:
                    rows = connection.execute(
                        "INSERT INTO suppressed VALUES (?, ?) ON CONFLICT DO NOTHING "
                        "RETURNING customer_id",
                        (customer, now),
                    ).fetchall()
                    added.update(row[0] for row in rows)
            finally:
                connection.execute("PRAGMA synchronous=NORMAL")
        return added

    def all_suppressed(self) -> set[str]:
        with self._guard() as connection:
            return {row[0] for row in connection.execute("SELECT customer_id FROM suppressed")}

    def claim(self, keys: Sequence[str], ttl_seconds: float) -> set[str]:
        if not keys:
            return set()
        now = time.time()
        expires = now + ttl_seconds
        claimed: set[str] = set()
        with self._guard() as connection:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                values = ",".join("(?, ?)" for _ in chunk)
                params: list[Any] = [p for key in chunk for p in (key, expires)]
                # A claim past its expiry (not pruned yet) is free again; RETURNING names the
                # rows inserted or taken over, i.e. the claims this call won.
                rows = connection.execute(
                    f"INSERT INTO event_claims (key, expires) VALUES {values} "
                    "ON CONFLICT (key) DO UPDATE SET expires = excluded.expires "
                    "WHERE event_claims.expires <= ? RETURNING key",
                    [*params, now],
                ).fetchall()
                claimed.update(row[0] for row in rows)
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + _PRUNE_EVERY_SECONDS
                connection.execute("DELETE FROM event_claims WHERE expires <= ?", (now,))
        return claimed

    def release(self, keys: Sequence[str]) -> None:
        with self._guard() as connection:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                connection.execute(f"DELETE FROM event_claims WHERE key IN ({marks})", chunk)
