"""``make features``: apply the Feast definitions and load the newest features online.

Views whose offline source does not exist yet (segments before ``make segments``,
embeddings before ``make train``) are registered but not materialised, and the summary
says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from segrec.feature_store import load_definitions, open_store
from segrec.settings import Settings

ONLINE_CHUNK_ROWS = 50_000


@dataclass
class Materialised:
    applied: list[str] = field(default_factory=list)
    materialised: dict[str, int] = field(default_factory=dict)  # view -> entities written
    skipped: dict[str, str] = field(default_factory=dict)  # view -> why
    snapshot: pd.Timestamp | None = None  # the as-of time that was loaded
    seconds: dict[str, float] = field(default_factory=dict)


def _source_path(view: object) -> Path | None:
    source = getattr(view, "batch_source", None)
    path = getattr(source, "path", None)
    return Path(path) if path else None


def _write_newest_snapshot(
    store: Any, view: Any, path: Path, chunk_rows: int
) -> tuple[int, pd.Timestamp]:
    """Write the newest snapshot of ``view``'s source to the online store in chunks.

    Equivalent to ``store.materialize`` over the newest snapshot, but bounded in memory:
    Feast's materialize holds the whole window as Python protos (over 11 GB for a million
    customers), while chunks of ``chunk_rows`` stay small.
    """
    join_key = view.entity_columns[0].name
    stamps = pq.read_table(path, columns=["event_timestamp"]).column(0)
    newest = pc.max(stamps).as_py()
    columns = [join_key, *(f.name for f in view.features), "event_timestamp"]
    table = pq.read_table(path, columns=columns, filters=[("event_timestamp", "==", newest)])
    progress = tqdm(total=table.num_rows, desc=f"online: {view.name}", unit="row", disable=None)
    for batch in table.to_batches(max_chunksize=chunk_rows):
        store.write_to_online_store(view.name, batch.to_pandas())
        progress.update(batch.num_rows)
    progress.close()
    return table.num_rows, pd.Timestamp(newest)


def apply_definitions(settings: Settings) -> tuple[Any, dict[str, Any]]:
    """``feast apply`` of every definition; returns the store and the objects by name."""
    store = open_store(settings)
    objects = load_definitions(settings)
    store.apply(list(objects.values()))
    return store, objects


def load_view_online(
    settings: Settings, view_name: str, chunk_rows: int = ONLINE_CHUNK_ROWS
) -> int:
    """Apply the definitions, then write the newest snapshot of one view online."""
    store, objects = apply_definitions(settings)
    view = objects[view_name]
    path = _source_path(view)
    if path is None or not path.exists():
        raise FileNotFoundError(f"feature view {view_name} has no offline data at {path}")
    written, _ = _write_newest_snapshot(store, view, path, chunk_rows)
    return written


def apply_and_materialise(settings: Settings, chunk_rows: int = ONLINE_CHUNK_ROWS) -> Materialised:
    """Register every definition, then load the newest snapshot of each view online."""
    from feast import FeatureView, PushSource

    result = Materialised()
    started = time.perf_counter()
    store, objects = apply_definitions(settings)
    result.applied = sorted(objects)
    result.seconds["apply"] = round(time.perf_counter() - started, 2)

    views = [o for o in objects.values() if isinstance(o, FeatureView)]
    started = time.perf_counter()
    for view in views:
        if isinstance(view.stream_source, PushSource):
            result.skipped[view.name] = "live: filled by pushes from POST /events"
            continue
        path = _source_path(view)
        if path is None or not path.exists():
            result.skipped[view.name] = f"no offline data yet ({path})"
            continue
        absent = sorted({f.name for f in view.features} - set(pq.read_schema(path).names))
        if absent:
            # Written by an older version of the step that fills it (make train for the
            # embeddings): serving would read nulls as values, so leave it to that step.
            filled_by = view.tags.get("filled_by", "the step that writes it")
            result.skipped[view.name] = f"{path.name} lacks {', '.join(absent)}: rerun {filled_by}"
            continue
        written, newest = _write_newest_snapshot(store, view, path, chunk_rows)
        result.materialised[view.name] = written
        result.snapshot = newest if result.snapshot is None else max(result.snapshot, newest)
    result.seconds["materialise"] = round(time.perf_counter() - started, 2)
    return result
