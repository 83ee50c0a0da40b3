"""Clean the products table: ids, duplicates, categories, brands, prices, stock flags,
launch dates."""

from __future__ import annotations

import pandas as pd

from segrec.settings import Settings
from training.data.cleaning.impute import impute
from training.data.cleaning.outliers import fit_fences, flag_outliers
from training.data.cleaning.parse import (
    clean_text,
    parse_booleans,
    parse_numbers,
    parse_timestamps,
)
from training.data.cleaning.rows import identified_rows
from training.data.cleaning.standardise import standardise_categories
from training.data.quality import QualityReport
from training.data.raw import RAW_COLUMNS
from training.data.schema import SCHEMAS

UNCATEGORISED = "uncategorised"


def clean_products(
    raw: pd.DataFrame, report: QualityReport, settings: Settings, *, dayfirst: bool
) -> pd.DataFrame:
    """Typed, standardised, de-duplicated products; rows that cannot go on are set aside.

    ``dayfirst`` reads ambiguous slash dates in ``launch_ts`` as the customers' signup
    dates are read. A missing or unparseable launch date stays missing (NaT): models
    that need one fall back on the product's first event.
    """
    quality = report.table("products")
    if "launch_ts" not in raw:  # a raw dataset written before launch dates were carried
        raw = raw.assign(launch_ts=None)
    frame = identified_rows(raw, "products", "product_id", report)

    content = list(RAW_COLUMNS["products"])
    exact = frame.duplicated(subset=content, keep="first")
    report.set_aside("products", frame[exact], "duplicate_row")
    frame = frame[~exact]
    conflicting = frame.duplicated(subset=["product_id"], keep="first")
    report.set_aside(
        "products",
        frame[conflicting],
        "conflicting_product_id",
        "another row with this product_id came first and was kept",
    )
    frame = frame[~conflicting].reset_index(drop=True)

    trail = pd.Series("", index=frame.index, dtype=object)
    for column in ("title", "description", "brand", "tags"):
        frame[column] = clean_text(frame[column])

    description_lead = frame["description"].str.split(".").str[0].str.strip()
    no_title = frame["title"].isna()
    frame.loc[no_title, "title"] = description_lead[no_title].fillna(frame["product_id"][no_title])
    trail[no_title] = "title"
    quality.imputed["title"] = {
        "method": "first sentence of description, else product_id",
        "count": int(no_title.sum()),
    }
    quality.imputed["description"] = impute(frame, "description", "constant", trail, constant="")

    before = frame["category"].astype("string").str.strip()
    frame["category"], mapping = standardise_categories(frame["category"].where(before != ""))
    quality.fix("category_respelled", int((before.notna() & (before != frame["category"])).sum()))
    quality.notes["category_spellings"] = {k: v for k, v in sorted(mapping.items()) if k != v}
    quality.imputed["category"] = impute(
        frame, "category", "constant", trail, constant=UNCATEGORISED
    )

    lower = frame["brand"].str.lower()
    preferred = frame.groupby(lower)["brand"].agg(lambda s: s.value_counts().index[0])
    recased = lower.map(preferred)
    quality.fix("brand_recased", int((frame["brand"].notna() & (recased != frame["brand"])).sum()))
    frame["brand"] = recased
    quality.imputed["brand"] = impute(frame, "brand", "constant", trail, constant="unknown")

    price, unparseable = parse_numbers(frame["price"])
    report.table("products").fix("price_unparseable_to_missing", int(unparseable.sum()))
    had_symbol = frame["price"].astype("string").str.contains(r"[£$€,]", na=False)
    quality.fix("price_format_normalised", int((had_symbol & ~unparseable).sum()))
    non_positive = price <= 0
    quality.fix("price_non_positive_to_missing", int(non_positive.sum()))
    frame["price"] = price.where(~non_positive)
    quality.imputed["price"] = impute(frame, "price", "median", trail, by="category")
    frame["price"] = frame["price"].astype(float)

    frame["price_outlier"] = False
    fences_by_category = {}
    for category, rows in frame.groupby("category").groups.items():
        prices = frame.loc[rows, "price"]
        fences = fit_fences(
            prices, iqr_k=settings.outlier_iqr_k, z_limit=settings.outlier_z, log_scale=True
        )
        frame.loc[rows, "price_outlier"] = flag_outliers(fences, prices)
        fences_by_category[str(category)] = fences.describe()
    quality.outliers["price"] = {
        "method": "log price within category: outside IQR fences and beyond robust z",
        "count": int(frame["price_outlier"].sum()),
        "fences": fences_by_category,
    }

    in_stock, unparseable = parse_booleans(frame["in_stock"])
    quality.fix("in_stock_unparseable_to_missing", int(unparseable.sum()))
    spelled = frame["in_stock"].astype("string").str.strip().str.lower()
    quality.fix(
        "in_stock_respelled", int((in_stock.notna() & ~spelled.isin(["true", "false"])).sum())
    )
    frame["in_stock"] = in_stock.astype(object)
    quality.imputed["in_stock"] = impute(frame, "in_stock", "mode", trail, fallback=True)
    frame["in_stock"] = frame["in_stock"].astype(bool)

    launch, unparseable = parse_timestamps(frame["launch_ts"], dayfirst=dayfirst)
    quality.fix("launch_ts_unparseable_to_missing", int(unparseable.sum()))
    quality.notes["launch_ts_missing"] = {
        "count": int(launch.isna().sum()),
        "kept": "missing, not imputed: models use the product's first event",
    }
    frame["launch_ts"] = launch

    frame["imputed_columns"] = trail
    frame["price_outlier"] = frame["price_outlier"].astype(bool)
    out = frame[list(SCHEMAS["products"].columns)].reset_index(drop=True)
    quality.rows_out = len(out)
    return out


def list_prices(products: pd.DataFrame) -> pd.Series:
    """List price by product id, for judging event prices."""
    return pd.Series(products["price"].to_numpy(dtype=float), index=products["product_id"])
