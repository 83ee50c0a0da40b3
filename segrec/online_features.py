"""Read a customer's serving features from Feast's online store, never raising.

Feast does not enforce a view's ttl on online reads, and Redis reports an unknown key as
present with timestamp 0; so each value's event time is checked here against its view's
ttl. Missing, stale or unreadable values are replaced by explicit defaults and named in
``missing``, so callers can fall back openly instead of failing.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
        for projection in self.service.feature_view_projections:
            view = store.get_feature_view(projection.name)
            ttl = view.ttl.total_seconds() if view.ttl and view.ttl.total_seconds() > 0 else None
            for feature in projection.features:
                full = f"{projection.name_to_use()}__{feature.name}"
                self.features[full] = (
                    projection.name,
                    feature.name,
                    _type_default(feature.dtype),
                    ttl,
                )

    def defaults(self) -> dict[str, Any]:
        return {short: default for _, short, default, _ in self.features.values()}

    def read(self, entity_id: str) -> FeatureVector:
        return self.read_many([entity_id])[0]

    def read_many(self, entity_ids: Sequence[str]) -> list[FeatureVector]:
        rows = [{self.join_key: entity_id} for entity_id in entity_ids]
        try:
            response = self.store.get_online_features(
                features=self.service, entity_rows=rows, full_feature_names=True
            ).to_dict(include_event_timestamps=True)
        except Exception as error:  # the store is down or misconfigured: say so, do not raise
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
        now = self.clock().timestamp()
        absent = [None] * len(entity_ids)
        vectors = []
        for i, entity_id in enumerate(entity_ids):
            vector = FeatureVector(entity_id=entity_id, values={})
            stale: set[str] = set()
            for full, (view, short, default, ttl) in self.features.items():
                value = response.get(full, absent)[i]
                stamp = response.get(f"{full}__ts", absent)[i] or 0
                # Seconds since the value's event time, compared as plain numbers: this
                # loop runs for every feature of every request.
                fresh = not stamp or ttl is None or now - stamp <= ttl
                if not fresh:
                    stale.add(view)
                if not stamp or not fresh:
                    vector.values[short] = default
                    vector.missing.append(f"{view}:{short}")
                else:
                    # Present but null (no purchase yet, so no recency): a known gap, not
                    # a missing feature.
                    vector.values[short] = default if value is None else value
            vector.stale_views = sorted(stale)
            vectors.append(vector)
        return vectors
