"""Ingest the live event log (written by serving) into the clean events table.

Every line of every file under ``Settings.event_log_dir`` is read on each run, checked
and either appended to ``data/clean/events.parquet`` or set aside in
``data/set_aside/live_events.parquet`` with its reason, file and line. Nothing is lost
and nothing is counted twice:

- **Idempotent.** An event whose ``event_id`` is already in the clean table is skipped
  and counted as a duplicate, so re-running adds nothing; an id logged twice (a retried
  request, accepted by two pods) is ingested once, the first received.
- **Re-cleaning is safe.** ``segrec data`` rebuilds events from the raw export, then
  ingests the log again, which is the durable source of the live events.
- **Bad lines are set aside, never dropped:** unparseable or incomplete lines, unknown
  products or event types, customer ids that are not pseudonyms, ratings without a
  value, quantities below 1, and so on. The set-aside file is rewritten on each run from
  the whole log, so it always shows the log's current bad lines once (an incomplete last
  line of a file still being written disappears once it is complete).
- **Unknown customers are kept** (and counted as ``unknown_customer``): a customer who
  signed up since the last data build has live events but no row in ``customers`` yet.
  Training tolerates that: ``Interactions.from_events`` takes its customer vocabulary
  from the events, features are computed for rows of ``customers`` only (so these
  customers have no features or segment until the next data build, and blend as cold
  start or global), and serving personalises only customers with a profile and consent.
  Their events still teach the item side (popularity, co-occurrence, item factors).
- Customer ids of records that deduplication merged into another are re-pointed at the
  survivor through ``customer_id_map.parquet``, as the batch cleaning does.
- A purchase without a value gets quantity x price (the clean table's value of a
  purchase is its revenue); live rows are never outlier-flagged (see ``_clean_rows``).
- In set-aside rows a customer id that is a pseudonym is kept as ``customer_pseudonym``
  (linkable, as in the clean tables); anything else might be a raw identifier and is
  hashed by the ledger like every ``customer_id``.
- The log is only read, never changed: archiving files older than ``ingested_through``
  is an operations decision.

Appending rewrites ``events.parquet`` atomically (a temporary file in the same directory,
then ``os.replace``), copying the existing row groups as they are and validating the new
rows with the events schema; then ``manifest.json`` gets the new row count, checksum and
data version (computed as the cleaning pipeline does, so it changes exactly when rows were
added) and a ``live_events`` record of the run. One ingest runs at a time (``train`` and
``data`` are single jobs); serving may keep appending meanwhile.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segrec.event_log import FIELDS, LogLine, log_files, read_event_log
from segrec.settings import Settings
from training.data.pipeline import _file_sha256
from training.data.quality import QualityReport
from training.data.schema import CUSTOMER_ID_PATTERN, EVENT_TYPES, SCHEMAS, validate
from training.data.tables import table_path

TABLE = "live_events"  # the set-aside file and the quality report's table name
MAX_TEXT_CHARS = 300  # of an unparseable line kept in its set-aside record
_PSEUDONYM = re.compile(CUSTOMER_ID_PATTERN)


@dataclass(frozen=True)
class IngestSummary:
    """What one ingest did; ``line()`` is the one-line summary the CLI prints."""

    files: int
    lines: int
    ingested: int
    duplicates: int  # already in the clean table, or logged more than once
    set_aside: int
    unknown_customer: int  # ingested events of customers not (yet) in customers.parquet
    merged_customer: int  # ingested events re-pointed at the record they were merged into
    reasons: dict[str, int] = field(default_factory=dict)  # set-aside reason -> lines
    ingested_through: str | None = None  # newest received_at of the lines now in the table
    rows: int = 0  # events in the clean table after the ingest
    data_version: str = ""
    previous_data_version: str = ""
    set_aside_path: Path | None = None

    def line(self) -> str:
        """E.g. ``ingested 12 live events (3 duplicates, 1 set aside) from 2 log files``."""
        files = f"{self.files:,} log file{'' if self.files == 1 else 's'}"
        text = (
            f"ingested {self.ingested:,} live events ({self.duplicates:,} duplicates, "
            f"{self.set_aside:,} set aside) from {files}"
        )
        if self.unknown_customer:
            text += f"; {self.unknown_customer:,} of customers not in customers.parquet yet"
        if self.set_aside_path is not None:
            text += f"; set aside -> {self.set_aside_path}"
        if self.data_version != self.previous_data_version:
            text += f"; data version {self.previous_data_version} -> {self.data_version}"
        return text


@dataclass(frozen=True)
class _Rejected:
    line: LogLine
    reason: str
    detail: str | None


def ingest_event_log(settings: Settings, *, report: QualityReport | None = None) -> IngestSummary:
    """Append the event log's new, valid lines to the clean events table.

    Parameters
    ----------
    settings : Settings
        ``event_log_dir`` is read; ``clean_dir`` (which must hold a data build) and
        ``set_aside_dir`` are written.
    report : QualityReport, optional
        The ledger to record the ``live_events`` table in (set-aside lines, counts); the
        caller closes and writes it, and its ``data_version`` is updated when rows are
        added. By default a private one, whose set-aside file replaces
        ``set_aside/live_events.parquet`` when the ingest succeeds.

    Raises
    ------
    FileNotFoundError
        No clean data (run ``segrec data`` first).
    SchemaViolation
        The new rows break the events schema (nothing is written).
    """
    clean_dir = settings.clean_dir
    manifest_path = clean_dir / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"no clean data in {clean_dir}: run `make data` first")
    manifest = json.loads(manifest_path.read_text())
    staging = settings.set_aside_dir / f".{TABLE}"
    ledger = report or QualityReport(staging, settings.pseudonymisation_secret.get_secret_value())
    try:
        summary = _ingest(settings, manifest, ledger)
    except BaseException:
        if report is None:
            ledger.close()
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if report is not None:
        return summary
    ledger.close()
    published = _publish_set_aside(staging, settings.set_aside_dir)
    return replace(summary, set_aside_path=published)


def _ingest(settings: Settings, manifest: dict[str, Any], ledger: QualityReport) -> IngestSummary:
    clean_dir = settings.clean_dir
    events_path = table_path(clean_dir, "events")
    products = set(_column(table_path(clean_dir, "products"), "product_id"))
    customers = set(_column(table_path(clean_dir, "customers"), "customer_id"))
    merged_into = _read_id_map(clean_dir / "customer_id_map.parquet")

    files = log_files(settings.event_log_dir)
    accepted: list[dict[str, Any]] = []
    rejected: list[_Rejected] = []
    lines = 0
    for log_line in read_event_log(settings.event_log_dir):
        lines += 1
        row = _check(log_line, products)
        if isinstance(row, _Rejected):
            rejected.append(row)
        else:
            accepted.append(row)

    candidates = _rows_frame(accepted)
    # The first received wins when an id was logged more than once (a retried request).
    candidates = candidates.sort_values(["_received_at", "_source", "_row"], kind="stable")
    unique = candidates.drop_duplicates("event_id", keep="first")
    repeated_in_log = len(candidates) - len(unique)
    present = _ids_already_in(events_path, unique["event_id"], settings.chunk_rows)
    new = unique[~unique["event_id"].isin(present)].copy()

    survivor = new["customer_id"].map(merged_into)
    merged = survivor.notna() & (survivor != new["customer_id"])
    new["customer_id"] = survivor.fillna(new["customer_id"])
    unknown_customer = int((~new["customer_id"].isin(customers)).sum())

    rows_before = pq.ParquetFile(events_path).metadata.num_rows
    previous_version = str(manifest.get("data_version", ""))
    # A manifest whose row count disagrees with the file (an ingest interrupted between
    # the two writes) is brought up to date even when nothing new arrives.
    stale = manifest.get("rows", {}).get("events") != rows_before
    if len(new):
        _append_events(events_path, _clean_rows(new), settings.chunk_rows)
    rows = rows_before + len(new)

    duplicates = repeated_in_log + len(present)
    reasons = _set_aside(ledger, rejected)
    quality = ledger.table(TABLE)
    quality.rows_in += lines
    quality.rows_out += len(new)
    quality.notes.update(
        {
            "log_files": len(files),
            "duplicates_not_ingested_again": duplicates,
            "unknown_customer_kept": unknown_customer,
        }
    )
    through = candidates["_received_at"].max() if len(candidates) else None
    ingested_through = None if through is None else through.isoformat()
    record: dict[str, Any] = {
        "log_dir": str(settings.event_log_dir),
        "files": len(files),
        "lines": lines,
        "ingested": len(new),
        "duplicates": duplicates,
        "set_aside": len(rejected),
        "unknown_customer": unknown_customer,
        # Distinct logged events now in the table, whichever run ingested them.
        "in_table": len(unique),
        "ingested_through": ingested_through,
    }
    data_version = _update_manifest(
        clean_dir, manifest, record, rows, rehash=bool(len(new)) or stale
    )
    if data_version != previous_version and "data_version" in ledger.meta:
        ledger.meta["data_version"] = data_version
    return IngestSummary(
        files=len(files),
        lines=lines,
        ingested=len(new),
        duplicates=duplicates,
        set_aside=len(rejected),
        unknown_customer=unknown_customer,
        merged_customer=int(merged.sum()),
        reasons=reasons,
        ingested_through=ingested_through,
        rows=rows,
        data_version=data_version,
        previous_data_version=previous_version,
        set_aside_path=ledger.set_aside_dir / f"{TABLE}.parquet" if rejected else None,
    )


def _check(log_line: LogLine, products: set[str]) -> dict[str, Any] | _Rejected:
    """The clean row of one log line, or why it is set aside (the first problem found,
    in the order the batch cleaning checks)."""
    record = log_line.record
    if record is None:
        return _Rejected(log_line, "unparseable_line", log_line.error)

    def reject(reason: str, detail: object = None) -> _Rejected:
        return _Rejected(log_line, reason, None if detail is None else str(detail))

    event_id = record.get("event_id")
    if not isinstance(event_id, str) or not event_id.strip():
        return reject("missing_event_id", repr(event_id))
    customer_id = record.get("customer_id")
    if not isinstance(customer_id, str) or not _PSEUDONYM.match(customer_id):
        # The value is not repeated here: it may be a raw identifier (the record column
        # of the set-aside row stores it hashed).
        return reject("invalid_customer_id", f"does not match {CUSTOMER_ID_PATTERN}")
    product_id = record.get("product_id")
    if not isinstance(product_id, str) or not product_id:
        return reject("missing_product_id", repr(product_id))
    kind = record.get("type")
    if kind not in EVENT_TYPES:
        return reject("unknown_event_type", repr(kind))
    ts = _utc_time(record.get("ts"))
    if ts is None:
        return reject("unparseable_timestamp", repr(record.get("ts")))
    quantity = record.get("quantity")
    if quantity is None:
        quantity = 1  # as the batch cleaning does with a missing quantity
    if not _is_number(quantity) or quantity < 1 or quantity % 1:
        return reject("invalid_quantity", repr(quantity))
    price = record.get("price")
    if price is not None and (not _is_number(price) or price < 0):
        return reject("invalid_price", repr(price))
    value = record.get("value")
    if value is not None and not _is_number(value):
        return reject("unparseable_value", repr(value))
    if kind == "rating" and value is None:
        return reject("rating_without_value")
    if kind == "purchase" and value is None and price is not None:
        # In the clean table a purchase's value is its revenue (monetary features sum it);
        # serving's LiveEvent carries a value for ratings only.
        value = quantity * price
    if product_id not in products:
        return reject("unknown_product", product_id)
    session_id = record.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        return reject("invalid_session_id", repr(session_id))
    received_at = _utc_time(record.get("received_at"))
    if received_at is None:
        return reject("unparseable_received_at", repr(record.get("received_at")))
    return {
        "event_id": event_id.strip(),
        "customer_id": customer_id,
        "product_id": product_id,
        "ts": ts,
        "type": kind,
        "quantity": int(quantity),
        "price": None if price is None else float(price),
        "value": None if value is None else float(value),
        "session_id": session_id or None,
        "_received_at": received_at,
        "_source": str(log_line.path),
        "_row": log_line.line,
    }


def _is_number(value: object) -> bool:
    # bool is an int in Python but never a quantity or a price in JSON.
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _utc_time(value: object) -> pd.Timestamp | None:
    """An ISO 8601 time with a zone, in UTC; None when missing, unparseable or naive."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return pd.Timestamp(parsed).tz_convert("UTC")


def _rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = [*SCHEMAS["events"].columns, "_received_at", "_source", "_row"]
    columns = [c for c in columns if c not in ("price_outlier", "quantity_outlier")]
    return pd.DataFrame(rows, columns=columns)


def _clean_rows(new: pd.DataFrame) -> pd.DataFrame:
    """Rows in the clean events schema, in time order (the cleaning writer keeps source
    order and every reader sorts by itself; time order keeps appended runs tidy)."""
    frame = new.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[ns, UTC]")
    frame["quantity"] = frame["quantity"].astype("int64")
    frame["price"] = frame["price"].astype(float)
    frame["value"] = frame["value"].astype(float)
    frame["session_id"] = frame["session_id"].astype(object)
    # Outlier fences belong to the batch cleaning, fitted over the whole history; judging
    # a few live rows against them here would be a second, partial outlier policy. An
    # unflagged row counts as ordinary, which is what a validated live event is.
    frame["price_outlier"] = False
    frame["quantity_outlier"] = False
    return frame[list(SCHEMAS["events"].columns)]


def _column(path: Path, column: str) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"no clean table at {path}: run `make data` first")
    return [str(v) for v in pq.read_table(path, columns=[column]).column(0).to_pylist()]


def _read_id_map(path: Path) -> Mapping[str, str]:
    """Source customer pseudonym -> the clean id it was merged into (empty if absent)."""
    if not path.exists():
        return {}
    frame = pq.read_table(path, columns=["source_customer_id", "customer_id"]).to_pandas()
    return dict(zip(frame["source_customer_id"], frame["customer_id"], strict=True))


def _ids_already_in(path: Path, ids: Iterable[str], chunk_rows: int) -> set[str]:
    """Which of ``ids`` the events file holds, streaming its event_id column only."""
    wanted = pa.array(list(ids), type=pa.string())
    if not len(wanted):
        return set()
    found: set[str] = set()
    for batch in pq.ParquetFile(path).iter_batches(columns=["event_id"], batch_size=chunk_rows):
        column = batch.column(0)
        found.update(column.filter(pc.is_in(column, value_set=wanted)).to_pylist())
    return found


def _append_events(path: Path, new: pd.DataFrame, chunk_rows: int) -> None:
    """Existing rows (validated when written) copied as they are, then ``new``
    (validated now), into a temporary file that atomically replaces ``path``."""
    new = validate("events", new, where="live events from the event log")
    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
            for batch in source.iter_batches(batch_size=chunk_rows):
                writer.write_batch(batch)
            writer.write_table(pa.Table.from_pandas(new, schema=schema, preserve_index=False))
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _update_manifest(
    clean_dir: Path, manifest: dict[str, Any], record: dict[str, Any], rows: int, *, rehash: bool
) -> str:
    """Write the manifest with ``record``; when ``rehash``, with the events file's new row
    count, checksum and data version. Returns the data version."""
    if rehash:
        hashes = dict(manifest.get("sha256", {}))
        hashes["events"] = _file_sha256(table_path(clean_dir, "events"))
        # The cleaning pipeline's formula: the version is a hash of the tables' checksums.
        manifest["data_version"] = hashlib.sha256(
            json.dumps(hashes, sort_keys=True).encode()
        ).hexdigest()[:12]
        manifest["sha256"] = hashes
        manifest.setdefault("rows", {})["events"] = rows
    manifest["live_events"] = record
    path = clean_dir / "manifest.json"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    _fsync(temporary)
    os.replace(temporary, path)
    return str(manifest.get("data_version", ""))


def _set_aside(ledger: QualityReport, rejected: list[_Rejected]) -> dict[str, int]:
    """Record the rejected lines in the ledger, grouped by reason; reason -> count."""
    if not rejected:
        return {}
    frame = pd.DataFrame([_set_aside_values(r) for r in rejected])
    for reason, rows in frame.groupby("_reason", sort=True):
        ledger.set_aside(
            TABLE,
            rows.drop(columns=["_reason", "_detail"]).dropna(axis=1, how="all"),
            str(reason),
            frame["_detail"],
        )
    return dict(sorted(Counter(r.reason for r in rejected).items()))


def _set_aside_values(rejected: _Rejected) -> dict[str, Any]:
    values: dict[str, Any] = {
        "_source": str(rejected.line.path),
        "_row": rejected.line.line,
        "_reason": rejected.reason,
        "_detail": rejected.detail,
    }
    record = rejected.line.record
    if record is None:
        values["line"] = rejected.line.text[:MAX_TEXT_CHARS]
        return values
    # Known fields only: the set-aside schema is fixed, and extra keys are not ours to keep.
    values.update({k: record[k] for k in FIELDS if k in record})
    customer_id = values.get("customer_id")
    if isinstance(customer_id, str) and _PSEUDONYM.match(customer_id):
        # Already a pseudonym, as in the clean tables: kept as is so the row can be linked
        # to the customer. Anything else may be a raw id, and the ledger hashes
        # ``customer_id``.
        values["customer_pseudonym"] = values.pop("customer_id")
    return values


def _publish_set_aside(staging: Path, set_aside_dir: Path) -> Path | None:
    """Move the private ledger's set-aside file into place (or remove a stale one)."""
    staged = staging / f"{TABLE}.parquet"
    target = set_aside_dir / f"{TABLE}.parquet"
    try:
        if staged.exists():
            os.replace(staged, target)
            return target
        target.unlink(missing_ok=True)
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync(path: Path) -> None:
    # The rename is only as durable as the bytes behind it.
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
