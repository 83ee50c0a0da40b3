"""Import an export already in the canonical layout, and the conventions all importers share.

The input is a directory with ``events.csv`` or ``events.parquet`` and optionally
``customers.*`` and ``products.*``, with the canonical column names of
:data:`training.data.raw.RAW_COLUMNS` (``column_map`` renames others). Only
:data:`REQUIRED_COLUMNS` must be there; an optional column left out is null, e.g. the
products' ``launch_ts`` (when the product went on sale; missing -> the first event on
the product is used). Missing customers or products are derived from the events: one
row per distinct id, first seen at the event row that ``_row`` points to. The shared
conventions (float ids, assumed consent, first-seen ids) live here because they are part
of what "canonical" means for every source.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from segrec.settings import Settings
from training.data.importers.encoding import ImportFormatError, iter_csv_chunks, read_header
from training.data.quality import QualityReport, TableQuality
from training.data.raw import RAW_COLUMNS, TABLES, RawDataset, RawTableWriter

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id",),
    "products": ("product_id",),
    "events": ("customer_id", "product_id", "ts", "type"),
}
SUFFIXES = (".csv", ".parquet")
# Spreadsheets turn numeric ids into floats ("17850.0"); the id is the integer part.
_FLOAT_ID = r"^(-?\d+)\.0+$"
_CONSENT_VALUES = {"granted": "true", "denied": "false"}


def normalise_float_ids(ids: pd.Series, quality: TableQuality) -> pd.Series:
    """Turn ids written as floats (``17850.0``) into ``17850``; count ``float_id_normalised``."""
    # Arrow's regex kernel is ~10x faster than pandas' per-value ``str.replace``.
    values = pa.array(ids, type=pa.string(), from_pandas=True)
    fixed = pc.replace_substring_regex(values, _FLOAT_ID, r"\1")
    quality.fix("float_id_normalised", pc.sum(pc.not_equal(values, fixed)).as_py() or 0)
    return pd.Series(fixed.to_numpy(zero_copy_only=False), index=ids.index, name=ids.name)


def assume_consent(customers: pd.DataFrame, quality: TableQuality, settings: Settings) -> None:
    """Fill consent columns ``customers`` lacks, in place, and note the assumption.

    Personalisation consent takes ``settings.import_consent``. Marketing consent is never
    assumed ("false"): the setting speaks for personalisation only.
    """
    assumed = {
        "consent_personalisation": ("consent_assumed", _CONSENT_VALUES[settings.import_consent]),
        "consent_marketing": ("marketing_consent_assumed", "false"),
    }
    for column, (note, value) in assumed.items():
        if column not in customers:
            customers[column] = value
            # Called once per chunk, so the note accumulates.
            counted = quality.notes.setdefault(note, {"value": value, "customers": 0})
            counted["customers"] += len(customers)


class FirstSeen:
    """Distinct ids across chunks, each with the row where it first appeared."""

    def __init__(self, column: str) -> None:
        self.column = column
        self.rows: dict[str, tuple[str, int]] = {}

    def update(self, chunk: pd.DataFrame) -> None:
        firsts = chunk.dropna(subset=[self.column]).drop_duplicates(self.column)
        for key, source, row in zip(
            firsts[self.column], firsts["_source"], firsts["_row"], strict=True
        ):
            self.rows.setdefault(key, (source, int(row)))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                self.column: list(self.rows),
                "_source": [source for source, _ in self.rows.values()],
                "_row": [row for _, row in self.rows.values()],
            }
        )


def import_canonical(
    input_path: Path,
    out_dir: Path,
    report: QualityReport,
    settings: Settings,
    column_map: dict[str, str] | None = None,
) -> RawDataset:
    """Import a canonical-layout directory into a raw dataset at ``out_dir``.

    Raises
    ------
    ImportFormatError
        When the directory has no events file, a file is ambiguous or unreadable, a
        mapping targets an unknown column, or a required column is missing.
    """
    if not input_path.is_dir():
        raise ImportFormatError(
            f"{input_path}: the canonical format expects a directory holding events.csv or "
            "events.parquet (and optionally customers.* and products.*)"
        )
    renames = _check_map(column_map or {})
    files = {table: _find(input_path, table) for table in TABLES}
    events_path = files["events"]
    if events_path is None:
        raise ImportFormatError(f"{input_path}: no events.csv or events.parquet in the directory")
    columns = {
        table: _canonical_columns(path, table, renames)
        for table, path in files.items()
        if path is not None
    }
    for table, (_, ignored) in columns.items():
        if ignored:
            report.table(table).notes["ignored_columns"] = ignored

    dataset = RawDataset(out_dir)
    customers_seen, products_seen = FirstSeen("customer_id"), FirstSeen("product_id")
    events_quality = report.table("events")
    with RawTableWriter(out_dir, "events") as writer:
        chunks = _iter_table(events_path, report, "events", settings, columns["events"][0])
        for chunk in chunks:
            if "event_id" not in chunk:
                # Source name plus row is stable across re-imports of the same file.
                chunk["event_id"] = events_path.name + ":" + chunk["_row"].astype(str)
                events_quality.fix("event_id_generated", len(chunk))
            for column in ("customer_id", "product_id"):
                chunk[column] = normalise_float_ids(chunk[column], events_quality)
            if files["customers"] is None:
                customers_seen.update(chunk)
            if files["products"] is None:
                products_seen.update(chunk)
            writer.write(chunk)
    events_quality.notes["imported"] = {"source": events_path.name, "rows": writer.rows}

    for table, seen in (("customers", customers_seen), ("products", products_seen)):
        selected = columns[table][0] if table in columns else {}
        _write_side_table(table, files[table], seen, out_dir, report, settings, selected)
    dataset.write_meta(
        {
            "format": "canonical",
            "dayfirst": settings.dayfirst,
            "files": {table: path.name for table, path in files.items() if path is not None},
            "derived": [table for table, path in files.items() if path is None],
        }
    )
    return dataset


def _check_map(column_map: dict[str, str]) -> dict[str, str]:
    known = {column for columns in RAW_COLUMNS.values() for column in columns}
    unknown = sorted(target for target in column_map.values() if target not in known)
    if unknown:
        raise ImportFormatError(
            f"column mapping targets {unknown} are not canonical column names; "
            f"use one of {sorted(known)}"
        )
    return {source.strip(): target for source, target in column_map.items()}


def _find(directory: Path, table: str) -> Path | None:
    found = [directory / f"{table}{suffix}" for suffix in SUFFIXES]
    found = [path for path in found if path.is_file()]
    if len(found) > 1:
        raise ImportFormatError(
            f"{directory}: both {found[0].name} and {found[1].name} exist; keep only one"
        )
    return found[0] if found else None


def _source_columns(path: Path) -> list[str]:
    if path.suffix == ".csv":
        return read_header(path)
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as error:
        raise ImportFormatError(f"{path}: cannot read as parquet: {error}") from None


def _canonical_columns(
    path: Path, table: str, renames: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Source column -> canonical name for the columns read, and the source columns ignored."""
    found = _source_columns(path)
    renamed = [renames.get(column, column) for column in found]
    clashes = sorted({column for column in renamed if renamed.count(column) > 1})
    if clashes:
        raise ImportFormatError(
            f"{path}: more than one column would be named {clashes} after mapping; "
            f"columns found: {found}"
        )
    missing = [column for column in REQUIRED_COLUMNS[table] if column not in renamed]
    if missing:
        raise ImportFormatError(
            f"{path}: missing required column(s) {missing} for {table}; columns found: "
            f"{found}. Map source columns to canonical names with the mapping option "
            "--map source=canonical (e.g. --map user=customer_id)."
        )
    pairs = list(zip(found, renamed, strict=True))
    selected = {source: column for source, column in pairs if column in RAW_COLUMNS[table]}
    return selected, [source for source in found if source not in selected]


def _iter_table(
    path: Path, report: QualityReport, table: str, settings: Settings, selected: dict[str, str]
) -> Iterator[pd.DataFrame]:
    """Chunks of one canonical file: the ``selected`` columns renamed, values as strings."""
    if path.suffix == ".csv":
        chunks = iter_csv_chunks(path, report, table, settings.chunk_rows)
    else:
        chunks = _iter_parquet(path, settings.chunk_rows, list(selected))
    for chunk in chunks:
        chunk = chunk.rename(columns=selected)
        yield chunk[[*selected.values(), "_source", "_row"]].copy()


def _iter_parquet(path: Path, chunk_rows: int, columns: list[str]) -> Iterator[pd.DataFrame]:
    """Stream ``columns`` of a parquet file as string chunks; ``_row`` is the 1-based row."""
    try:
        parquet = pq.ParquetFile(path)
        batches = parquet.iter_batches(batch_size=chunk_rows, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise ImportFormatError(f"{path}: cannot read as parquet: {error}") from None
    start = 0
    total = parquet.metadata.num_rows
    with tqdm(total=total, unit="rows", desc=path.name, disable=None) as progress:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as error:
                raise ImportFormatError(f"{path}: cannot read as parquet: {error}") from None
            chunk = batch.to_pandas()
            # Raw values are strings; typed parquet values keep their text form.
            for column in chunk.columns:
                values = chunk[column]
                chunk[column] = values.astype(str).where(values.notna(), None)
            chunk.index = pd.RangeIndex(start, start + len(chunk))
            chunk["_source"] = path.name
            chunk["_row"] = chunk.index + 1
            start += len(chunk)
            progress.update(len(chunk))
            yield chunk


def _write_side_table(
    table: str,
    path: Path | None,
    seen: FirstSeen,
    out_dir: Path,
    report: QualityReport,
    settings: Settings,
    selected: dict[str, str],
) -> None:
    """Write customers or products from their file, or derive them from the events."""
    quality = report.table(table)
    if path is None:
        frame = seen.frame()
        if table == "products":
            frame["title"] = frame["product_id"]
        quality.notes["derived_from_events"] = len(frame)
        chunks: Iterator[pd.DataFrame] = iter([frame])
    else:
        chunks = _iter_table(path, report, table, settings, selected)
    with RawTableWriter(out_dir, table) as writer:
        for chunk in chunks:
            id_column = REQUIRED_COLUMNS[table][0]
            chunk[id_column] = normalise_float_ids(chunk[id_column], quality)
            if table == "customers":
                assume_consent(chunk, quality, settings)
            writer.write(chunk)
