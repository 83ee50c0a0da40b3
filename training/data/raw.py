"""The raw layer: what every importer and the synthetic generator hand to cleaning.

A raw dataset is a directory of three parquet files in the canonical column names with
every value still a string, exactly as the source had it (mixed date formats, typos,
PII), plus ``_source`` (file name) and ``_row`` (line or row number in that file) so a
row set aside later can be found again in the original export.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PROVENANCE_COLUMNS = ("_source", "_row")

RAW_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": (
        "customer_id",
        "signup_ts",
        "name",
        "email",
        "address",
        "phone",
        "city",
        "postcode",
        "country",
        "birth_year",
        "gender",
        "occupation",
        "consent_personalisation",
        "consent_marketing",
    ),
    "products": (
        "product_id",
        "title",
        "description",
        "category",
        "brand",
        "price",
        "in_stock",
        "tags",
        "launch_ts",  # optional: when the product went on sale
    ),
    "events": (
        "event_id",
        "customer_id",
        "product_id",
        "ts",
        "type",
        "quantity",
        "price",
        "value",
        "session_id",
    ),
}

# Direct identifiers: they may exist in raw data only, never past cleaning.
PII_COLUMNS = ("name", "email", "address", "phone")

TABLES = tuple(RAW_COLUMNS)


def raw_schema(table: str) -> pa.Schema:
    """All-string arrow schema of a raw table, provenance last (``_row`` is an integer)."""
    fields = [pa.field(c, pa.string()) for c in RAW_COLUMNS[table]]
    fields += [pa.field("_source", pa.string()), pa.field("_row", pa.int64())]
    return pa.schema(fields)


def conform_raw(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the raw columns of ``table``, missing ones as nulls."""
    out = pd.DataFrame(index=frame.index)
    for column in RAW_COLUMNS[table]:
        if column in frame:
            values = frame[column]
            out[column] = values.where(values.isna(), values.astype(str)).astype(object)
        else:
            out[column] = None
    out["_source"] = frame["_source"].astype(str) if "_source" in frame else None
    out["_row"] = frame["_row"].astype("int64") if "_row" in frame else -1
    return out


class RawTableWriter:
    """Append chunks of one raw table to its parquet file."""

    def __init__(self, directory: Path, table: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.table = table
        self.path = directory / f"{table}.parquet"
        self.rows = 0
        self._writer = pq.ParquetWriter(self.path, raw_schema(table), compression="zstd")

    def write(self, frame: pd.DataFrame) -> None:
        conformed = conform_raw(self.table, frame)
        batch = pa.Table.from_pandas(conformed, schema=raw_schema(self.table), preserve_index=False)
        self._writer.write_table(batch)
        self.rows += len(conformed)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> RawTableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class RawDataset:
    """A directory holding ``customers``, ``products`` and ``events`` raw parquet files."""

    directory: Path

    def path(self, table: str) -> Path:
        return self.directory / f"{table}.parquet"

    def read(self, table: str) -> pd.DataFrame:
        """Read a whole raw table (customers and products fit in memory at every size)."""
        return pq.read_table(self.path(table)).to_pandas()

    def iter_chunks(self, table: str, rows: int) -> Iterator[pd.DataFrame]:
        """Stream a raw table in chunks of about ``rows`` rows."""
        parquet = pq.ParquetFile(self.path(table))
        for batch in parquet.iter_batches(batch_size=rows):
            yield batch.to_pandas()

    def count(self, table: str) -> int:
        return int(pq.ParquetFile(self.path(table)).metadata.num_rows)

    def write_meta(self, meta: dict[str, Any]) -> None:
        (self.directory / "source.json").write_text(json.dumps(meta, indent=2, default=str))

    def meta(self) -> dict[str, Any]:
        path = self.directory / "source.json"
        return json.loads(path.read_text()) if path.exists() else {}
