"""Read a customer's serving features from Feast's online store, never raising.

Feast does not enforce a view's ttl on online reads, and Redis reports an unknown key as
present with timestamp 0; so each value's event time is checked here against its view's
ttl. Missing, stale or unreadable values are replaced by explicit defaults and named in
``missing``, so callers can fall back openly instead of failing.

Reads skip ``FeatureStore.get_online_features``: the same store and the same values
(tested equal) without Feast's response assembly, which costs more than the read (one
customer of ``customer_serving_v2`` on SQLite: 4.6 ms with ``to_dict()`` against 0.4 ms
here, ``segrec bench --online``). On Feast's SQLite online store every view comes back in
one query (:mod:`segrec.sqlite_online`), on Redis in one pipeline
(:mod:`segrec.redis_online`); on other stores through the provider's ``online_read``, one
call per view, every entity at once. Values are decoded from the protobuf directly for
the plain types (``feast_value_type_to_python_type`` for the rest).
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type

from segrec.redis_online import RedisOnlineRows, redis_rows
from segrec.sqlite_online import SqliteOnlineRows, is_busy

# Defaults by Feast type name: unknown numbers are NaN (not 0, which is a real count for
# floats like recency), counts are 0, categories "unknown", flags False (no consent
# assumed), lists empty.
DEFAULTS_BY_TYPE: dict[str, Any] = {
    "Float64": math.nan,
    "Float32": math.nan,
    "Int64": 0,
    "Int32": 0,
    "String": "unknown",
    "Bool": False,
}
ARRAY_DEFAULT: list[Any] = []

SQLITE_STORE_TYPES = ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore")
# Value fields feast_value_type_to_python_type returns as they are, or as a list of them.
_PLAIN_KINDS = ("bytes", "string", "int32", "int64", "double", "float", "bool")
_PLAIN = frozenset(f"{kind}_val" for kind in _PLAIN_KINDS)
_PLAIN_LISTS = frozenset(f"{kind}_list_val" for kind in _PLAIN_KINDS)
_DECODED_CACHE_SIZE = 65_536
_ABSENT = object()


def decode_value(proto: Value) -> Any:
    """What ``feast_value_type_to_python_type(proto)`` returns, faster for plain types."""
    kind = proto.WhichOneof("val")
    if kind is None:
        return None
    if kind in _PLAIN:
        return getattr(proto, kind)
    if kind in _PLAIN_LISTS:
        return getattr(proto, kind).val[:]  # a list; a third faster than list(...)
    return feast_value_type_to_python_type(proto)


@dataclass
class FeatureVector:
    """One entity's features by short name, with what had to be defaulted and why."""

    entity_id: str
    values: dict[str, Any]
    # view:feature names defaulted because the store had no fresh value for the entity
    missing: list[str] = field(default_factory=list)
    stale_views: list[str] = field(default_factory=list)
    error: str | None = None  # the store could not be read at all

    @property
    def complete(self) -> bool:
        return not self.missing and self.error is None


def _type_default(dtype: Any) -> Any:
    name = str(dtype)
    if name.startswith("Array"):
        return list(ARRAY_DEFAULT)
    return DEFAULTS_BY_TYPE.get(name)


class _KeyEncoder:
    """Feast's serialised entity key of one string join key, without building protos:
    Feast's bytes for the join key, then the value's length and UTF-8 bytes (checked
    against Feast's own serialisation once; Feast's function when they differ)."""

    def __init__(self, join_key: str, version: int) -> None:
        self.join_key = join_key
        self.version = version
        self._prefix = self._feast("")[: -struct.calcsize("<I")]
        probe = "c_probe_é"
        self._exact = self._ours(probe) == self._feast(probe)

    def _feast(self, value: str) -> bytes:
        key = EntityKey(join_keys=[self.join_key], entity_values=[Value(string_val=value)])
        return serialize_entity_key(key, entity_key_serialization_version=self.version)

    def _ours(self, value: str) -> bytes:
        data = value.encode("utf8")
        return self._prefix + struct.pack("<I", len(data)) + data

    def __call__(self, value: str) -> bytes:
        return self._ours(value) if self._exact else self._feast(value)


class OnlineFeatureReader:
    """Reads one feature service for entities of one join key.

    Parameters
    ----------
    store
        A ``feast.FeatureStore``.
    service_name
        The feature service to read, e.g. ``customer_serving_v1`` (resolved once: asking
        Feast for the service on every call costs ~5 ms).
    join_key
        ``customer_id`` or ``product_id``.
    clock
        Returns "now" as an aware datetime; stale means ``now - event_time > ttl``.
    """

    def __init__(
        self,
        store: Any,
        service_name: str,
        join_key: str,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.store = store
        self.service = store.get_feature_service(service_name)
        self.join_key = join_key
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        # full name -> (view, short name, default, ttl in seconds or None)
        self.features: dict[str, tuple[str, str, Any, float | None]] = {}
        # Feast exposes its provider only privately; online_read on it is a public method.
        self._provider = store._get_provider()
        self._views: dict[str, Any] = {}
        self._view_features: dict[str, dict[str, Any]] = {}  # view -> short name -> default
        self._ttl: dict[str, float | None] = {}
        for projection in self.service.feature_view_projections:
            view = store.get_feature_view(projection.name)
            ttl = view.ttl.total_seconds() if view.ttl and view.ttl.total_seconds() > 0 else None
            self._views[projection.name] = view
            self._ttl[projection.name] = ttl
            self._view_features[projection.name] = {}
            for feature in projection.features:
                full = f"{projection.name_to_use()}__{feature.name}"
                default = _type_default(feature.dtype)
                self.features[full] = (projection.name, feature.name, default, ttl)
                self._view_features[projection.name][feature.name] = default
        # Per view, in order: name, ttl, (short name, default, "view:short") per feature,
        # the defaults and the labels (as named in FeatureVector.missing).
        self._plan = [
            (
                name,
                self._ttl[name],
                [(short, default, f"{name}:{short}") for short, default in features.items()],
                features,
                [f"{name}:{short}" for short in features],
            )
            for name, features in self._view_features.items()
        ]
        self._decoded: dict[bytes, Any] = {}  # serialised plain value -> value (SQLite)
        # Feast's SQLite store is read directly (all views in one query), Redis in one
        # pipeline for all views; others through the provider, one call per view.
        self._sqlite: SqliteOnlineRows | None = None
        self._redis: RedisOnlineRows | None = None
        config = store.config
        if config.online_store.type in SQLITE_STORE_TYPES:
            from feast.infra.online_stores.sqlite import SqliteOnlineStore

            versioned = getattr(config.registry, "enable_online_feature_view_versioning", False)
            self._sqlite = SqliteOnlineRows(
                SqliteOnlineStore._get_db_path(config),
                [compute_table_id(config.project, v, versioned) for v in self._views.values()],
            )
            self._entity_key = _KeyEncoder(join_key, config.entity_key_serialization_version)
        elif config.online_store.type == "redis":
            self._redis = redis_rows(
                self._provider,
                config,
                [(view, list(self._view_features[name])) for name, view in self._views.items()],
            )

    def defaults(self) -> dict[str, Any]:
        return {short: default for _, short, default, _ in self.features.values()}

    def read(self, entity_id: str) -> FeatureVector:
        return self.read_many([entity_id])[0]

    def read_many(self, entity_ids: Sequence[str]) -> list[FeatureVector]:
        try:
            if self._sqlite is not None:
                keys = [self._entity_key(str(e)) for e in entity_ids]
                rows = self._sqlite.read(keys)
                return self._vectors(entity_ids, rows, self._decode_serialised)
            return self._vectors(entity_ids, self._provider_rows(entity_ids), decode_value)
        except Exception as error:  # the store is down or misconfigured: say so, do not raise
            return self._failed(entity_ids, error)

    def read_many_now(self, entity_ids: Sequence[str]) -> list[FeatureVector] | None:
        """:meth:`read_many` when it needs no waiting: a local SQLite store read on this
        thread, failing at once rather than waiting for a writer's lock. None when it
        cannot (a networked store, or the file is locked): the caller then reads within
        its time budget off its own thread."""
        if self._sqlite is None:
            return None
        try:
            keys = [self._entity_key(str(e)) for e in entity_ids]
            rows = self._sqlite.read(keys, wait=False)
            return self._vectors(entity_ids, rows, self._decode_serialised)
        except sqlite3.Error as error:
            if is_busy(error):
                return None
            return self._failed(entity_ids, error)
        except Exception as error:
            return self._failed(entity_ids, error)

    def _failed(self, entity_ids: Sequence[str], error: Exception) -> list[FeatureVector]:
        """Every entity with defaults and the error: the store is down or misconfigured."""
        message = f"{type(error).__name__}: {error}"
        return [
            FeatureVector(
                entity_id=e,
                values=self.defaults(),
                missing=[f"{v}:{s}" for v, s, _, _ in self.features.values()],
                error=message,
            )
            for e in entity_ids
        ]

    def _provider_rows(
        self, entity_ids: Sequence[str]
    ) -> list[list[tuple[float | None, Mapping[str, Value] | None]]]:
        keys = [
            EntityKey(join_keys=[self.join_key], entity_values=[Value(string_val=str(e))])
            for e in entity_ids
        ]
        if self._redis is not None:
            views = self._redis.read(keys)
        else:
            views = [
                self._provider.online_read(
                    config=self.store.config,
                    table=view,
                    entity_keys=keys,
                    requested_features=list(self._view_features[name]),
                )
                for name, view in self._views.items()
            ]
        return [
            [(None if stamp is None else stamp.timestamp(), values) for stamp, values in rows]
            for rows in views
        ]

    def _decode_serialised(self, data: bytes) -> Any:
        """A serialised Value's value; plain scalars are remembered (immutable, and most
        repeat across customers: flags, counts, categories)."""
        value = self._decoded.get(data, _ABSENT)
        if value is _ABSENT:
            value = decode_value(Value.FromString(data))
            if value is None or type(value) in (bool, int, float, str, bytes):
                if len(self._decoded) >= _DECODED_CACHE_SIZE:
                    self._decoded.clear()
                self._decoded[data] = value
        return value

    def _vectors(
        self,
        entity_ids: Sequence[str],
        rows: Sequence[Sequence[tuple[float | None, Mapping[str, Any] | None]]],
        decode: Callable[[Any], Any],
    ) -> list[FeatureVector]:
        """FeatureVectors from each view's (event seconds, stored values) per entity, in
        the order of ``self._views``."""
        now = self.clock().timestamp()
        vectors = []
        for i, entity_id in enumerate(entity_ids):
            out: dict[str, Any] = {}
            missing: list[str] = []
            stale: list[str] = []
            for (name, ttl, features, defaults, labels), view_rows in zip(
                self._plan, rows, strict=True
            ):
                seconds, values = view_rows[i]
                if values is None or seconds is None or seconds <= 0:
                    values = None  # absent (Redis: an unknown key has timestamp 0)
                elif ttl is not None and now - seconds > ttl:
                    stale.append(name)
                    values = None
                if values is None:
                    out.update(defaults)
                    missing.extend(labels)
                    continue
                for short, default, label in features:
                    stored = values.get(short)
                    if stored is None:
                        out[short] = default
                        missing.append(label)
                        continue
                    value = decode(stored)
                    # Present but null (no purchase yet, so no recency): a known gap, not
                    # a missing feature.
                    out[short] = default if value is None else value
            vectors.append(FeatureVector(entity_id, out, missing, sorted(stale)))
        return vectors
