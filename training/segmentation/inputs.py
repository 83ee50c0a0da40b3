"""Segmentation inputs: point-in-time customer features from Feast's offline store
(the ``customer_training_v1`` service's sources, by Feast's point-in-time rule).

The as-of time (the training cut-off) is the newest feature snapshot; every customer who
had signed up by then is asked for. Customers without personalisation consent are
excluded here, before anything is fitted, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segrec.settings import Settings
from training.features.history import features_as_of

TRAINING_SERVICE = "customer_training_v1"


@dataclass(frozen=True)
class SegmentationInputs:
    features: pd.DataFrame  # one row per consenting customer, indexed by customer_id
    cutoff: pd.Timestamp
    excluded_no_consent: int
    requested: int


def feature_cutoff(settings: Settings) -> tuple[pd.Timestamp, list[str]]:
    """The newest snapshot time and the customers present in it."""
    path = settings.features_dir / "customer_features.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no customer features at {path}: run `make features` first")
    stamps = pq.read_table(path, columns=["event_timestamp"]).column(0)
    newest = pc.max(stamps).as_py()
    ids = pq.read_table(
        path, columns=["customer_id"], filters=[("event_timestamp", "==", newest)]
    ).column(0)
    return pd.Timestamp(newest), ids.to_pylist()


def load_segmentation_inputs(settings: Settings) -> SegmentationInputs:
    cutoff, customer_ids = feature_cutoff(settings)
    features = features_as_of(settings, TRAINING_SERVICE, cutoff, customer_ids)
    consent = features["consent_personalisation"].fillna(False).astype(bool)
    kept = features[consent]
    kept.index.name = "customer_id"
    return SegmentationInputs(
        features=kept,
        cutoff=cutoff,
        excluded_no_consent=int((~consent).sum()),
        requested=len(features),
    )
