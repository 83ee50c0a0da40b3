"""The segment console's data, from what this service has on disk.

Always there: the serving bundle (manifest, blend weights per segment, segment model).
There when this machine trained: the segment history under ``<data_dir>/segments/``, the
customer features and segments (for the projection), and the reports
(``segments.json``, ``evaluation.json``, ``customer_value.json``). Every part that is
missing is returned as ``{"available": false, "reason": ...}`` so the page can say why,
instead of the whole console failing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segrec.segment_model import SegmentModel, SegmentModelError
from segrec.settings import Settings
from serving.engine import RecommendationEngine

PROJECTION_SAMPLE = 600  # customers in the scatter: enough to see the clusters, light to draw
METRICS = ("ndcg", "recall", "precision", "hit_rate", "map", "mrr", "coverage")


def missing(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def _read_json(path: Path) -> dict[str, Any]:
    """The report at ``path``, or a "not available" part saying why."""
    if not path.exists():
        return missing(f"{path} is absent (written by make segments / make train)")
    try:
        body = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return missing(f"{path} could not be read: {error}")
    return (
        {"available": True, **body} if isinstance(body, dict) else missing(f"{path}: not an object")
    )


def _round(values: np.ndarray, digits: int = 4) -> list[Any]:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


# ---- segments --------------------------------------------------------------------------
def segments_payload(settings: Settings, engine: RecommendationEngine) -> dict[str, Any]:
    model = engine.bundle.segment_model
    counts = model.metadata.get("segment_counts") or []
    current = {
        "version": model.version,
        "created_at": model.metadata.get("created_at"),
        "algorithm": model.metadata.get("algorithm"),
        "features": list(model.feature_names),
        "segments": [
            {
                "id": int(segment_id),
                "name": name,
                "size": int(counts[i]) if i < len(counts) else None,
                # Centroids in the features' own units (days, shares, counts).
                "centroid": dict(
                    zip(model.feature_names, _round(model.centroids_in_units()[i], 3), strict=True)
                ),
            }
            for i, (segment_id, name) in enumerate(
                zip(model.segment_ids, model.segment_names, strict=True)
            )
        ],
    }
    report = _read_json(settings.reports_dir / "segments.json")
    return {
        "current": current,
        "history": history(settings.segments_dir),
        "movement": movement(report),
        "profiles": profiles(report),
        "projection": projection(settings, model),
    }


def history(directory: Path) -> dict[str, Any]:
    """Sizes and names of every segment version written under ``directory``."""
    versions = sorted(p for p in directory.glob("seg-*") if p.is_dir())
    if not versions:
        return missing(f"no segment versions under {directory} (make segments writes them)")
    rows: list[dict[str, Any]] = []
    for path in versions:
        try:
            model = SegmentModel.load(path)
        except SegmentModelError as error:
            rows.append({"version": path.name, "error": str(error)})
            continue
        counts = model.metadata.get("segment_counts") or []
        rows.append(
            {
                "version": model.version,
                "created_at": model.metadata.get("created_at"),
                "mode": model.metadata.get("mode"),
                "segments": [
                    {
                        "id": int(segment_id),
                        "name": name,
                        "size": int(counts[i]) if i < len(counts) else None,
                    }
                    for i, (segment_id, name) in enumerate(
                        zip(model.segment_ids, model.segment_names, strict=True)
                    )
                ],
            }
        )
    return {"available": True, "versions": rows}


def movement(report: dict[str, Any]) -> dict[str, Any]:
    """Customers moving between the previous and the current version (segments report)."""
    if not report.get("available"):
        return missing(str(report.get("reason")))
    transition = report.get("transition")
    if not transition or not transition.get("matrix"):
        return missing("the segments report has no previous version to compare with")
    return {
        "available": True,
        "previous_version": transition.get("previous_version"),
        "version": report.get("version"),
        "adjusted_rand": transition.get("adjusted_rand_vs_previous"),
        "changed_share": transition.get("changed_segment_share"),
        **transition["matrix"],
    }


def profiles(report: dict[str, Any]) -> dict[str, Any]:
    """Median profile and distinguishing traits of each segment (segments report)."""
    if not report.get("available"):
        return missing(str(report.get("reason")))
    return {
        "available": True,
        "version": report.get("version"),
        "segments": [
            {
                "id": s.get("id"),
                "name": s.get("name"),
                "size": s.get("size"),
                "share": s.get("share"),
                "median": s.get("median", {}),
                "distinguishing": s.get("distinguishing", []),
                "lifecycle": s.get("lifecycle", {}),
            }
            for s in report.get("segments", [])
        ],
    }


def projection(settings: Settings, model: SegmentModel) -> dict[str, Any]:
    """A 2-D principal-component view of the clustering space: a seeded sample of
    customers (when their features are on this machine) and the segment centres."""
    centroids = np.asarray(model.centroids, dtype=np.float64)
    points = np.zeros((0, centroids.shape[1]))
    labels: list[int] = []
    note = None
    try:
        points, labels = _sample_space(settings, model)
    except (FileNotFoundError, KeyError, ValueError) as error:
        note = f"customers not shown: {error}"
    basis_rows = points if len(points) >= 3 else centroids
    mean = basis_rows.mean(axis=0)
    _, _, components = np.linalg.svd(basis_rows - mean, full_matrices=False)
    axes = components[:2].T
    if axes.shape[1] < 2:  # fewer than two segments: a flat second axis
        axes = np.hstack([axes, np.zeros((axes.shape[0], 2 - axes.shape[1]))])
    return {
        "available": True,
        "note": note,
        "centres": [
            {"id": int(i), "name": n, "xy": _round(c, 3)}
            for i, n, c in zip(
                model.segment_ids, model.segment_names, (centroids - mean) @ axes, strict=True
            )
        ],
        "points": [
            {"segment": int(s), "xy": _round(p, 3)}
            for s, p in zip(labels, (points - mean) @ axes if len(points) else [], strict=True)
        ],
    }


def _sample_space(settings: Settings, model: SegmentModel) -> tuple[np.ndarray, list[int]]:
    import pandas as pd

    segments_path = settings.features_dir / "customer_segments.parquet"
    features_path = settings.features_dir / "customer_features.parquet"
    for path in (segments_path, features_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is absent")
    segments = pd.read_parquet(segments_path, columns=["customer_id", "segment_id"])
    features = pd.read_parquet(
        features_path, columns=["customer_id", "event_timestamp", *model.feature_names]
    )
    newest = features[features["event_timestamp"] == features["event_timestamp"].max()]
    joined = newest.merge(segments.drop_duplicates("customer_id"), on="customer_id")
    if joined.empty:
        raise ValueError("no customer has both features and a segment")
    sample = joined.sample(min(PROJECTION_SAMPLE, len(joined)), random_state=settings.seed)
    space = model.transform(sample[list(model.feature_names)].to_numpy(dtype=np.float64))
    return space, [int(s) for s in sample["segment_id"]]


# ---- models ----------------------------------------------------------------------------
def models_payload(settings: Settings, engine: RecommendationEngine) -> dict[str, Any]:
    bundle = engine.bundle
    return {
        "bundle": {
            "version": bundle.version,
            "created_at": bundle.created_at or bundle.manifest.get("created_at"),
            "versions": dict(bundle.versions),
            "metrics": dict(bundle.metrics),
            "models": list(engine.models),
        },
        "blend": blend_weights(engine),
        "evaluation": evaluation(_read_json(settings.reports_dir / "evaluation.json")),
        "customer_value": customer_value(_read_json(settings.reports_dir / "customer_value.json")),
    }


def blend_weights(engine: RecommendationEngine) -> dict[str, Any]:
    """Each segment's blend weights as served (the last bundle row is the global blend)."""
    group = engine.bundle.group("blend")
    models = [str(m) for m in group["models"]]
    weights = np.asarray(group["weights"], dtype=np.float64)
    segment_model = engine.bundle.segment_model
    rows = [
        {"segment": int(s), "name": segment_model.name_of(int(s)), "weights": _round(w)}
        for s, w in zip(group["segment_ids"], weights, strict=False)
    ]
    rows.append({"segment": None, "name": "global (no segment)", "weights": _round(weights[-1])})
    cold = group.get("cold_weights")
    if cold is not None:
        rows.append({"segment": None, "name": "cold start", "weights": _round(cold)})
    return {"available": True, "models": models, "rows": rows}


def evaluation(report: dict[str, Any]) -> dict[str, Any]:
    """Per evaluation view: every model's means, and NDCG per segment."""
    if not report.get("available"):
        return missing(str(report.get("reason")))
    views = {}
    for view, body in (report.get("protocols") or {}).items():
        summary = body.get("summary", {})
        views[view] = {
            "models": {
                name: {
                    metric: run.get("means", {}).get(metric, run.get(metric)) for metric in METRICS
                }
                | {"n_customers": run.get("n_customers")}
                for name, run in summary.items()
            },
            "by_segment": (body.get("by_group") or {}).get("segment_name", {}),
        }
    return {
        "available": True,
        "k": report.get("k"),
        "protocol": report.get("protocol"),
        "views": views,
    }


def customer_value(report: dict[str, Any]) -> dict[str, Any]:
    """Churn and CLV holdout quality, flattened to the numbers (customer value report)."""
    if not report.get("available"):
        return missing(str(report.get("reason")))
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[prefix] = value

    for part in ("churn", "clv"):
        walk(part, report.get(part))
    return {"available": True, "numbers": dict(list(flat.items())[:40])}
