"""Import the UCI "Online Retail" (and "Online Retail II") invoice-line CSV export.

Every line is one purchase event. A line that is not a purchase of a product by a known
customer is set aside under exactly one reason, the first that applies, in this order:

1. ``cancellation``: the invoice number starts with "C".
2. ``return``: negative quantity on an ordinary invoice.
3. ``non_product_code``: postage, fees, adjustments and tests (:data:`NON_PRODUCT_CODES`).
4. ``non_positive_price``: zero or negative unit price (free samples, write-offs).
5. ``missing_customer_id``: no customer to attribute the purchase to.
6. ``duplicate_line``: all eight source fields equal an earlier kept line's.

What a line *is* (cancellation, return, non-product) comes before what it *lacks*, and
duplicates are looked for only among lines that would otherwise be kept, so the first
occurrence goes on. Quantities and prices that are not numbers are passed on as they are
for cleaning to judge. Dates stay as written; they are month-first (``12/1/2010 8:26``),
which the dataset's ``source.json`` tells cleaning.

Customers (one per kept customer id, most frequent country) and products (one per stock
code on kept lines or lines set aside only for a missing customer, most frequent
description, median kept unit price) are aggregated over all chunks and written last.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from segrec.settings import Settings
from training.data.importers.canonical import assume_consent, normalise_float_ids
from training.data.importers.encoding import ImportFormatError, iter_csv_chunks, read_header
from training.data.quality import QualityReport
from training.data.raw import RawDataset, RawTableWriter

# The Online Retail names, with the "Online Retail II" spellings they replace.
SOURCE_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
ALIASES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}

# Stock codes that book something other than a product: postage (POST, DOT), manual
# entries (M), discounts (D), carriage (C2), charity (CRUK), fees (BANK CHARGES,
# AMAZONFEE), padding (PADS), bad-debt adjustments (B), samples (S). They would
# otherwise become the "most bought products". Compared upper-cased.
NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "D", "C2", "CRUK", "BANK CHARGES", "AMAZONFEE", "PADS", "B", "S"}
)
# Gift vouchers (gift_0001_10, ...) and test entries (TEST001, ...) come in numbered series.
NON_PRODUCT_PREFIXES = ("GIFT_0001", "TEST")

REASONS = (
    "cancellation",
    "return",
    "non_product_code",
    "non_positive_price",
    "missing_customer_id",
    "duplicate_line",
)


def import_online_retail(
    input_path: Path,
    out_dir: Path,
    report: QualityReport,
    settings: Settings,
    column_map: dict[str, str] | None = None,
) -> RawDataset:
    """Import an Online Retail CSV into a raw dataset at ``out_dir``.

    ``column_map`` renames source headers to the Online Retail names above.

    Raises
    ------
    ImportFormatError
        For a directory or spreadsheet instead of a CSV, or missing columns.
    """
    renames = _resolve_columns(input_path, column_map or {})
    quality = report.table("events")
    ignored = [source for source, column in renames.items() if column not in SOURCE_COLUMNS]
    if ignored:
        quality.notes["ignored_columns"] = ignored
    lines = _Aggregates()
    seen: set[int] = set()
    read = 0
    with RawTableWriter(out_dir, "events") as writer:
        for chunk in iter_csv_chunks(input_path, report, "events", settings.chunk_rows):
            chunk = chunk.rename(columns=renames)[[*SOURCE_COLUMNS, "_source", "_row"]]
            read += len(chunk)
            parsed = _parse(chunk)
            reason = _classify(chunk, parsed, seen)
            for name in REASONS:
                rows = chunk[reason == name]
                report.set_aside("events", rows, name, _detail(name, rows))
            kept = reason == ""
            events = _events(chunk[kept], parsed[kept], report)
            no_customer = reason == "missing_customer_id"
            lines.add(events, parsed[no_customer].join(chunk[["_source", "_row"]]))
            writer.write(events)
    quality.notes["imported"] = {"source": input_path.name, "rows_read": read, "rows": writer.rows}

    with RawTableWriter(out_dir, "customers") as customers:
        frame = lines.customers()
        assume_consent(frame, report.table("customers"), settings)
        customers.write(frame)
    with RawTableWriter(out_dir, "products") as products:
        products.write(lines.products())
    dataset = RawDataset(out_dir)
    dataset.write_meta(
        {"format": "online-retail", "dayfirst": False, "files": {"events": input_path.name}}
    )
    return dataset


def _resolve_columns(path: Path, column_map: dict[str, str]) -> dict[str, str]:
    """Source header -> Online Retail name, checking the file is a CSV with every column."""
    if path.is_dir():
        raise ImportFormatError(f"{path}: online-retail expects a CSV file, not a directory")
    if path.suffix.lower() in {".xlsx", ".xls"}:
        raise ImportFormatError(
            f"{path}: spreadsheets are not read directly; convert to CSV (e.g. save the sheet "
            "as 'CSV UTF-8') and import the .csv"
        )
    unknown = sorted(set(column_map.values()) - set(SOURCE_COLUMNS) - set(ALIASES))
    if unknown:
        raise ImportFormatError(
            f"column mapping targets {unknown} are not Online Retail columns; "
            f"use one of {list(SOURCE_COLUMNS)}"
        )
    found = read_header(path)
    renames = {
        column: ALIASES.get(column_map.get(column, column), column_map.get(column, column))
        for column in found
    }
    named = list(renames.values())
    clashes = sorted({column for column in named if named.count(column) > 1})
    if clashes:
        raise ImportFormatError(
            f"{path}: more than one column would be read as {clashes}; columns found: {found}"
        )
    missing = [column for column in SOURCE_COLUMNS if column not in named]
    if missing:
        raise ImportFormatError(
            f"{path}: missing required column(s) {missing} for online-retail; columns found: "
            f"{found}. Map other headers with the mapping option --map source=column "
            "(e.g. --map Customer=CustomerID)."
        )
    return renames


def _parse(chunk: pd.DataFrame) -> pd.DataFrame:
    """Normalised code, description and customer, and numeric quantity and price per line."""
    # Arrow's string kernels are much faster than pandas' per-value ``.str`` methods.
    columns = ("InvoiceNo", "StockCode", "Description", "CustomerID")
    text = {column: _stripped(chunk[column]) for column in columns}
    code = pc.utf8_upper(text["StockCode"])
    non_product = pc.is_in(code, value_set=pa.array(sorted(NON_PRODUCT_CODES)))
    for prefix in NON_PRODUCT_PREFIXES:
        non_product = pc.or_(non_product, pc.starts_with(code, prefix))
    return pd.DataFrame(
        {
            "cancelled": _flags(pc.starts_with(pc.utf8_upper(text["InvoiceNo"]), "C")),
            "non_product": _flags(non_product),
            "code": _strings(code),
            "description": _strings(text["Description"]),
            "customer": _strings(text["CustomerID"]),
            "quantity": pd.to_numeric(chunk["Quantity"], errors="coerce"),
            "price": pd.to_numeric(chunk["UnitPrice"], errors="coerce"),
        },
        index=chunk.index,
    )


def _stripped(values: pd.Series) -> pa.Array:
    """Values without surrounding whitespace; blank ones become null."""
    text = pc.utf8_trim_whitespace(pa.array(values, type=pa.string(), from_pandas=True))
    return pc.if_else(pc.equal(text, ""), None, text)


def _flags(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _strings(values: pa.Array) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)


def _classify(chunk: pd.DataFrame, parsed: pd.DataFrame, seen: set[int]) -> pd.Series:
    """The set-aside reason of each line ("" for kept lines), by the module's precedence."""
    checks = [
        parsed["cancelled"],
        parsed["quantity"] < 0,
        parsed["non_product"],
        parsed["price"] <= 0,
        parsed["customer"].isna(),
    ]
    reason = pd.Series(
        np.select(checks, REASONS[: len(checks)], default=""), index=chunk.index, dtype=object
    )
    candidates = chunk.loc[reason == "", list(SOURCE_COLUMNS)]
    repeated = []
    for value in pd.util.hash_pandas_object(candidates, index=False).tolist():
        repeated.append(value in seen)
        seen.add(value)
    reason[candidates.index[np.asarray(repeated, dtype=bool)]] = "duplicate_line"
    return reason


# What each reason's detail shows: a label and the source column holding the culprit.
_DETAILS = {
    "cancellation": ("invoice ", "InvoiceNo"),
    "return": ("quantity ", "Quantity"),
    "non_product_code": ("stock code ", "StockCode"),
    "non_positive_price": ("unit price ", "UnitPrice"),
}


def _detail(reason: str, rows: pd.DataFrame) -> str | pd.Series | None:
    if reason == "duplicate_line":
        return "repeats an earlier line exactly"
    if reason not in _DETAILS:
        return None
    label, column = _DETAILS[reason]
    return label + rows[column].fillna("")


def _events(lines: pd.DataFrame, parsed: pd.DataFrame, report: QualityReport) -> pd.DataFrame:
    """Kept lines in canonical event columns, values still the source text."""
    quality = report.table("events")
    code = parsed["code"]
    quality.fix("stock_code_normalised", int(((code != lines["StockCode"]) & code.notna()).sum()))
    # Rounding drops float noise (6 * 2.55 = 15.299999999999999), not real cents.
    value = (parsed["quantity"] * parsed["price"]).round(6)
    return pd.DataFrame(
        {
            "event_id": lines["InvoiceNo"].fillna("") + "-" + lines["_row"].astype(str),
            "customer_id": normalise_float_ids(parsed["customer"], quality),
            "product_id": code,
            "ts": lines["InvoiceDate"],
            "type": "purchase",
            "quantity": lines["Quantity"],
            "price": lines["UnitPrice"],
            "value": value.astype(str).where(value.notna(), None),
            "session_id": lines["InvoiceNo"],
            "country": lines["Country"],
            "description": parsed["description"],
            "price_value": parsed["price"],
            "_source": lines["_source"],
            "_row": lines["_row"],
        },
        index=lines.index,
    )


class _Aggregates:
    """Counts over all chunks from which customers and products are built at the end."""

    def __init__(self) -> None:
        self.countries = pd.Series(dtype="int64")
        self.descriptions = pd.Series(dtype="int64")
        self.prices = pd.Series(dtype="int64")
        self.first_customer = pd.DataFrame(columns=["_source", "_row"])
        self.first_product = pd.DataFrame(columns=["_source", "_row"])

    def add(self, events: pd.DataFrame, no_customer: pd.DataFrame) -> None:
        """Count kept ``events``; lines lacking only a customer still describe products."""
        self.countries = _add_counts(self.countries, events, ["customer_id", "country"])
        self.prices = _add_counts(self.prices, events, ["product_id", "price_value"])
        catalogue = pd.concat(
            [
                events[["product_id", "description", "_source", "_row"]],
                no_customer.rename(columns={"code": "product_id"})[
                    ["product_id", "description", "_source", "_row"]
                ],
            ]
        ).dropna(subset=["product_id"])
        self.descriptions = _add_counts(
            self.descriptions,
            catalogue.dropna(subset=["description"]),
            ["product_id", "description"],
        )
        self.first_customer = _first_rows(self.first_customer, events, "customer_id")
        self.first_product = _first_rows(self.first_product, catalogue, "product_id")

    def customers(self) -> pd.DataFrame:
        frame = self.first_customer.copy()
        frame["country"] = _most_frequent(self.countries).reindex(frame.index)
        return frame.rename_axis("customer_id").reset_index()

    def products(self) -> pd.DataFrame:
        frame = self.first_product.copy()
        title = _most_frequent(self.descriptions).reindex(frame.index)
        price = _weighted_median(self.prices).reindex(frame.index).round(6)
        frame["title"] = title
        frame["description"] = title
        frame["price"] = price.astype(str).where(price.notna(), None)
        frame["in_stock"] = "true"
        return frame.rename_axis("product_id").reset_index()


def _add_counts(total: pd.Series, frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    counts = frame.groupby(keys).size()  # rows with a null key or value count for nothing
    if total.empty:
        return counts
    return total.add(counts, fill_value=0).astype("int64")


def _first_rows(first: pd.DataFrame, frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Keep the earliest ``_source``/``_row`` per ``key``; chunks arrive in file order."""
    rows = frame.dropna(subset=[key]).sort_values("_row").drop_duplicates(key)
    rows = rows.set_index(key)[["_source", "_row"]]
    new = rows[~rows.index.isin(first.index)]
    return new if first.empty else pd.concat([first, new])


def _most_frequent(counts: pd.Series) -> pd.Series:
    """Per first key level, the most frequent non-null second level (ties: alphabetical)."""
    if counts.empty:
        return pd.Series(dtype=object)
    frame = counts.rename("n").reset_index()
    key, value = frame.columns[0], frame.columns[1]
    frame = frame.dropna(subset=[value]).sort_values(
        ["n", value], ascending=[False, True], kind="stable"
    )
    return frame.drop_duplicates(key).set_index(key)[value]


def _weighted_median(counts: pd.Series) -> pd.Series:
    """Median of the second key level per first level, weighted by ``counts``."""
    if counts.empty:
        return pd.Series(dtype="float64")
    frame = counts.rename("n").reset_index()
    key, value = frame.columns[0], frame.columns[1]
    frame = frame.dropna(subset=[value]).sort_values([key, value])
    cumulative = frame.groupby(key)["n"].cumsum()
    half = frame.groupby(key)["n"].transform("sum") / 2
    # Lower middle: first value whose cumulative count reaches half; upper: passes half.
    lower = frame[cumulative >= half].drop_duplicates(key).set_index(key)[value]
    upper = frame[cumulative > half].drop_duplicates(key).set_index(key)[value]
    return (lower + upper) / 2
