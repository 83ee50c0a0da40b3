"""Segment versions: numbering, matching centroids across versions, and transitions.

Each run writes ``<segments_dir>/<version>/`` and points ``current.json`` at it. A new
segment keeps the id and name of a previous one when their centres are matched one to
one (Hungarian assignment on distances) and lie within ``match_distance`` of each other
in the new version's scaled space (1.0 = one standard deviation along one feature); any
other segment gets a fresh id, never reused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from segrec.segment_model import SegmentModel

CURRENT_FILE = "current.json"
VERSION_PREFIX = "seg-"


def current_version(segments_dir: Path) -> str | None:
    pointer = segments_dir / CURRENT_FILE
    if not pointer.exists():
        return None
    return str(json.loads(pointer.read_text())["version"])


def load_current(segments_dir: Path) -> SegmentModel | None:
    version = current_version(segments_dir)
    return None if version is None else SegmentModel.load(segments_dir / version)


def next_version(segments_dir: Path) -> str:
    """``seg-001``, ``seg-002``, ...: one more than the highest version on disk."""
    numbers = [
        int(p.name.removeprefix(VERSION_PREFIX))
        for p in segments_dir.glob(f"{VERSION_PREFIX}*")
        if p.is_dir() and p.name.removeprefix(VERSION_PREFIX).isdigit()
    ]
    return f"{VERSION_PREFIX}{max(numbers, default=0) + 1:03d}"


def publish(segments_dir: Path, model: SegmentModel) -> Path:
    """Save ``model`` under its version and make it current (the pointer is replaced
    atomically, so a reader never sees a half-written version)."""
    directory = model.save(segments_dir / model.version)
    pointer = segments_dir / CURRENT_FILE
    staging = pointer.with_suffix(".tmp")
    staging.write_text(json.dumps({"version": model.version}) + "\n")
    staging.replace(pointer)
    return directory


def scaled_numeric_centroids(model: SegmentModel, reference: SegmentModel) -> np.ndarray:
    """``model``'s centres in ``reference``'s scaled numeric space (both must share the
    numeric feature names), so centres of two versions can be compared."""
    if model.feature_names != reference.feature_names:
        raise ValueError("versions segment on different features; their centres do not compare")
    units = model.centroids_in_units()
    logged = units.copy()
    logged[:, reference.log_features] = np.log1p(
        np.clip(logged[:, reference.log_features], 0.0, None)
    )
    return (logged - reference.center) / reference.scale


@dataclass(frozen=True)
class Matching:
    # new position -> (previous id, previous name, distance) for kept segments
    kept: dict[int, tuple[int, str, float]] = field(default_factory=dict)
    distances: list[list[float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept": {
                str(k): {"id": v[0], "name": v[1], "distance": round(v[2], 3)}
                for k, v in self.kept.items()
            },
            "distances": self.distances,
        }


def match_segments(new: SegmentModel, previous: SegmentModel, match_distance: float) -> Matching:
    """Pair new segments with previous ones whose centres have not really moved."""
    if new.feature_names != previous.feature_names:
        return Matching()
    new_centres = scaled_numeric_centroids(new, new)
    old_centres = scaled_numeric_centroids(previous, new)
    distances = np.sqrt(((new_centres[:, None, :] - old_centres[None, :, :]) ** 2).sum(axis=2))
    rows, cols = linear_sum_assignment(distances)
    kept = {
        int(r): (int(previous.segment_ids[c]), previous.segment_names[c], float(distances[r, c]))
        for r, c in zip(rows, cols, strict=True)
        if distances[r, c] <= match_distance
    }
    return Matching(kept=kept, distances=np.round(distances, 3).tolist())


def assign_ids(
    names: list[str], matching: Matching, previous: SegmentModel | None, sizes: list[int]
) -> tuple[np.ndarray, list[str]]:
    """Final ids and names: kept segments inherit both; new ones get fresh ids in order of
    size (largest first), after every id any earlier version used."""
    used = 0 if previous is None else int(previous.metadata.get("max_segment_id", 0))
    if previous is not None and len(previous.segment_ids):
        used = max(used, int(previous.segment_ids.max()))
    ids = np.zeros(len(names), dtype=np.int64)
    final = list(names)
    for position, (old_id, old_name, _) in matching.kept.items():
        ids[position] = old_id
        final[position] = old_name
    fresh = sorted(
        (i for i in range(len(names)) if i not in matching.kept), key=lambda i: (-sizes[i], i)
    )
    for offset, position in enumerate(fresh, start=1):
        ids[position] = used + offset
    # A fresh segment may have earned a name a kept one already holds.
    for position in fresh:
        base, suffix = final[position], 2
        while final.count(final[position]) > 1:
            final[position] = f"{base} {suffix}"
            suffix += 1
    return ids, final


@dataclass(frozen=True)
class Transition:
    previous_version: str
    adjusted_rand: float
    changed_share: float
    matrix: pd.DataFrame  # rows: previous segment, columns: new segment, values: customers

    def as_dict(self) -> dict[str, Any]:
        return {
            "previous_version": self.previous_version,
            "adjusted_rand_vs_previous": self.adjusted_rand,
            "changed_segment_share": self.changed_share,
            "matrix": {
                "previous": [str(i) for i in self.matrix.index],
                "new": [str(c) for c in self.matrix.columns],
                "customers": self.matrix.to_numpy().tolist(),
            },
        }


def transition(previous: SegmentModel, previous_ids: np.ndarray, new_ids: np.ndarray) -> Transition:
    """How the same customers moved from the previous version's segments to the new."""
    matrix = pd.crosstab(pd.Series(previous_ids, name="previous"), pd.Series(new_ids, name="new"))
    return Transition(
        previous_version=previous.version,
        adjusted_rand=round(float(adjusted_rand_score(previous_ids, new_ids)), 4),
        changed_share=round(float(np.mean(previous_ids != new_ids)), 4),
        matrix=matrix,
    )
