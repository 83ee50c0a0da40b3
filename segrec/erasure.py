"""Erasure: forget a customer everywhere segrec keeps data, and keep them forgotten.

``segrec erase CUSTOMER`` and ``POST /admin/erase`` both call :func:`erase_customer`:

- the online store: the customer's rows in every feature view (SQLite: every table of the
  project keyed by the serialised entity key; Redis: the entity's hash, which holds every
  view);
- every Parquet file under the data directory (raw exports, clean tables, features,
  set-aside rows, segment outputs): rows naming the customer, by pseudonym or by the raw
  id that pseudonymises to it, in any text column or inside a JSON record column;
- every text file under the data directory (event logs, exposure logs, service logs):
  lines naming the pseudonym. Files are rewritten in place, so a process appending with
  ``O_APPEND`` (the service's event and exposure logs) keeps appending to the same file;
  the service runs its erasures under its event-log lock, so no append races the rewrite;
- ids merged into the customer by de-duplication (``customer_id_map.parquet``) go too.

The pseudonym is then added to the suppression list (``Settings.suppression_file``):
``/events`` refuses the customer's events, cleaning withholds their rows from later
imports, and the bundle manifest records how many customers training withheld. The audit
log (:mod:`segrec.audit`) records the request with the keyed pseudonym only: the raw id
is never written anywhere.

Bundles hold no customer data (item arrays and segment centroids only), so they stay.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segrec.durable_append import append_line
from segrec.pseudonym import (
    CUSTOMER_ID_PATTERN,
    canonical_raw_id,
    pseudonymise,
    pseudonymise_many,
)
from segrec.settings import Settings

# Files never holding customer rows, or rewritten by their own owners: the Bento store
# keeps bundles (no customer data); the Feast registry holds definitions only.
SKIPPED_DIRS = ("bentoml",)
TEXT_SUFFIXES = (".jsonl", ".json", ".log", ".csv", ".txt", ".ndjson")
_LOCK = threading.Lock()  # one erasure at a time per process: files are rewritten


class ErasureError(ValueError):
    """The request cannot be carried out (says why); nothing was changed."""


@dataclass
class ErasureReport:
    """What one erasure removed, by place: counts only, never ids."""

    customer: str  # the keyed pseudonym
    merged_ids: int = 0  # de-duplicated records merged into the customer, erased too
    online_rows: int = 0
    parquet_rows: dict[str, int] = field(default_factory=dict)
    log_lines: dict[str, int] = field(default_factory=dict)
    already_suppressed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer,
            "merged_ids": self.merged_ids,
            "online_rows": self.online_rows,
            "parquet_rows": self.parquet_rows,
            "log_lines": self.log_lines,
            "already_suppressed": self.already_suppressed,
        }


def customer_pseudonym(customer: str, settings: Settings) -> str:
    """``customer`` as its keyed pseudonym: a pseudonym stays itself, a raw id (as the
    storefront's export has it) is pseudonymised with the configured secret."""
    text = customer.strip()
    if not text:
        raise ErasureError("customer id is empty")
    if len(text) > 256:
        raise ErasureError(f"customer id is {len(text)} characters long; at most 256")
    if re.fullmatch(CUSTOMER_ID_PATTERN, text):
        return text
    secret = settings.pseudonymisation_secret.get_secret_value()
    return pseudonymise(canonical_raw_id(text), secret)


# ---- suppression list ---------------------------------------------------------------
class SuppressionList:
    """The pseudonyms of erased customers, one per line (append-only)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[float, int] | None = None
        self._ids: frozenset[str] = frozenset()

    def withheld(self, raw_ids: pd.Series, secret: str) -> np.ndarray:
        """Which rows of ``raw_ids`` (ids as an export has them) name a suppressed
        customer: a boolean mask."""
        erased = self.ids()
        if not erased or raw_ids.empty:
            return np.zeros(len(raw_ids), dtype=bool)
        canonical = [canonical_raw_id(str(v)) for v in raw_ids.tolist()]
        pseudonyms = pseudonymise_many(canonical, secret)
        return np.fromiter((p in erased for p in pseudonyms), dtype=bool, count=len(pseudonyms))

    def ids(self) -> frozenset[str]:
        """The current list, re-read when the file changed (another process erased)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return frozenset()
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._stamp:
            lines = self.path.read_text(encoding="utf-8").splitlines()
            self._ids = frozenset(line.strip() for line in lines if line.strip())
            self._stamp = stamp
        return self._ids

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self.ids()

    def add(self, customer_id: str) -> bool:
        """Append ``customer_id``; False when it was listed already."""
        if customer_id in self.ids():
            return False
        append_line(self.path, customer_id)
        return True

    def fingerprint(self) -> dict[str, Any]:
        """Count and hash of the list, for manifests (the ids themselves stay here)."""
        ids = sorted(self.ids())
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        return {"suppressed_customers": len(ids), "suppression_sha256": digest}


# ---- the erasure ----------------------------------------------------------------------
def erase_customer(
    settings: Settings, customer: str, *, online_store: Any | None = None
) -> ErasureReport:
    """Remove ``customer`` (pseudonym or raw id) from every store and file; suppress it.

    ``online_store`` is a ``feast.FeatureStore`` (default: opened from ``settings``).
    Safe to repeat: a second erasure finds nothing and reports zeros.
    """
    pseudonym = customer_pseudonym(customer, settings)
    with _LOCK:
        report = ErasureReport(customer=pseudonym)
        suppression = SuppressionList(settings.suppression_file)
        # Suppress first: an import or event arriving mid-erasure is already refused.
        report.already_suppressed = not suppression.add(pseudonym)
        ids = {pseudonym} | _merged_ids(settings, pseudonym)
        report.merged_ids = len(ids) - 1
        for merged in sorted(ids - {pseudonym}):
            suppression.add(merged)  # their raw records would come back in a re-import
        secret = settings.pseudonymisation_secret.get_secret_value()
        report.online_rows = erase_online(online_store, settings, ids)
        for path in _files(settings.data_dir, (".parquet",)):
            removed = _erase_parquet(path, ids, secret)
            if removed:
                report.parquet_rows[str(path.relative_to(settings.data_dir))] = removed
        for path in _files(settings.data_dir, TEXT_SUFFIXES):
            if path.resolve().is_relative_to(settings.privacy_dir.resolve()):
                continue  # the suppression list and the audit log keep the pseudonym
            removed = _erase_lines(path, ids)
            if removed:
                report.log_lines[str(path.relative_to(settings.data_dir))] = removed
    return report


def _files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    if not root.exists():
        return
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in sorted(names):
            if name.endswith(suffixes):
                yield Path(directory) / name


def _merged_ids(settings: Settings, pseudonym: str) -> set[str]:
    """Source records de-duplication merged into ``pseudonym`` (their pseudonyms)."""
    path = settings.clean_dir / "customer_id_map.parquet"
    if not path.exists():
        return set()
    id_map = pd.read_parquet(path, columns=["source_customer_id", "customer_id"])
    merged = id_map.loc[id_map["customer_id"] == pseudonym, "source_customer_id"]
    return set(merged.astype(str))


def erase_online(store: Any | None, settings: Settings, customer_ids: Iterable[str]) -> int:
    """Delete the customers' rows from every feature view of the online store."""
    if store is None:
        from segrec.feature_store import open_store

        store = open_store(settings)
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    config = store.config
    keys = [
        EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=c)])
        for c in sorted(customer_ids)
    ]
    kind = config.online_store.type
    if kind == "redis":
        online = store._get_provider().online_store
        client = online._get_client(config.online_store)
        redis_keys = online._generate_redis_keys_for_entities(config, keys)
        return int(client.delete(*redis_keys)) if redis_keys else 0
    if kind not in ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore"):
        raise ErasureError(f"erasure from a {kind!r} online store is not supported")
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    version = config.entity_key_serialization_version
    serialised = [serialize_entity_key(k, entity_key_serialization_version=version) for k in keys]
    path = SqliteOnlineStore._get_db_path(config)
    if not Path(path).exists():
        return 0
    removed = 0
    connection = sqlite3.connect(path, timeout=30)
    try:
        with connection:
            tables = [
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
                if any(
                    column[1] == "entity_key"
                    for column in connection.execute(f'PRAGMA table_info("{name}")')
                )
            ]
            marks = ",".join("?" * len(serialised))
            for name in tables:
                cursor = connection.execute(
                    f'DELETE FROM "{name}" WHERE entity_key IN ({marks})', serialised
                )
                removed += cursor.rowcount
        # Deleted pages keep the bytes until reused: rewrite the file without them.
        connection.execute("VACUUM")
    finally:
        connection.close()
    return removed


def _erase_parquet(path: Path, ids: set[str], secret: str) -> int:
    """Drop rows naming any of ``ids`` (directly, by raw id, or in a JSON record)."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError):
        return 0  # not ours to judge here: a broken file is reported by its reader
    frame = table.to_pandas()
    if frame.empty:
        return 0
    hit = pd.Series(False, index=frame.index)
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object and not isinstance(column.dtype, pd.StringDtype):
            continue
        text = column.where(column.map(lambda v: isinstance(v, str)))
        hit |= text.isin(ids).fillna(False).astype(bool)
        # Raw exports hold raw ids: they name the customer when they pseudonymise to one.
        present = text.dropna().unique()
        raw_hits = {v for v in present if pseudonymise(canonical_raw_id(v), secret) in ids}
        if raw_hits:
            hit |= text.isin(raw_hits).fillna(False).astype(bool)
        # Set-aside rows keep the original record as JSON text.
        hit |= (
            text.map(lambda v: _json_names(v, ids), na_action="ignore").fillna(False).astype(bool)
        )
    removed = int(hit.sum())
    if removed:
        kept = pa.Table.from_pandas(
            frame[~hit.to_numpy()], schema=table.schema, preserve_index=False
        )
        temporary = path.with_name(f".{path.name}.erasing")
        pq.write_table(kept, temporary)
        os.replace(temporary, path)
    return removed


def _json_names(value: str, ids: set[str]) -> bool:
    if not value.startswith("{") or not any(i in value for i in ids):
        return False
    try:
        record = json.loads(value)
    except ValueError:
        return True  # names the id but is not JSON: the text itself is the leak
    return isinstance(record, dict) and any(str(v) in ids for v in record.values())


def _erase_lines(path: Path, ids: set[str]) -> int:
    """Rewrite ``path`` in place without the lines naming any of ``ids``."""
    needles = [i.encode() for i in ids]
    with path.open("rb") as handle:
        data = handle.read()
    if not any(n in data for n in needles):
        return 0
    lines = data.splitlines(keepends=True)
    kept = [line for line in lines if not any(n in line for n in needles)]
    # In place, not replaced: appenders holding the file (O_APPEND) keep writing to it.
    with path.open("r+b") as handle:
        handle.write(b"".join(kept))
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())
    return len(lines) - len(kept)
