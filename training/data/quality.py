"""The data-quality ledger: every fix counted, every set-aside row stored with its reason.

Nothing is silently dropped: a row that cannot go forward is written to
``<data_dir>/set_aside/<table>.parquet`` with the reason, the source file and row, and
the row's values (direct identifiers replaced by their keyed hash), and counted here.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segrec.pseudonym import pseudonymise_many
from training.data.raw import PII_COLUMNS

SET_ASIDE_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("source", pa.string()),
        ("row", pa.int64()),
        ("record", pa.string()),
    ]
)


@dataclass
class TableQuality:
    """What happened to one table: counts of rows, fixes, set-asides, imputations, flags."""

    rows_in: int = 0
    rows_out: int = 0
    fixes: Counter[str] = field(default_factory=Counter)
    set_aside: Counter[str] = field(default_factory=Counter)
    imputed: dict[str, dict[str, Any]] = field(default_factory=dict)
    outliers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def fix(self, kind: str, count: int) -> None:
        """Count ``count`` values changed by a fix of ``kind`` (zero counts are kept out)."""
        if count:
            self.fixes[kind] += int(count)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_set_aside": sum(self.set_aside.values()),
            "fixes": dict(sorted(self.fixes.items())),
            "set_aside": dict(sorted(self.set_aside.items())),
            "imputed": self.imputed,
            "outliers": self.outliers,
            **({"notes": self.notes} if self.notes else {}),
        }


class QualityReport:
    """Collects :class:`TableQuality` per table and owns the set-aside files."""

    def __init__(self, set_aside_dir: Path, secret: str) -> None:
        self.set_aside_dir = set_aside_dir
        self._secret = secret
        self.tables: dict[str, TableQuality] = {}
        self.meta: dict[str, Any] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._started = time.perf_counter()
        self._stage = ""
        set_aside_dir.mkdir(parents=True, exist_ok=True)
        for stale in set_aside_dir.glob("*.parquet"):
            stale.unlink()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Within this block, table ``t`` is recorded as ``<name>.t`` (e.g. ``import.events``)
        so each stage's rows in = rows out + rows set aside on its own."""
        previous, self._stage = self._stage, f"{name}."
        try:
            yield
        finally:
            self._stage = previous

    def table(self, name: str) -> TableQuality:
        return self.tables.setdefault(self._stage + name, TableQuality())

    def set_aside(
        self, table: str, rows: pd.DataFrame, reason: str, detail: str | pd.Series | None = None
    ) -> None:
        """Store ``rows`` of ``table`` aside with ``reason`` and count them.

        ``detail`` is one text for all rows or a per-row series (e.g. the bad value).
        """
        if rows.empty:
            return
        self.table(table).set_aside[reason] += len(rows)
        table = self._stage + table
        values = rows.drop(columns=["_source", "_row"], errors="ignore").copy()
        if "customer_id" in values:
            # Link set-aside rows to the clean pseudonym without storing the raw id.
            ids = (
                values["customer_id"]
                .astype("string")
                .str.strip()
                .str.replace(r"\.0+$", "", regex=True)
            )
            values["customer_id"] = self._hash(ids, "customer")
        for column in PII_COLUMNS:
            if column in values:
                values[column] = self._hash(values[column].astype("string"), "redacted")
        # pandas writes JSON lines in C; json.dumps per row is ten times slower.
        records = values.to_json(
            orient="records", lines=True, date_format="iso", force_ascii=False
        ).splitlines()
        if isinstance(detail, pd.Series):
            aligned = detail.loc[rows.index]
            details = (
                aligned.astype(object)
                .where(aligned.notna(), None)
                .map(lambda d: None if d is None else str(d))
                .tolist()
            )
        else:
            details = [detail] * len(rows)
        batch = pa.table(
            {
                "reason": [reason] * len(rows),
                "detail": details,
                "source": rows["_source"].astype(str).tolist()
                if "_source" in rows
                else [None] * len(rows),
                "row": rows["_row"].astype("int64").tolist()
                if "_row" in rows
                else [-1] * len(rows),
                "record": records,
            },
            schema=SET_ASIDE_SCHEMA,
        )
        writer = self._writers.get(table)
        if writer is None:
            writer = self._writers[table] = pq.ParquetWriter(
                self.set_aside_dir / f"{table}.parquet", SET_ASIDE_SCHEMA
            )
        writer.write_table(batch)

    def _hash(self, values: pd.Series, kind: str) -> list[str | None]:
        present = values.notna()
        hashed = pseudonymise_many(values[present].tolist(), self._secret, kind=kind)
        out: list[str | None] = [None] * len(values)
        for position, value in zip(present.to_numpy().nonzero()[0], hashed, strict=True):
            out[position] = value
        return out

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.meta,
            "seconds": round(time.perf_counter() - self._started, 2),
            "set_aside_files": {
                name: str(self.set_aside_dir / f"{name}.parquet")
                for name, quality in self.tables.items()
                if quality.set_aside
            },
            "tables": {name: quality.as_dict() for name, quality in self.tables.items()},
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n")


def read_set_aside(set_aside_dir: Path, table: str) -> pd.DataFrame:
    """Read the rows set aside for ``table`` (empty frame when none were)."""
    path = set_aside_dir / f"{table}.parquet"
    if not path.exists():
        return SET_ASIDE_SCHEMA.empty_table().to_pandas()
    return pq.read_table(path).to_pandas()
