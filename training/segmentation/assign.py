"""Segments as they stood at a past time: the current segment model applied to each
customer's features from the newest snapshot at or before that time.

Evaluation groups customers this way. The newest assignments come from features that
include the test window (a customer whose test-window purchases are new launches reads
as a trend follower), so grouping test customers by them would tell the blend and the
per-segment tables something serving could not have known at the cut-off. The model is
the current one (refitting the clustering at every cut-off would cost a segmentation run
each); only its centroids, not any customer's label, have seen later data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segrec.lifecycle import LifecycleRules
from segrec.segment_model import SegmentModel
from segrec.settings import Settings
from training.features.history import features_as_of
from training.segmentation.inputs import TRAINING_SERVICE
from training.segmentation.versioning import load_current

COLUMNS = ("segment_id", "segment_name", "lifecycle_stage")


def numeric_rows(model: SegmentModel, frame: pd.DataFrame) -> np.ndarray:
    """The model's numeric features of ``frame``'s customers, in its order."""
    return frame[list(model.feature_names)].astype(np.float64).to_numpy()


def categorical_rows(model: SegmentModel, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's categorical features of ``frame``'s customers, as strings."""
    return {n: frame[n].astype(str).to_numpy(dtype=object) for n in model.categorical}


def lifecycle_stages(frame: pd.DataFrame) -> np.ndarray:
    """Each customer's lifecycle stage (:class:`segrec.lifecycle.LifecycleRules`)."""
    return LifecycleRules().assign(
        frame["tenure_days"].to_numpy(dtype=float),
        frame["days_since_last_event"].to_numpy(dtype=float),
        frame["frequency"].fillna(0).to_numpy(dtype=float),
    )


def segments_as_of(settings: Settings, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Segment id, name and lifecycle stage (:data:`COLUMNS`) per customer, indexed by
    customer id, from the features as of ``cutoff`` (Feast's point-in-time rule).
    Customers without personalisation consent or without a snapshot by then are left
    out (unsegmented), as segmentation leaves them out; without a segment model, nobody
    is segmented."""
    empty = pd.DataFrame(
        {"segment_id": pd.Series(dtype="int64"), "segment_name": [], "lifecycle_stage": []},
        index=pd.Index([], dtype=object, name="customer_id"),
    )
    model = load_current(settings.segments_dir)
    if model is None:
        return empty
    features = features_as_of(settings, TRAINING_SERVICE, pd.Timestamp(cutoff))
    features = features[features["consent_personalisation"].fillna(False).astype(bool)]
    if features.empty:
        return empty
    ids, _ = model.assign(numeric_rows(model, features), categorical_rows(model, features))
    names = dict(zip(model.segment_ids.tolist(), model.segment_names, strict=True))
    frame = pd.DataFrame(
        {
            "segment_id": ids.astype(np.int64),
            "segment_name": [names[int(i)] for i in ids],
            "lifecycle_stage": lifecycle_stages(features),
        },
        index=features.index.rename("customer_id"),
    )
    return frame
