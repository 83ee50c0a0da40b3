"""Product features as of a timestamp: attributes, windowed popularity, conversion, trend."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.features.customer import events_before
from training.features.inputs import FeatureInputs

WINDOWS_DAYS = (7, 30, 90)
TREND_HALF_LIFE_DAYS = 14.0
# Conversion is smoothed towards the catalogue rate with this many pseudo-views, so a
# product with one view and one purchase does not look like a sure thing.
CONVERSION_PRIOR_VIEWS = 20.0


def product_features(inputs: FeatureInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per product, stamped ``event_timestamp = as_of``."""
    products = inputs.products.set_index("product_id")
    ids = products.index
    ev = events_before(inputs, as_of)
    out = pd.DataFrame(index=ids)
    for column in ("category", "brand", "price", "price_band", "in_stock"):
        out[column] = products[column]
    pid = ev["product_id"].astype(object)
    kind = ev["type"].astype(object)
    for days in WINDOWS_DAYS:
        window = ev["ts"] >= as_of - pd.Timedelta(days=days)
        counts = ev[window].groupby([pid[window], kind[window]]).size().unstack(fill_value=0)
        for event, name in (("view", "views"), ("add_to_cart", "carts"), ("purchase", "purchases")):
            values = counts[event] if event in counts else pd.Series(dtype=np.int64)
            out[f"{name}_{days}d"] = values.reindex(ids).fillna(0).astype(np.int64)
    views, purchases = out["views_90d"], out["purchases_90d"]
    base_rate = purchases.sum() / max(views.sum(), 1)
    out["conversion_rate_90d"] = (purchases + CONVERSION_PRIOR_VIEWS * base_rate) / (
        views + CONVERSION_PRIOR_VIEWS
    )
    age_days = (as_of - ev["ts"]).dt.total_seconds().to_numpy() / 86400
    decay = np.exp2(-age_days / TREND_HALF_LIFE_DAYS)
    weight = kind.map({"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}).fillna(0.0)
    out["trend_score"] = (
        pd.Series(decay * weight.to_numpy(), index=ev.index)
        .groupby(pid)
        .sum()
        .reindex(ids)
        .fillna(0.0)
    )
    buyers = ev[kind == "purchase"].groupby(pid[kind == "purchase"])["customer_id"].nunique()
    out["distinct_buyers"] = buyers.reindex(ids).fillna(0).astype(np.int64)
    out = out.reset_index().rename(columns={"index": "product_id"})
    out["event_timestamp"] = as_of
    return out
