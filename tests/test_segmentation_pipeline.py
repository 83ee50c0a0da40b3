"""make segments for real: Feast offline features in, segments out to the offline source,
the SQLite online store, the numpy model and the reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from segrec.feature_store import open_store
from segrec.segment_model import SegmentModel
from segrec.settings import Settings
from tests.conftest import Dataset, prepare_feast
from training.features.history import features_as_of, historical_features
from training.segmentation.pipeline import SegmentationRun, run_segmentation, update_segments
from training.segmentation.report import write_reports

pytestmark = pytest.mark.integration


def _prepare(root: Path, dataset: Dataset, **overrides: Any) -> Settings:
    return prepare_feast(root, dataset, **overrides)


@pytest.fixture(scope="module")
def segmented(
    tmp_path_factory: pytest.TempPathFactory, tiny: Dataset
) -> tuple[Settings, SegmentationRun]:
    settings = _prepare(
        tmp_path_factory.mktemp("segments"),
        tiny,
        segment_k_min=3,
        segment_k_max=5,
        segment_sample_rows=500,
        segment_bootstrap_rounds=2,
    )
    return settings, run_segmentation(settings, progress=False)


def test_customers_without_consent_are_not_segmented(
    segmented: tuple[Settings, SegmentationRun],
) -> None:
    settings, run = segmented
    features = pd.read_parquet(settings.features_dir / "customer_features.parquet")
    newest = features[features["event_timestamp"] == features["event_timestamp"].max()]
    refused = set(newest.loc[~newest["consent_personalisation"], "customer_id"])
    assert refused, "the tiny data should plant customers without consent"
    assert run.inputs.excluded_no_consent == len(refused)
    assert refused.isdisjoint(run.assignments.index)
    assert len(run.assignments) == len(newest) - len(refused)


def test_segments_are_written_offline_and_online(
    segmented: tuple[Settings, SegmentationRun],
) -> None:
    settings, run = segmented
    offline = pd.read_parquet(settings.features_dir / "customer_segments.parquet")
    assert len(offline) == len(run.assignments)
    assert set(offline["segment_version"]) == {run.model.version}
    assert offline["segment_probability"].between(0, 1).all()
    assert set(offline["lifecycle_stage"]) <= {"New", "Active", "Loyal", "Lapsed", "Churned"}
    assert run.online_rows == len(run.assignments)
    store = open_store(settings)
    sample = run.assignments.head(5)
    online = store.get_online_features(
        features=[
            "customer_segment:segment_id",
            "customer_segment:segment_name",
            "customer_segment:segment_version",
        ],
        entity_rows=[{"customer_id": c} for c in sample.index],
    ).to_dict()
    assert online["segment_id"] == sample["segment_id"].tolist()
    assert online["segment_name"] == sample["segment_name"].tolist()
    assert set(online["segment_version"]) == {run.model.version}


def test_numpy_assignment_in_serving_matches_training(
    segmented: tuple[Settings, SegmentationRun],
) -> None:
    settings, run = segmented
    model = SegmentModel.load(settings.segments_dir / run.model.version)
    features = run.inputs.features
    for customer_id in features.index[:50]:
        row = features.loc[customer_id].to_dict()
        segment_id, name, probability = model.assign_features(row)
        expected = run.assignments.loc[customer_id]
        assert segment_id == expected["segment_id"] and name == expected["segment_name"]
        assert probability == pytest.approx(expected["segment_probability"], abs=1e-6)


def test_model_records_seed_data_version_and_choices(
    segmented: tuple[Settings, SegmentationRun],
) -> None:
    settings, run = segmented
    meta = json.loads(
        (settings.segments_dir / run.model.version / "segment_model.json").read_text()
    )
    assert meta["metadata"]["seed"] == settings.seed
    assert meta["metadata"]["data_version"]
    assert meta["metadata"]["k"] == run.model.n_segments
    assert 3 <= run.model.n_segments <= 5
    assert set(meta["metadata"]["preprocessing"]) == set(settings.segment_features)


def test_a_second_run_on_the_same_data_keeps_every_segment(
    segmented: tuple[Settings, SegmentationRun],
) -> None:
    settings, first = segmented
    second = run_segmentation(settings, online=False, progress=False)
    assert second.model.version != first.model.version
    assert second.transition is not None and second.transition.adjusted_rand == 1.0
    assert sorted(second.model.segment_ids.tolist()) == sorted(first.model.segment_ids.tolist())
    assert set(second.model.segment_names) == set(first.model.segment_names)
    # The offline source holds one row per customer and cut-off: the rerun replaced it.
    offline = pd.read_parquet(settings.features_dir / "customer_segments.parquet")
    assert len(offline) == len(second.assignments)

    update = update_segments(settings, online=False, progress=False)
    assert update.drift is not None and update.drift["max_centroid_shift"] < 0.5
    assert update.model.segment_ids.tolist() == second.model.segment_ids.tolist()
    assert update.model.metadata["mode"] == "incremental"


def test_reports_have_scores_profiles_and_plots(
    segmented: tuple[Settings, SegmentationRun],
) -> None:
    settings, run = segmented
    json_path, html_path = write_reports(run, settings.reports_dir, settings.seed)
    report = json.loads(json_path.read_text())
    assert [c["k"] for c in report["k_selection"]["candidates"]] == [3, 4, 5]
    assert report["stability"]["rounds"] == 2
    assert len(report["segments"]) == run.model.n_segments
    assert report["persona_agreement"]["customers"] > 0
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") >= 4


@pytest.mark.slow
def test_segments_recover_the_planted_personas(tmp_path: Path, small: Dataset) -> None:
    """With k fixed at the number of personas. Measured 0.808 (0.791 before
    missed_visits); the guard leaves a little margin and still fails at the old figure."""
    settings = _prepare(tmp_path, small, segment_k=6, segment_bootstrap_rounds=2)
    run = run_segmentation(settings, online=False, progress=False)
    assert run.persona_agreement is not None
    assert run.persona_agreement["adjusted_rand"] >= 0.795
    assert {"New customers", "Bargain hunters", "Trend followers"} <= set(run.model.segment_names)
    np.testing.assert_array_equal(
        np.sort(run.assignments["segment_id"].unique()), np.sort(run.model.segment_ids)
    )


def test_features_as_of_equal_feasts_point_in_time_join(
    segmented: tuple[Settings, SegmentationRun],
) -> None:
    settings, run = segmented
    cutoffs = sorted(
        pd.read_parquet(
            settings.features_dir / "customer_features.parquet", columns=["event_timestamp"]
        )["event_timestamp"].unique()
    )
    ids = [*run.assignments.index[:60], "c_unknown_customer"]
    store = open_store(settings)
    # The newest snapshot, and a time between snapshots (the older rows must be chosen).
    for cutoff in (pd.Timestamp(cutoffs[-1]), pd.Timestamp(cutoffs[-2]) + pd.Timedelta(days=3)):
        ours = features_as_of(settings, "customer_training_v1", cutoff, ids)
        entity_df = pd.DataFrame({"customer_id": ids, "event_timestamp": cutoff})
        feast = historical_features(store, entity_df).set_index("customer_id")
        feast = feast.drop(columns="event_timestamp")[ours.columns]
        pd.testing.assert_frame_equal(
            ours.astype(object).where(ours.notna(), None),
            feast.astype(object).where(feast.notna(), None),
            check_names=False,
            check_dtype=False,
        )
