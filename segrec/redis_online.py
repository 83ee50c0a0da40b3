"""Feast's Redis online store read in one round trip for every feature view of a service.

The provider's ``online_read`` sends one pipeline of ``HMGET`` per view: five round trips
for ``customer_serving_v2``, each a wait for the Redis server to be scheduled. This sends
the same commands, built by the same Feast methods, as one pipeline and splits the replies
per view again, converted by Feast's own code: the same answers (tested equal).

Those methods are private to Feast's ``RedisOnlineStore``; :func:`redis_rows` returns
None when the store lacks one of them (another Feast version), and the reader keeps the
provider's ``online_read``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

_FEAST_METHODS = (
    "_generate_hset_keys_for_features",
    "_generate_redis_keys_for_entities",
    "_read_hash_fields",
    "_convert_redis_values_to_protobuf",
)

ViewRow = tuple[dt.datetime | None, dict[str, Value] | None]


class RedisOnlineRows:
    """Reads several feature views of Feast's Redis online store in one pipeline.

    Parameters
    ----------
    online_store
        The provider's ``RedisOnlineStore``.
    config
        The store's ``RepoConfig``.
    views
        (feature view, the feature names to read), in the order the rows come back.
    """

    def __init__(
        self, online_store: Any, config: Any, views: Sequence[tuple[Any, Sequence[str]]]
    ) -> None:
        from feast.infra.online_stores.redis import _versioned_fv_name

        self.online_store = online_store
        self.config = config
        # Per view: Feast's name for it, the fields asked (ending with its timestamp) and
        # their hash keys, as Feast's online_read builds them.
        self._plan = []
        for view, features in views:
            name = _versioned_fv_name(view, config)
            fields, hash_keys = online_store._generate_hset_keys_for_features(
                view, list(features), fv_name_override=name
            )
            self._plan.append((name, fields, hash_keys))

    def read(self, entity_keys: Sequence[EntityKey]) -> list[list[ViewRow]]:
        """Per view, per entity: what the provider's ``online_read`` returns for it."""
        store = self.online_store
        keys = store._generate_redis_keys_for_entities(self.config, list(entity_keys))
        commands = [(key, hash_keys) for _, _, hash_keys in self._plan for key in keys]
        replies = store._read_hash_fields(self.config, commands)
        count = len(keys)
        return [
            store._convert_redis_values_to_protobuf(
                replies[i * count : (i + 1) * count], name, fields
            )
            for i, (name, fields, _) in enumerate(self._plan)
        ]


def redis_rows(
    provider: Any, config: Any, views: Sequence[tuple[Any, Sequence[str]]]
) -> RedisOnlineRows | None:
    """A one-pipeline reader for the provider's Redis store, or None (not Redis, or a
    Feast without the methods it reuses)."""
    try:
        from feast.infra.online_stores.redis import RedisOnlineStore
    except ImportError:  # no redis client installed: not a Redis store either
        return None
    online_store = getattr(provider, "online_store", None)
    if not isinstance(online_store, RedisOnlineStore):
        return None
    if not all(callable(getattr(online_store, m, None)) for m in _FEAST_METHODS):
        return None
    return RedisOnlineRows(online_store, config, views)
