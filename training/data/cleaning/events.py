"""Clean events in two streaming passes, so memory is bounded by one chunk.

Pass one parses and checks each row (ids, type, time, quantity, price, value, product)
and stages the good rows; it also gathers what needs the whole stream: event-id and
row hashes for duplicates, quantities and price ratios for outlier fences, and every
customer's first event (to impute missing signups). Pass two maps raw customer ids to
clean pseudonyms (through merges), drops repeats into the set-aside file, flags
outliers, validates and writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from segrec.settings import Settings
from training.data.cleaning.outliers import OutlierFences, fit_fences, flag_outliers
from training.data.cleaning.parse import clean_text, normalise_ids, parse_numbers, parse_timestamps
from training.data.cleaning.standardise import standardise_event_types
from training.data.quality import QualityReport
from training.data.raw import PROVENANCE_COLUMNS, RAW_COLUMNS
from training.data.tables import TableWriter

STAGED_COLUMNS = [*RAW_COLUMNS["events"], *PROVENANCE_COLUMNS]
QUANTITY_TYPES = ("add_to_cart", "remove_from_cart", "purchase")
# A price within 3x of list (either way) is a promotion or a surcharge, never an outlier.
PRICE_RATIO_NEVER_OUTLIER = 3.0
# Most lines have quantity 1, so the spread collapses; up to 10x the typical quantity is
# an ordinary stock-up, not an outlier.
QUANTITY_RATIO_NEVER_OUTLIER = 10.0
STAGED_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("customer_id", pa.string()),
        ("product_id", pa.string()),
        ("ts", pa.timestamp("ns", tz="UTC")),
        ("type", pa.string()),
        ("quantity", pa.int64()),
        ("price", pa.float64()),
        ("value", pa.float64()),
        ("session_id", pa.string()),
        ("_source", pa.string()),
        ("_row", pa.int64()),
    ]
)


@dataclass
class StagedEvents:
    path: Path
    event_hashes: list[np.ndarray] = field(default_factory=list)
    row_hashes: list[np.ndarray] = field(default_factory=list)
    log_quantities: list[np.ndarray] = field(default_factory=list)
    log_price_ratios: list[np.ndarray] = field(default_factory=list)
    first_event: pd.Series = field(default_factory=lambda: pd.Series(dtype="datetime64[ns, UTC]"))
    rows: int = 0


def _first_reason(reasons: pd.Series, mask: pd.Series, reason: str) -> None:
    reasons[mask & reasons.isna()] = reason


def stage_events(
    chunks: Iterator[pd.DataFrame],
    list_price: pd.Series,
    report: QualityReport,
    staging: Path,
    *,
    dayfirst: bool,
    total_rows: int | None = None,
) -> StagedEvents:
    """Pass one: check every row, set bad ones aside with their reason, stage the rest."""
    quality = report.table("events")
    staged = StagedEvents(path=staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    writer = pq.ParquetWriter(staging, STAGED_SCHEMA)
    progress = tqdm(total=total_rows, desc="events: check", unit="row", disable=None)
    for chunk in chunks:
        progress.update(len(chunk))
        quality.rows_in += len(chunk)
        chunk = chunk.reset_index(drop=True)
        reasons = pd.Series(None, index=chunk.index, dtype=object)
        details = pd.Series(None, index=chunk.index, dtype=object)

        chunk["customer_id"], n = normalise_ids(chunk["customer_id"])
        quality.fix("float_id_normalised", n)
        chunk["product_id"], n = normalise_ids(chunk["product_id"])
        quality.fix("float_id_normalised", n)
        _first_reason(reasons, chunk["customer_id"].isna(), "missing_customer_id")
        _first_reason(reasons, chunk["product_id"].isna(), "missing_product_id")

        raw_type = clean_text(chunk["type"])
        kind = standardise_event_types(raw_type)
        quality.fix("event_type_respelled", int((kind.notna() & (kind != raw_type)).sum()))
        unknown = kind.isna()
        details[unknown & reasons.isna()] = raw_type[unknown]
        _first_reason(reasons, unknown, "unknown_event_type")
        chunk["type"] = kind

        ts, bad = parse_timestamps(chunk["ts"], dayfirst=dayfirst)
        details[bad & reasons.isna()] = chunk["ts"][bad]
        _first_reason(reasons, bad, "unparseable_timestamp")
        _first_reason(reasons, ts.isna(), "missing_timestamp")
        chunk["ts"] = ts

        quantity, bad = parse_numbers(chunk["quantity"])
        defaulted = quantity.isna() & ~bad
        quality.fix("quantity_missing_set_to_1", int((defaulted & reasons.isna()).sum()))
        quantity = quantity.where(~defaulted, 1.0)
        invalid_q = bad | (quantity < 1) | (quantity % 1 != 0)
        details[invalid_q & reasons.isna()] = chunk["quantity"][invalid_q]
        _first_reason(reasons, invalid_q, "invalid_quantity")
        chunk["quantity"] = quantity

        for column in ("price", "value"):
            number, bad = parse_numbers(chunk[column])
            details[bad & reasons.isna()] = chunk[column][bad]
            _first_reason(reasons, bad, f"unparseable_{column}")
            chunk[column] = number
        negative = chunk["price"] < 0
        details[negative & reasons.isna()] = chunk["price"][negative]
        _first_reason(reasons, negative, "negative_price")
        _first_reason(
            reasons, (chunk["type"] == "rating") & chunk["value"].isna(), "rating_without_value"
        )
        unknown_product = chunk["product_id"].notna() & ~chunk["product_id"].isin(list_price.index)
        details[unknown_product & reasons.isna()] = chunk["product_id"][unknown_product]
        _first_reason(reasons, unknown_product, "unknown_product")

        chunk["event_id"] = clean_text(chunk["event_id"])
        no_id = chunk["event_id"].isna()
        if no_id.any():
            chunk.loc[no_id, "event_id"] = (
                chunk.loc[no_id, "_source"].astype(str) + ":" + chunk.loc[no_id, "_row"].astype(str)
            )
        quality.fix("event_id_generated_from_source_row", int((no_id & reasons.isna()).sum()))
        chunk["session_id"] = clean_text(chunk["session_id"])

        bad_rows = reasons.notna()
        raw_view = chunk.loc[bad_rows]
        for reason, rows in raw_view.groupby(reasons[bad_rows]):
            report.set_aside("events", rows, str(reason), details)
        good = chunk.loc[~bad_rows, STAGED_COLUMNS].reset_index(drop=True)
        good["quantity"] = good["quantity"].astype(np.int64)
        _gather(staged, good, list_price)
        writer.write_table(pa.Table.from_pandas(good, schema=STAGED_SCHEMA, preserve_index=False))
    progress.close()
    writer.close()
    return staged


def _gather(staged: StagedEvents, good: pd.DataFrame, list_price: pd.Series) -> None:
    staged.rows += len(good)
    staged.event_hashes.append(pd.util.hash_array(good["event_id"].to_numpy(dtype=object)))
    content = good.drop(columns=["_source", "_row"])
    staged.row_hashes.append(pd.util.hash_pandas_object(content, index=False).to_numpy())
    qty = good.loc[good["type"].isin(QUANTITY_TYPES), "quantity"].to_numpy(dtype=float)
    staged.log_quantities.append(np.log(qty))
    priced = good[good["price"] > 0]
    ratio = priced["price"].to_numpy() / priced["product_id"].map(list_price).to_numpy(dtype=float)
    staged.log_price_ratios.append(np.log(ratio[np.isfinite(ratio) & (ratio > 0)]))
    first = good.groupby("customer_id")["ts"].min()
    staged.first_event = pd.concat([staged.first_event, first]).groupby(level=0).min()


@dataclass
class EventOutcome:
    rows_written: int
    quantity_fences: OutlierFences
    price_fences: OutlierFences


def write_clean_events(
    staged: StagedEvents,
    id_map: pd.Series,
    list_price: pd.Series,
    report: QualityReport,
    settings: Settings,
    clean_dir: Path,
) -> EventOutcome:
    """Pass two: dedupe, map customers, flag outliers, validate and write ``events``."""
    quality = report.table("events")
    event_hash = np.concatenate(staged.event_hashes) if staged.event_hashes else np.zeros(0, "u8")
    row_hash = np.concatenate(staged.row_hashes) if staged.row_hashes else np.zeros(0, "u8")
    _, first_index, inverse = np.unique(event_hash, return_index=True, return_inverse=True)
    is_first = np.zeros(len(event_hash), dtype=bool)
    is_first[first_index] = True
    same_as_first = row_hash == row_hash[first_index[inverse]]

    quantity_fences = fit_fences(
        np.exp(np.concatenate(staged.log_quantities or [np.zeros(0)])),
        iqr_k=settings.outlier_iqr_k,
        z_limit=settings.outlier_z,
        log_scale=True,
        min_half_width=np.log(QUANTITY_RATIO_NEVER_OUTLIER),
    )
    price_fences = fit_fences(
        np.exp(np.concatenate(staged.log_price_ratios or [np.zeros(0)])),
        iqr_k=settings.outlier_iqr_k,
        z_limit=settings.outlier_z,
        log_scale=True,
        min_half_width=np.log(PRICE_RATIO_NEVER_OUTLIER),
    )
    offset = 0
    with TableWriter(clean_dir, "events") as writer:
        if staged.rows:
            source = pq.ParquetFile(staged.path)
            batches = source.iter_batches(batch_size=settings.chunk_rows)
            for batch in tqdm(batches, desc="events: write", unit="chunk", disable=None):
                chunk = batch.to_pandas()
                positions = np.arange(offset, offset + len(chunk))
                offset += len(chunk)
                first = is_first[positions]
                repeat = ~first & same_as_first[positions]
                conflict = ~first & ~same_as_first[positions]
                report.set_aside(
                    "events", chunk[repeat], "duplicate_event", "exact repeat of an earlier row"
                )
                report.set_aside(
                    "events",
                    chunk[conflict],
                    "conflicting_event_id",
                    "an earlier row with this event_id but other values was kept",
                )
                chunk = chunk[first]
                clean_id = chunk["customer_id"].map(id_map)
                unknown = clean_id.isna()
                report.set_aside(
                    "events", chunk[unknown], "unknown_customer", "no customer record with this id"
                )
                chunk = chunk[~unknown].assign(customer_id=clean_id[~unknown])
                writer.write(_finish(chunk, list_price, quantity_fences, price_fences))
        rows = writer.rows

    flagged = pd.read_parquet(
        clean_dir / "events.parquet", columns=["price_outlier", "quantity_outlier"]
    ).sum()
    quality.outliers["quantity"] = {
        "method": "log quantity of cart and purchase events: outside IQR fences and beyond "
        "robust z",
        "count": int(flagged["quantity_outlier"]),
        **quantity_fences.describe(),
    }
    quality.outliers["price"] = {
        "method": "log(event price / list price): outside IQR fences and beyond robust z",
        "count": int(flagged["price_outlier"]),
        **price_fences.describe(),
    }
    quality.rows_out = rows
    return EventOutcome(rows, quantity_fences, price_fences)


def _finish(
    chunk: pd.DataFrame,
    list_price: pd.Series,
    quantity_fences: OutlierFences,
    price_fences: OutlierFences,
) -> pd.DataFrame:
    has_quantity = chunk["type"].isin(QUANTITY_TYPES).to_numpy()
    quantity_outlier = flag_outliers(quantity_fences, chunk["quantity"]) & has_quantity
    ratio = chunk["price"].to_numpy(dtype=float) / chunk["product_id"].map(list_price).to_numpy(
        dtype=float
    )
    price_outlier = flag_outliers(price_fences, ratio)
    out = chunk.drop(columns=["_source", "_row"]).reset_index(drop=True)
    out["ts"] = out["ts"].astype("datetime64[ns, UTC]")
    out["quantity"] = out["quantity"].astype(np.int64)
    out["price"] = out["price"].astype(float)
    out["value"] = out["value"].astype(float)
    out["price_outlier"] = price_outlier
    out["quantity_outlier"] = quantity_outlier
    return out
