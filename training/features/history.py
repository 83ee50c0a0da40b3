"""Point-in-time training features through Feast's offline store.

Feast's file store drops an entity row when the entity exists in a source but has no
row inside the as-of window (before its first snapshot, or older than the ttl). Rows are
tagged here and merged back, so the result has exactly one row per requested row, with
missing features as NaN.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from segrec.feature_store import load_definitions
from segrec.settings import Settings

ROW_KEY = "__segrec_row"


def historical_features(
    store: Any, entity_df: pd.DataFrame, service_name: str = "customer_training_v1"
) -> pd.DataFrame:
    """Features as of each row's ``event_timestamp`` (tz-aware UTC), one row per input row."""
    if "event_timestamp" not in entity_df:
        raise ValueError("entity_df needs an event_timestamp column (the as-of time per row)")
    tagged = entity_df.reset_index(drop=True).copy()
    tagged["event_timestamp"] = pd.to_datetime(tagged["event_timestamp"], utc=True)
    tagged[ROW_KEY] = range(len(tagged))
    service = store.get_feature_service(service_name)
    joined = store.get_historical_features(entity_df=tagged, features=service).to_df()
    features = joined.drop(columns=[c for c in entity_df.columns if c in joined], errors="ignore")
    merged = tagged.merge(features, on=ROW_KEY, how="left")
    return merged.sort_values(ROW_KEY).drop(columns=ROW_KEY).reset_index(drop=True)


def features_as_of(
    settings: Settings, service_name: str, cutoff: pd.Timestamp, entity_ids: list[str] | None = None
) -> pd.DataFrame:
    """Every entity's features as of one time ``cutoff``, read from the feature service's
    offline sources with Feast's point-in-time rule (per view: the newest row at or before
    ``cutoff`` and no older than the view's ttl), indexed by the join key.

    The same answer as :func:`historical_features` with one timestamp for every row (a
    test holds them equal), at a cost that stays linear: Feast's file offline store spent
    about 2 ms per entity row here (over half an hour for a million customers).
    """
    objects = load_definitions(settings)
    service = objects[service_name]
    parts: list[pd.DataFrame] = []
    for projection in service.feature_view_projections:
        view = objects[projection.name]
        join_key = objects[view.entities[0]].join_key
        stamp = view.batch_source.timestamp_field
        names = [f.name for f in projection.features]
        filters = [("event_timestamp" if stamp is None else stamp, "<=", cutoff)]
        if view.ttl:
            filters.append((stamp, ">=", cutoff - pd.Timedelta(view.ttl)))
        table = pq.read_table(
            view.batch_source.path, columns=[join_key, stamp, *names], filters=filters
        )
        frame = table.to_pandas()
        frame = frame.sort_values(stamp, kind="stable").drop_duplicates(join_key, keep="last")
        parts.append(frame.set_index(join_key)[names])
    index = pd.Index(entity_ids, name=None) if entity_ids is not None else parts[0].index
    joined = pd.DataFrame(index=index)
    for part in parts:
        joined = joined.join(part, how="left")
    joined.index.name = None
    return joined
