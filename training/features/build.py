"""Compute feature snapshots and write them as Feast's offline sources.

Snapshots are taken every ``feature_snapshot_days`` back from the data end, so a
training row stamped at time t joins (point in time) the newest snapshot at or before t.
The live sessions' offline copy (``customer_sessions.parquet``) is replayed from the event
log serving appends to (:mod:`training.features.sessions`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from segrec.consent import ConsentLedger
from segrec.settings import Settings
from training.features.customer import customer_features
from training.features.inputs import load_inputs
from training.features.product import product_features
from training.features.sessions import SESSION_FILE, SessionBuild, write_sessions

FEATURES_VERSION = "2"  # 2: missed_visits
CUSTOMER_FILE = "customer_features.parquet"
PRODUCT_FILE = "product_features.parquet"
LIST_COLUMNS = frozenset({"category_shares"})


@dataclass(frozen=True)
class FeatureBuild:
    directory: Path
    snapshots: list[pd.Timestamp]
    customer_rows: int
    product_rows: int
    seconds: float
    sessions: SessionBuild
    manifest: dict[str, Any]


def arrow_schema(frame: pd.DataFrame) -> pa.Schema:
    """A fixed schema from the pandas dtypes, so an all-missing text column in one snapshot
    (no ratings yet, say) is still a string column, as Feast's sources declare."""
    fields = []
    for column, dtype in frame.dtypes.items():
        if column == "event_timestamp":
            kind = pa.timestamp("ns", tz="UTC")
        elif pd.api.types.is_bool_dtype(dtype):
            kind = pa.bool_()
        elif pd.api.types.is_integer_dtype(dtype):
            kind = pa.int64()
        elif pd.api.types.is_float_dtype(dtype):
            kind = pa.float64()
        elif column in LIST_COLUMNS:
            kind = pa.list_(pa.float32())
        else:
            kind = pa.string()
        fields.append(pa.field(str(column), kind))
    return pa.schema(fields)


def snapshot_times(end: pd.Timestamp, count: int, every_days: int) -> list[pd.Timestamp]:
    """``count`` as-of times ending at ``end``, oldest first."""
    return [end - pd.Timedelta(days=every_days * k) for k in reversed(range(count))]


def build_features(settings: Settings, *, progress: bool | None = None) -> FeatureBuild:
    started = time.perf_counter()
    inputs = load_inputs(settings.clean_dir, ConsentLedger(settings.consent_file).latest())
    times = snapshot_times(inputs.end, settings.feature_snapshots, settings.feature_snapshot_days)
    out_dir = settings.features_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: dict[str, pq.ParquetWriter] = {}
    rows = {CUSTOMER_FILE: 0, PRODUCT_FILE: 0}
    try:
        for as_of in tqdm(
            times,
            desc="feature snapshots",
            unit="snapshot",
            disable=None if progress is None else not progress,
        ):
            for name, frame in (
                (CUSTOMER_FILE, customer_features(inputs, as_of)),
                (PRODUCT_FILE, product_features(inputs, as_of)),
            ):
                schema = arrow_schema(frame)
                table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
                if name not in writers:
                    writers[name] = pq.ParquetWriter(out_dir / name, schema, compression="zstd")
                writers[name].write_table(table)
                rows[name] += len(frame)
    finally:
        for writer in writers.values():
            writer.close()
    # The live sessions' offline copy, from the event log serving appends to.
    categories = dict(zip(inputs.products["product_id"], inputs.products["category"], strict=True))
    sessions = write_sessions(settings, categories)
    clean_manifest = json.loads((settings.clean_dir / "manifest.json").read_text())
    manifest = {
        "features_version": FEATURES_VERSION,
        "data_version": clean_manifest["data_version"],
        "snapshots": [t.isoformat() for t in times],
        "category_vocabulary": sorted(inputs.products["category"].unique().tolist()),
        "rows": {
            "customer_features": rows[CUSTOMER_FILE],
            "product_features": rows[PRODUCT_FILE],
            "customer_sessions": sessions.rows,
        },
        "sessions": {
            "file": SESSION_FILE,
            "log_batches": sessions.batches,
            "log_events": sessions.events,
            "bad_log_lines": sessions.bad_lines,
            "withheld_erased_events": sessions.withheld_events,
        },
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return FeatureBuild(
        directory=out_dir,
        snapshots=times,
        customer_rows=rows[CUSTOMER_FILE],
        product_rows=rows[PRODUCT_FILE],
        seconds=round(time.perf_counter() - started, 2),
        sessions=sessions,
        manifest=manifest,
    )
