"""Segments as of a cut-off: evaluation groups customers by what serving knew then.

The newest segmentation reads features that include the test window; these tests hold
the training run to the features of the snapshot before each cut-off instead, read here
straight from the snapshot file (not through Feast), and check the run used them.
"""

from __future__ import annotations

import pandas as pd
import pytest

from segrec.settings import Settings
from training.segmentation.assign import (
    categorical_rows,
    lifecycle_stages,
    numeric_rows,
    segments_as_of,
)
from training.segmentation.versioning import load_current
from training.train.pipeline import TrainingRun, load_segments

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _snapshot_before(settings: Settings, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Each customer's newest feature row at or before ``cutoff``, consenting ones only."""
    rows = pd.read_parquet(settings.features_dir / "customer_features.parquet")
    rows = rows[rows["event_timestamp"] <= cutoff].sort_values("event_timestamp")
    newest = rows.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    return newest[newest["consent_personalisation"].fillna(False).astype(bool)]


def test_at_the_newest_snapshot_the_segmentation_runs_own_labels_come_back(
    trained_small: tuple[Settings, TrainingRun],
) -> None:
    settings, _ = trained_small
    written = load_segments(settings)
    newest = pd.read_parquet(settings.features_dir / "customer_features.parquet")[
        "event_timestamp"
    ].max()
    again = segments_as_of(settings, newest)
    assert set(again.index) == set(written.index)
    for column in ("segment_id", "segment_name", "lifecycle_stage"):
        assert (again[column] == written.loc[again.index, column]).all(), column


def test_the_test_side_is_grouped_by_the_snapshot_before_its_cut_off(
    trained_small: tuple[Settings, TrainingRun],
) -> None:
    settings, run = trained_small
    cutoff = pd.Timestamp(run.segments_as_of["test"]["cutoff"])
    features = _snapshot_before(settings, cutoff)
    model = load_current(settings.segments_dir)
    assert model is not None
    ids, _ = model.assign(numeric_rows(model, features), categorical_rows(model, features))
    expected = pd.DataFrame(
        {"segment_id": ids, "lifecycle_stage": lifecycle_stages(features)}, index=features.index
    )
    assert run.segments_as_of["test"]["segmented_customers"] == len(expected)
    # The run's per-segment tables use these labels; the newest ones differ for some.
    groups = run.results["filtered"].groups.set_index("customer_id")
    known = groups.index.intersection(expected.index)
    assert len(known) > 0.5 * len(groups)
    assert (groups.loc[known, "segment"] == expected.loc[known, "segment_id"]).all()
    assert (groups.loc[known, "lifecycle"] == expected.loc[known, "lifecycle_stage"]).all()
    assert (groups.loc[groups.index.difference(expected.index), "segment"] == -1).all()
    written = load_segments(settings).reindex(known)
    assert (written["segment_id"] != expected.loc[known, "segment_id"]).any()
    # Customers who signed up after the cut-off have no segment at it.
    late = load_segments(settings).index.difference(features.index)
    assert len(late) and not late.isin(segments_as_of(settings, cutoff).index).any()


def test_before_any_snapshot_nobody_is_segmented(
    trained_small: tuple[Settings, TrainingRun],
) -> None:
    settings, _ = trained_small
    first = pd.read_parquet(settings.features_dir / "customer_features.parquet")[
        "event_timestamp"
    ].min()
    assert segments_as_of(settings, first - pd.Timedelta(days=1)).empty
    assert segments_as_of(settings, first).shape[0] > 0
