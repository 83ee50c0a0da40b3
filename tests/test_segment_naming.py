"""Naming rules over hand-made profiles, and matching segments across versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segrec.lifecycle import LifecycleRules
from segrec.segment_model import SegmentModel
from training.segmentation.profiles import SegmentProfile, base_name, name_segments
from training.segmentation.versioning import (
    Matching,
    assign_ids,
    current_version,
    match_segments,
    next_version,
    publish,
    transition,
)

RULES = LifecycleRules()


def _profile(size: int = 100, tenure: float = 500, idle: float = 20, **z: float) -> SegmentProfile:
    return SegmentProfile(
        label=0,
        size=size,
        share=0.1,
        median={"tenure_days": tenure, "days_since_last_event": idle},
        mean={},
        z={"monetary_total": 0.0, **z},
        distinguishing=[],
    )


@pytest.mark.parametrize(
    ("profile", "name"),
    [
        (_profile(tenure=30), "New customers"),
        (_profile(idle=200, monetary_total=0.8), "At-risk big spenders"),
        (_profile(idle=200), "Lapsed customers"),
        (_profile(monetary_total=1.2, repeat_view_share=0.9), "Loyal high-value"),
        (_profile(monetary_total=1.2), "Regular customers"),  # rich but not loyal
        (_profile(discount_affinity=1.5), "Bargain hunters"),
        (_profile(price_band_low_share=0.8), "Bargain hunters"),
        (_profile(novelty_share=1.0), "Trend followers"),
        (_profile(price_band_high_share=1.0), "Premium shoppers"),
        (_profile(interaction_rate_30d=-0.9), "Occasional shoppers"),
        (_profile(), "Regular customers"),
    ],
)
def test_names_follow_the_documented_rules(profile: SegmentProfile, name: str) -> None:
    assert base_name(profile, RULES) == name


def test_duplicate_names_keep_the_largest_plain_and_qualify_the_rest() -> None:
    profiles = [
        _profile(size=50, discount_affinity=1.0, age=-2.0),
        _profile(size=300, discount_affinity=2.0),
        _profile(size=80, tenure=10),
    ]
    names = name_segments(profiles)
    assert names == [
        "Bargain hunters (low age)",
        "Bargain hunters",
        "New customers",
    ]
    assert name_segments(profiles) == names  # deterministic


def _model(
    version: str, centroids: list[list[float]], ids: list[int], names: list[str]
) -> SegmentModel:
    return SegmentModel(
        version=version,
        feature_names=("a", "b"),
        log_features=np.array([False, False]),
        fill_values=np.zeros(2),
        center=np.zeros(2),
        scale=np.ones(2),
        centroids=np.array(centroids, dtype=float),
        segment_ids=np.array(ids),
        segment_names=tuple(names),
        metadata={"max_segment_id": max(ids)},
    )


def test_unmoved_segments_keep_id_and_name_moved_ones_get_fresh_ids() -> None:
    previous = _model("seg-001", [[0, 0], [5, 5], [10, 0]], [1, 2, 3], ["A", "B", "C"])
    # New order differs; (0.2, 0) is A barely moved, (5, 5.3) is B, (20, 20) is new.
    new = _model("seg-002", [[5, 5.3], [20, 20], [0.2, 0]], [0, 0, 0], ["x", "y", "z"])
    matching = match_segments(new, previous, match_distance=1.0)
    assert {k: v[:2] for k, v in matching.kept.items()} == {0: (2, "B"), 2: (1, "A")}
    ids, names = assign_ids(["x", "y", "A"], matching, previous, sizes=[10, 10, 10])
    assert ids.tolist() == [2, 4, 1]  # the fresh segment gets an id never used before
    assert names == ["B", "y", "A"]


def test_a_fresh_segment_never_takes_a_kept_name() -> None:
    previous = _model("seg-001", [[0, 0]], [1], ["Bargain hunters"])
    matching = Matching(kept={0: (1, "Bargain hunters", 0.1)})
    _, names = assign_ids(["Bargain hunters", "Bargain hunters"], matching, previous, [5, 5])
    assert names == ["Bargain hunters", "Bargain hunters 2"]


def test_versions_count_up_and_current_points_at_the_latest(tmp_path: Path) -> None:
    assert next_version(tmp_path) == "seg-001"
    publish(tmp_path, _model("seg-001", [[0, 0]], [1], ["A"]))
    assert next_version(tmp_path) == "seg-002"
    publish(tmp_path, _model("seg-002", [[0, 0]], [1], ["A"]))
    assert current_version(tmp_path) == "seg-002"
    assert SegmentModel.load(tmp_path / "seg-001").version == "seg-001"


def test_transition_counts_customers_moving_between_versions() -> None:
    previous = _model("seg-001", [[0, 0]], [1], ["A"])
    moved = transition(previous, np.array([1, 1, 2, 2]), np.array([1, 1, 2, 3]))
    assert moved.changed_share == 0.25
    assert moved.matrix.loc[2, 3] == 1 and moved.matrix.loc[1, 1] == 2
    same = transition(previous, np.array([1, 1, 2]), np.array([5, 5, 7]))
    assert same.adjusted_rand == 1.0  # relabelled, not moved
