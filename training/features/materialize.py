"""``make features``: apply the Feast definitions and materialise the newest features online.

Views whose offline source does not exist yet (segments before ``make segments``,
embeddings before ``make train``) are registered but not materialised, and the summary
says so.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from segrec.feature_store import load_definitions, open_store
from segrec.settings import Settings


@dataclass
class Materialised:
    applied: list[str] = field(default_factory=list)
    materialised: dict[str, int] = field(default_factory=dict)  # view -> entities written
    skipped: dict[str, str] = field(default_factory=dict)  # view -> why
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def _source_path(view: object) -> Path | None:
    source = getattr(view, "batch_source", None)
    path = getattr(source, "path", None)
    return Path(path) if path else None


def apply_and_materialise(settings: Settings) -> Materialised:
    """Register every definition, then load the newest snapshot of each view online."""
    from feast import FeatureView, PushSource

    result = Materialised()
    started = time.perf_counter()
    store = open_store(settings)
    objects = load_definitions(settings)
    store.apply(list(objects.values()))
    result.applied = sorted(objects)
    result.seconds["apply"] = round(time.perf_counter() - started, 2)

    views = [o for o in objects.values() if isinstance(o, FeatureView)]
    ready: list[str] = []
    newest: pd.Timestamp | None = None
    oldest: pd.Timestamp | None = None
    for view in views:
        if isinstance(view.stream_source, PushSource):
            result.skipped[view.name] = "live: filled by pushes from POST /events"
            continue
        path = _source_path(view)
        if path is None or not path.exists():
            result.skipped[view.name] = f"no offline data yet ({path})"
            continue
        stamps = pq.read_table(path, columns=["event_timestamp", view.entity_columns[0].name])
        frame = stamps.to_pandas()
        result.materialised[view.name] = int(frame.iloc[:, 1].nunique())
        low, high = frame["event_timestamp"].min(), frame["event_timestamp"].max()
        oldest = low if oldest is None else min(oldest, low)
        newest = high if newest is None else max(newest, high)
        ready.append(view.name)
    if ready and oldest is not None and newest is not None:
        # Feast writes the latest row per entity inside the window: the newest snapshot.
        window = (oldest - pd.Timedelta(seconds=1), newest + pd.Timedelta(seconds=1))
        started = time.perf_counter()
        # Feast prints coloured progress unconditionally; our summary says the same plainly.
        with contextlib.redirect_stdout(io.StringIO()):
            store.materialize(
                start_date=window[0].to_pydatetime(),
                end_date=window[1].to_pydatetime(),
                feature_views=ready,
            )
        result.seconds["materialise"] = round(time.perf_counter() - started, 2)
        result.window = window
    return result
