"""The clean tables, loaded compactly for feature computation.

Ids become categoricals and only the columns features need are read, so the large
size (17M events) fits in a few GB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from segrec.consent import apply_consent
from training.data.raw import RAW_COLUMNS
from training.data.tables import read_table

EVENT_COLUMNS = [c for c in RAW_COLUMNS["events"] if c != "event_id"]
PRICE_BANDS = ("low", "mid", "high")


@dataclass
class FeatureInputs:
    customers: pd.DataFrame
    products: pd.DataFrame  # with price_band and list price
    events: pd.DataFrame  # compact: categorical ids, product category joined

    @property
    def end(self) -> pd.Timestamp:
        """Just after the last event: the as-of time of the newest snapshot."""
        return self.events["ts"].max().ceil("D")


MIN_PRODUCTS_FOR_CATEGORY_BANDS = 3


def price_bands(products: pd.DataFrame) -> pd.Series:
    """Low/mid/high by price tercile within the product's category ("unknown" without price).

    Categories with fewer than three priced products use terciles over the whole catalogue.
    """
    ranks = products.groupby("category")["price"].rank(pct=True)
    priced = products.groupby("category")["price"].transform("count")
    small = priced < MIN_PRODUCTS_FOR_CATEGORY_BANDS
    ranks[small] = products["price"].rank(pct=True)[small]
    band = pd.cut(ranks, [0, 1 / 3, 2 / 3, 1.0], labels=list(PRICE_BANDS), include_lowest=True)
    return band.astype(object).where(band.notna(), "unknown")


def personalisation_consent(
    clean_dir: Path, consent: Mapping[str, bool] | None = None
) -> pd.Series:
    """Per clean customer id, whether they consent to personalisation now: the imported
    flag with ``consent`` (the consent ledger's newest change per customer) over it."""
    customers = apply_consent(read_table(clean_dir, "customers"), consent or {})
    flags = customers.set_index(customers["customer_id"].astype(str))["consent_personalisation"]
    return flags.fillna(False).astype(bool)


def load_inputs(clean_dir: Path, consent: Mapping[str, bool] | None = None) -> FeatureInputs:
    """The clean tables, with ``consent`` (the consent ledger's newest change per
    customer, :class:`segrec.consent.ConsentLedger`) applied over the imported flags."""
    customers = apply_consent(read_table(clean_dir, "customers"), consent or {})
    products = read_table(clean_dir, "products")
    products["price_band"] = price_bands(products)
    table = pq.read_table(
        clean_dir / "events.parquet",
        columns=EVENT_COLUMNS,
        read_dictionary=["customer_id", "product_id", "type", "session_id"],
    )
    events = table.to_pandas()
    category = products.set_index("product_id")["category"]
    band = products.set_index("product_id")["price_band"]
    list_price = products.set_index("product_id")["price"]
    events["category"] = events["product_id"].map(category).astype("category")
    events["price_band"] = events["product_id"].map(band).astype("category")
    events["list_price"] = events["product_id"].map(list_price).astype(np.float32)
    events = events.sort_values("ts", kind="stable", ignore_index=True)
    return FeatureInputs(customers=customers, products=products, events=events)
