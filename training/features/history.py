"""Point-in-time training features through Feast's offline store.

Feast's file store drops an entity row when the entity exists in a source but has no
row inside the as-of window (before its first snapshot, or older than the ttl). Rows are
tagged here and merged back, so the result has exactly one row per requested row, with
missing features as NaN.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

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
