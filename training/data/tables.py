"""Read and write the clean canonical tables, validating on both sides.

``customers`` and ``products`` are single parquet files; ``events`` is one parquet file
written and read in row groups so the largest data sets stream with bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.data.schema import SCHEMAS, validate


def table_path(directory: Path, table: str) -> Path:
    return directory / f"{table}.parquet"


def _arrow_schema(table: str) -> pa.Schema:
    """Arrow schema of a clean table, derived from the pandera schema's column order."""
    types = {
        "customers": {
            "signup_ts": pa.timestamp("ns", tz="UTC"),
            "birth_year": pa.int64(),
            "consent_personalisation": pa.bool_(),
            "consent_marketing": pa.bool_(),
            "merged_records": pa.int64(),
        },
        "products": {
            "price": pa.float64(),
            "price_outlier": pa.bool_(),
            "in_stock": pa.bool_(),
            "launch_ts": pa.timestamp("ns", tz="UTC"),
        },
        "events": {
            "ts": pa.timestamp("ns", tz="UTC"),
            "quantity": pa.int64(),
            "price": pa.float64(),
            "value": pa.float64(),
            "price_outlier": pa.bool_(),
            "quantity_outlier": pa.bool_(),
        },
    }[table]
    return pa.schema([(c, types.get(c, pa.string())) for c in SCHEMAS[table].columns])


def write_table(directory: Path, table: str, frame: pd.DataFrame) -> Path:
    """Validate and write a whole clean table; returns the file written."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = validate(table, frame, where="on write")
    path = table_path(directory, table)
    arrow = pa.Table.from_pandas(frame, schema=_arrow_schema(table), preserve_index=False)
    pq.write_table(arrow, path, compression="zstd")
    return path


def read_table(directory: Path, table: str) -> pd.DataFrame:
    """Read and validate a whole clean table."""
    path = table_path(directory, table)
    if not path.exists():
        raise FileNotFoundError(f"no clean '{table}' table at {path}: run `make data` first")
    return validate(table, pq.read_table(path).to_pandas(), where=f"on read of {path}")


def iter_table(directory: Path, table: str, rows: int) -> Iterator[pd.DataFrame]:
    """Stream and validate a clean table in chunks of about ``rows`` rows."""
    path = table_path(directory, table)
    parquet = pq.ParquetFile(path)
    offset = 0
    for batch in parquet.iter_batches(batch_size=rows):
        chunk = batch.to_pandas()
        chunk.index = pd.RangeIndex(offset, offset + len(chunk))
        offset += len(chunk)
        yield validate(table, chunk, where=f"on read of {path}")


class TableWriter:
    """Validate and append chunks of a clean table (used for events)."""

    def __init__(self, directory: Path, table: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.table = table
        self.path = table_path(directory, table)
        self.rows = 0
        self._schema = _arrow_schema(table)
        self._writer = pq.ParquetWriter(self.path, self._schema, compression="zstd")

    def write(self, frame: pd.DataFrame) -> None:
        frame = validate(self.table, frame, where=f"on write, rows {self.rows}+")
        self._writer.write_table(
            pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        )
        self.rows += len(frame)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
