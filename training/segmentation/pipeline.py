"""``make segments``: features -> preprocess -> choose k -> cluster -> profile, name,
version -> customer segment features (offline parquet + online store) and reports.

A full run refits everything. :func:`update_segments` is the incremental path between
full retrains: it moves the current centroids towards the newest features
(``partial_fit``), keeps ids and names, and measures the drift.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from segrec.segment_model import SegmentModel
from segrec.settings import Settings
from training.laps import Laps
from training.segmentation.assign import categorical_rows, lifecycle_stages, numeric_rows
from training.segmentation.estimators import (
    DensityOutlierDetector,
    KMeansSegmenter,
    make_segmenter,
)
from training.segmentation.ground_truth import planted_personas
from training.segmentation.inputs import SegmentationInputs, load_segmentation_inputs
from training.segmentation.preprocessing import SegmentPreprocessor
from training.segmentation.profiles import SegmentProfile, name_segments, profile_segments
from training.segmentation.selection import KChoice, Stability, bootstrap_stability, score_k
from training.segmentation.versioning import (
    Matching,
    Transition,
    assign_ids,
    load_current,
    match_segments,
    next_version,
    publish,
    transition,
)

SEGMENTS_FILE = "customer_segments.parquet"
SEGMENT_VIEW = "customer_segment"
SEGMENTS_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        pa.field("event_timestamp", pa.timestamp("ns", tz="UTC")),
        pa.field("segment_id", pa.int64()),
        pa.field("segment_name", pa.string()),
        pa.field("segment_version", pa.string()),
        pa.field("segment_probability", pa.float64()),
        pa.field("segment_outlier", pa.bool_()),
        pa.field("lifecycle_stage", pa.string()),
    ]
)


@dataclass
class SegmentationRun:
    model: SegmentModel
    inputs: SegmentationInputs
    choice: KChoice | None
    stability: Stability | None
    profiles: list[SegmentProfile]
    assignments: pd.DataFrame  # customer_id index: segment_id, name, probability, ...
    space: np.ndarray  # the customers in the clustering space (for plots)
    matching: Matching = field(default_factory=Matching)
    transition: Transition | None = None
    persona_agreement: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    online_rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _preprocessor(settings: Settings) -> SegmentPreprocessor:
    log = settings.segment_log_features
    return SegmentPreprocessor(
        numeric=tuple(settings.segment_features),
        # The log list also covers profile-only features; the preprocessor sees its own.
        log=log if log == "auto" else tuple(f for f in log if f in settings.segment_features),
        pca_components=settings.segment_pca_components,
        random_state=settings.seed,
    )


def _profile_features(settings: Settings) -> tuple[str, ...]:
    extra = [f for f in settings.segment_profile_features if f not in settings.segment_features]
    return (*settings.segment_features, *extra)


def _profile_logs(settings: Settings) -> tuple[str, ...]:
    # Profiles compare means; skewed features are compared on the log scale like in
    # clustering, whatever the log setting (auto may not have chosen the extras).
    log = settings.segment_log_features
    return tuple(log) if log != "auto" else ("monetary_total", "frequency", "avg_order_value")


def _persona_agreement(settings: Settings, segment_ids: pd.Series) -> dict[str, Any] | None:
    personas = planted_personas(settings)
    if personas is None:
        return None
    joined = segment_ids.to_frame("segment").join(personas, how="inner")
    return {
        "customers": len(joined),
        "adjusted_rand": round(float(adjusted_rand_score(joined["persona"], joined["segment"])), 4),
        "normalized_mutual_info": round(
            float(normalized_mutual_info_score(joined["persona"], joined["segment"])), 4
        ),
        "crosstab": pd.crosstab(joined["persona"], joined["segment"]).to_dict(orient="index"),
    }


def _write_segment_features(
    settings: Settings, assignments: pd.DataFrame, cutoff: pd.Timestamp
) -> None:
    """Replace this cut-off's rows in the offline source; earlier cut-offs stay, so
    point-in-time joins for older training rows still see the segment of their time."""
    path = settings.features_dir / SEGMENTS_FILE
    rows = assignments.reset_index().assign(event_timestamp=cutoff)
    table = pa.Table.from_pandas(
        rows[SEGMENTS_SCHEMA.names], schema=SEGMENTS_SCHEMA, preserve_index=False
    )
    if path.exists():
        old = pq.read_table(path, schema=SEGMENTS_SCHEMA)
        old = old.filter(
            pa.compute.not_equal(
                old["event_timestamp"],
                pa.scalar(cutoff, SEGMENTS_SCHEMA.field("event_timestamp").type),
            )
        )
        table = pa.concat_tables([old, table])
    staging = path.with_suffix(".tmp")
    pq.write_table(table, staging)
    staging.replace(path)


def _finish(settings: Settings, run: SegmentationRun, timer: Laps, online: bool) -> SegmentationRun:
    _write_segment_features(settings, run.assignments, run.inputs.cutoff)
    publish(settings.segments_dir, run.model)
    timer.lap("write")
    if online:
        from training.features.materialize import load_view_online

        run.online_rows = load_view_online(settings, SEGMENT_VIEW)
        timer.lap("online")
    run.seconds = timer.seconds
    return run


def run_segmentation(
    settings: Settings, *, online: bool = True, progress: bool | None = None
) -> SegmentationRun:
    """A full segmentation run; publishes a new segment version."""
    timer = Laps()
    inputs = load_segmentation_inputs(settings)
    frame = inputs.features
    minimum = 20 * settings.segment_k_max
    if len(frame) < minimum:
        raise ValueError(
            f"only {len(frame)} consenting customers with features; segmentation needs at least "
            f"{minimum} (20 per segment at segment_k_max={settings.segment_k_max})"
        )
    timer.lap("inputs")
    preprocessor = _preprocessor(settings).fit(frame)
    X = preprocessor.transform(frame)
    timer.lap("preprocess")

    def make(k: int) -> Any:
        return make_segmenter(
            settings.segment_algorithm,
            k,
            random_state=settings.seed,
            sample_rows=settings.segment_sample_rows,
            minibatch_rows=settings.segment_minibatch_rows,
        )

    ks = (
        range(settings.segment_k, settings.segment_k + 1)
        if settings.segment_k
        else range(settings.segment_k_min, settings.segment_k_max + 1)
    )
    choice = score_k(
        X,
        make,
        ks,
        sample_rows=settings.segment_sample_rows,
        stability_rounds=settings.segment_bootstrap_rounds,
        random_state=settings.seed,
        progress=progress,
    )
    timer.lap("choose_k")
    segmenter = make(choice.k).fit(X)
    labels = segmenter.labels_
    timer.lap("fit")
    stability = bootstrap_stability(
        X,
        lambda: make(choice.k),
        labels,
        rounds=settings.segment_bootstrap_rounds,
        sample_rows=min(len(X), max(settings.segment_sample_rows, len(X) // 2)),
        random_state=settings.seed,
    )
    timer.lap("stability")
    try:
        outlier = (
            DensityOutlierDetector(
                min_cluster_size=max(25, min(len(X), settings.segment_sample_rows) // 200),
                sample_rows=settings.segment_sample_rows,
                random_state=settings.seed,
            )
            .fit(X)
            .labels_
            < 0
        )
    except ValueError:
        # No dense region at all (e.g. features that barely vary): flag nobody rather
        # than fail the segmentation, which does not depend on it.
        outlier = np.zeros(len(X), dtype=bool)
    timer.lap("outliers")

    profiles = profile_segments(
        frame, labels, _profile_features(settings), _profile_logs(settings), choice.k
    )
    names = name_segments(profiles)
    previous = load_current(settings.segments_dir)
    version = next_version(settings.segments_dir)
    geometry = segmenter.export_geometry()
    draft = preprocessor.export(version=version, segment_names=tuple(names), **geometry)
    matching = (
        match_segments(draft, previous, settings.segment_match_distance)
        if previous is not None
        else Matching()
    )
    ids, final_names = assign_ids(names, matching, previous, [p.size for p in profiles])
    metadata = _metadata(settings, inputs, choice, preprocessor, ids, previous, "full")
    metadata["segment_counts"] = np.bincount(labels, minlength=choice.k).tolist()
    model = preprocessor.export(
        version=version,
        segment_ids=ids,
        segment_names=tuple(final_names),
        metadata=metadata,
        **geometry,
    )
    segment_ids, probability, _ = model.assign_space(X)
    assignments = _assignments(frame, segment_ids, probability, model, outlier)
    run = SegmentationRun(
        model=model,
        inputs=inputs,
        choice=choice,
        stability=stability,
        profiles=profiles,
        assignments=assignments,
        space=X,
        matching=matching,
        persona_agreement=_persona_agreement(settings, assignments["segment_id"]),
    )
    if previous is not None:
        run.transition = _transition_from(previous, frame, segment_ids)
    timer.lap("profile_version")
    return _finish(settings, run, timer, online)


def _transition_from(
    previous: SegmentModel, frame: pd.DataFrame, new_ids: np.ndarray
) -> Transition:
    previous_ids, _ = previous.assign(
        numeric_rows(previous, frame), categorical_rows(previous, frame)
    )
    return transition(previous, previous_ids, new_ids)


def _assignments(
    frame: pd.DataFrame,
    segment_ids: np.ndarray,
    probability: np.ndarray,
    model: SegmentModel,
    outlier: np.ndarray,
) -> pd.DataFrame:
    names = dict(zip(model.segment_ids.tolist(), model.segment_names, strict=True))
    return pd.DataFrame(
        {
            "segment_id": segment_ids.astype(np.int64),
            "segment_name": [names[int(i)] for i in segment_ids],
            "segment_version": model.version,
            "segment_probability": probability.round(6),
            "segment_outlier": outlier,
            "lifecycle_stage": lifecycle_stages(frame),
        },
        index=frame.index.rename("customer_id"),
    )


def _metadata(
    settings: Settings,
    inputs: SegmentationInputs,
    choice: KChoice,
    preprocessor: SegmentPreprocessor,
    ids: np.ndarray,
    previous: SegmentModel | None,
    mode: str,
) -> dict[str, Any]:
    clean_manifest = json.loads((settings.clean_dir / "manifest.json").read_text())
    max_id = int(ids.max())
    if previous is not None:
        max_id = max(max_id, int(previous.metadata.get("max_segment_id", 0)))
    return {
        "mode": mode,
        "algorithm": settings.segment_algorithm,
        "k": choice.k,
        "seed": settings.seed,
        "data_version": clean_manifest["data_version"],
        "feature_cutoff": inputs.cutoff.isoformat(),
        "customers": len(inputs.features),
        "excluded_no_consent": inputs.excluded_no_consent,
        "preprocessing": preprocessor.choices_,
        "previous_version": None if previous is None else previous.version,
        "max_segment_id": max_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def update_segments(
    settings: Settings, *, online: bool = True, progress: bool | None = None
) -> SegmentationRun:
    """Incremental update: move the current K-Means centroids towards the newest features
    and publish them as a new version with the same ids and names; measure the drift."""
    timer = Laps()
    previous = load_current(settings.segments_dir)
    if previous is None:
        raise FileNotFoundError("no current segment version to update: run `make segments` first")
    if previous.kind != "centroid" or previous.pca_components is not None:
        raise ValueError(
            "incremental updates need a centroid model without PCA; run a full `make segments`"
        )
    inputs = load_segmentation_inputs(settings)
    frame = inputs.features
    timer.lap("inputs")
    X = previous.transform(numeric_rows(previous, frame), categorical_rows(previous, frame))
    before_ids, _, _ = previous.assign_space(X)
    segmenter = KMeansSegmenter(n_clusters=previous.n_segments, random_state=settings.seed)
    segmenter.cluster_centers_ = previous.centroids.copy()
    segmenter.n_clusters_ = previous.n_segments
    segmenter.softness_ = previous.softness
    segmenter.counts_ = np.asarray(
        previous.metadata.get("segment_counts", np.ones(previous.n_segments)), dtype=np.float64
    )
    segmenter.partial_fit(X)
    timer.lap("partial_fit")
    shift = np.sqrt(((segmenter.cluster_centers_ - previous.centroids) ** 2).sum(axis=1))
    version = next_version(settings.segments_dir)
    metadata = dict(previous.metadata)
    metadata.update(
        mode="incremental",
        previous_version=previous.version,
        feature_cutoff=inputs.cutoff.isoformat(),
        customers=len(frame),
        excluded_no_consent=inputs.excluded_no_consent,
        segment_counts=segmenter.counts_.tolist(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    model = SegmentModel(
        **{
            **{f: getattr(previous, f) for f in previous.__dataclass_fields__},
            "version": version,
            "centroids": segmenter.cluster_centers_,
            "softness": segmenter.softness_,
            "metadata": metadata,
        }
    )
    segment_ids, probability, _ = model.assign_space(X)
    positions = pd.Series(np.arange(model.n_segments), index=model.segment_ids)
    labels = positions.loc[segment_ids].to_numpy()
    profiles = profile_segments(
        frame, labels, _profile_features(settings), _profile_logs(settings), model.n_segments
    )
    assignments = _assignments(frame, segment_ids, probability, model, np.zeros(len(frame), bool))
    run = SegmentationRun(
        model=model,
        inputs=inputs,
        choice=None,
        stability=None,
        profiles=profiles,
        assignments=assignments,
        space=X,
        transition=transition(previous, before_ids, segment_ids),
        persona_agreement=_persona_agreement(settings, assignments["segment_id"]),
        drift={
            "centroid_shift": {
                str(i): round(float(s), 4) for i, s in zip(model.segment_ids, shift, strict=True)
            },
            "max_centroid_shift": round(float(shift.max()), 4),
            "changed_segment_share": round(float(np.mean(before_ids != segment_ids)), 4),
        },
    )
    timer.lap("profile_version")
    return _finish(settings, run, timer, online)
