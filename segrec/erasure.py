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

Before anything is removed the pseudonym goes on the suppression list
(:mod:`segrec.suppression`): first in the online store, which ``/events`` asks on every
worker of every pod, then in the file ``Settings.suppression_file``, from which cleaning
withholds their rows from later imports and the bundle manifest records how many
customers training withheld. Without the online store the erasure is refused
(:class:`ErasureUnavailable`) before anything changed: an erasure that other pods would
not enforce must not be acknowledged. The audit log (:mod:`segrec.audit`) records the
request with the keyed pseudonym only: the raw id is never written anywhere.

Bundles hold no customer data (item arrays and segment centroids only), so they stay.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segrec.pseudonym import CUSTOMER_ID_PATTERN, canonical_raw_id, pseudonymise
from segrec.settings import Settings
from segrec.shared_state import SharedState, SharedStateUnavailable, open_shared_state
from segrec.suppression import SuppressionList

__all__ = [
    "ErasureError",
    "ErasureReport",
    "ErasureUnavailable",
    "SuppressionList",
    "customer_pseudonym",
    "erase_customer",
    "erase_online",
]

SQL_KEYS_PER_STATEMENT = 500  # bound parameters per DELETE (SQLite caps them)
# Files never holding customer rows, or rewritten by their own owners: the Bento store
# keeps bundles (no customer data); the Feast registry holds definitions only.
SKIPPED_DIRS = ("bentoml",)
TEXT_SUFFIXES = (".jsonl", ".json", ".log", ".csv", ".txt", ".ndjson")
_LOCK = threading.Lock()  # one erasure at a time per process: files are rewritten


class ErasureError(ValueError):
    """The request cannot be carried out (says why); nothing was changed."""


class ErasureUnavailable(ErasureError):
    """The online store holding the suppression list is out of reach; nothing was
    changed, try again later (a 503, not the request's fault)."""


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


# ---- the erasure ----------------------------------------------------------------------
def erase_customer(
    settings: Settings,
    customer: str,
    *,
    online_store: Any | None = None,
    shared: SharedState | None = None,
) -> ErasureReport:
    """Remove ``customer`` (pseudonym or raw id) from every store and file; suppress it.

    ``online_store`` is a ``feast.FeatureStore`` and ``shared`` the store's shared state
    (defaults: opened from ``settings``). Safe to repeat: a second erasure finds nothing
    and reports zeros. Raises :class:`ErasureUnavailable` when the suppression list in
    the online store cannot be written (nothing changed then).
    """
    pseudonym = customer_pseudonym(customer, settings)
    with _LOCK:
        report = ErasureReport(customer=pseudonym)
        # Merged records too: their raw rows would come back in a re-import.
        ids = {pseudonym} | _merged_ids(settings, pseudonym)
        report.merged_ids = len(ids) - 1
        # Suppress first: an import or event arriving mid-erasure is already refused.
        try:
            added = (shared or open_shared_state(settings)).suppress(sorted(ids))
        except SharedStateUnavailable as error:
            message = f"suppression list unreachable, nothing erased: {error}"
            raise ErasureUnavailable(message) from error
        report.already_suppressed = pseudonym not in added
        suppression = SuppressionList(settings.suppression_file)
        for erased in sorted(ids):
            suppression.add(erased)
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


def erase_online(
    store: Any | None,
    settings: Settings,
    customer_ids: Iterable[str],
    views: Sequence[str] | None = None,
) -> int:
    """Delete the customers' rows from every feature view of the online store, or from
    ``views`` only (their other views keep their rows). Returns the rows removed: on
    SQLite one per feature value, on Redis one per customer hash touched."""
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
    if not keys:
        return 0
    chosen = [store.get_feature_view(name) for name in views] if views is not None else None
    kind = config.online_store.type
    if kind == "redis":
        return _erase_redis(store, keys, chosen)
    if kind not in ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore"):
        raise ErasureError(f"erasure from a {kind!r} online store is not supported")
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id

    version = config.entity_key_serialization_version
    serialised = [serialize_entity_key(k, entity_key_serialization_version=version) for k in keys]
    path = SqliteOnlineStore._get_db_path(config)
    if not Path(path).exists():
        return 0
    removed = 0
    connection = sqlite3.connect(path, timeout=30)
    try:
        with connection:
            keyed = [
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
                if any(
                    column[1] == "entity_key"
                    for column in connection.execute(f'PRAGMA table_info("{name}")')
                )
            ]
            if chosen is not None:
                registry = config.registry
                versioned = bool(getattr(registry, "enable_online_feature_view_versioning", False))
                wanted = {_table_id(config.project, view, versioned) for view in chosen}
                keyed = [name for name in keyed if name in wanted]
            for name in keyed:
                for first in range(0, len(serialised), SQL_KEYS_PER_STATEMENT):
                    part = serialised[first : first + SQL_KEYS_PER_STATEMENT]
                    cursor = connection.execute(
                        f'DELETE FROM "{name}" WHERE entity_key IN ({",".join("?" * len(part))})',
                        part,
                    )
                    removed += cursor.rowcount
        if removed:
            # Deleted pages keep the bytes until reused: rewrite the file without them.
            connection.execute("VACUUM")
    finally:
        connection.close()
    return removed


def _erase_redis(store: Any, keys: list[Any], views: list[Any] | None) -> int:
    """Redis keeps one hash per entity with every view's fields: delete the hash, or
    only ``views``' fields (Redis drops a hash left empty)."""
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name

    config = store.config
    online = store._get_provider().online_store
    client = online._get_client(config.online_store)
    redis_keys = online._generate_redis_keys_for_entities(config, keys)
    if views is None:
        return int(client.delete(*redis_keys))
    fields: list[bytes] = []
    for view in views:
        name = _versioned_fv_name(view, config)
        fields += [_mmh3(f"{name}:{feature.name}") for feature in view.features]
        fields.append(f"_ts:{name}".encode())
    with client.pipeline(transaction=False) as pipe:
        for key in redis_keys:
            pipe.hdel(key, *fields)
        return sum(1 for count in pipe.execute() if count)


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
