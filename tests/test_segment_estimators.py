"""The segmenter contract on every algorithm, k selection on blobs, and the numpy export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from segrec.segment_model import SegmentModel, SegmentModelError
from training.segmentation.estimators import (
    DensityOutlierDetector,
    GaussianMixtureSegmenter,
    KMeansSegmenter,
    WardSegmenter,
)
from training.segmentation.preprocessing import SegmentPreprocessor
from training.segmentation.selection import bootstrap_stability, elbow, score_k

SEGMENTERS = [
    KMeansSegmenter(n_clusters=4, random_state=0),
    KMeansSegmenter(n_clusters=4, minibatch_rows=100, random_state=0),  # mini-batch path
    GaussianMixtureSegmenter(n_clusters=4, random_state=0),
    WardSegmenter(n_clusters=4, sample_rows=300, random_state=0),
]
IDS = ["kmeans", "minibatch", "gmm", "ward"]


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return make_blobs(n_samples=600, centers=4, cluster_std=0.8, random_state=42)


@pytest.mark.parametrize("segmenter", SEGMENTERS, ids=IDS)
def test_segmenter_contract(segmenter: object, blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, truth = blobs
    estimator = clone(segmenter)
    params = estimator.get_params()
    assert estimator.fit(X) is estimator
    assert estimator.get_params() == params  # hyperparameters stored unchanged
    assert estimator.labels_.shape == (len(X),)
    assert estimator.n_clusters_ == 4
    np.testing.assert_array_equal(estimator.predict(X), estimator.labels_)
    proba = estimator.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1), estimator.labels_)
    assert adjusted_rand_score(truth, estimator.labels_) > 0.95
    again = clone(segmenter).fit(X)
    np.testing.assert_array_equal(again.labels_, estimator.labels_)  # seeded


@pytest.mark.parametrize("segmenter", SEGMENTERS[:1], ids=IDS[:1])
def test_unfitted_and_bad_k_fail_clearly(segmenter: object) -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        clone(segmenter).predict(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"n_clusters=4 must be in 2\.\.3"):
        clone(segmenter).fit(np.zeros((3, 2)))


def test_kmeans_on_four_points_finds_the_obvious_centres() -> None:
    X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    fitted = KMeansSegmenter(n_clusters=2, random_state=0).fit(X)
    centres = fitted.cluster_centers_[np.argsort(fitted.cluster_centers_[:, 0])]
    np.testing.assert_allclose(centres, [[0.0, 0.5], [10.0, 0.5]])
    assert fitted.inertia_ == pytest.approx(1.0)  # four points, each 0.5 from its centre


def test_partial_fit_moves_centroids_towards_new_data() -> None:
    X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    fitted = KMeansSegmenter(n_clusters=2, random_state=0).fit(X)
    left = int(np.argmin(fitted.cluster_centers_[:, 0]))
    fitted.partial_fit(np.array([[2.0, 0.5], [2.0, 0.5]]))
    # Two points seen before plus two new at x=2: the running mean moves to x=1.
    assert fitted.cluster_centers_[left, 0] == pytest.approx(1.0)
    assert fitted.counts_[left] == 4


def test_density_detector_flags_points_far_from_every_dense_region(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = blobs
    detector = DensityOutlierDetector(min_cluster_size=20, random_state=0).fit(X)
    far = np.array([[100.0, 100.0], [-80.0, 50.0]])
    assert (detector.predict(far) == -1).all()
    assert (detector.labels_ >= 0).mean() > 0.8


def test_k_selection_recovers_the_number_of_blobs() -> None:
    X, _ = make_blobs(
        n_samples=800,
        centers=[(0, 0), (9, 0), (0, 9), (9, 9), (4.5, 4.5)],
        cluster_std=0.8,
        random_state=42,
    )
    choice = score_k(
        X,
        lambda k: KMeansSegmenter(n_clusters=k, random_state=0),
        range(2, 9),
        sample_rows=500,
        stability_rounds=2,
        random_state=0,
        progress=False,
    )
    assert choice.k == 5
    assert [s.k for s in choice.scores] == list(range(2, 9))


def test_elbow_on_a_hand_made_curve() -> None:
    assert elbow([1, 2, 3, 4, 5], [100.0, 40.0, 10.0, 8.0, 6.0]) == 3


def test_bootstrap_stability_is_high_on_clear_clusters(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = blobs
    reference = KMeansSegmenter(n_clusters=4, random_state=0).fit(X).labels_
    stability = bootstrap_stability(
        X,
        lambda: KMeansSegmenter(n_clusters=4, random_state=1),
        reference,
        rounds=3,
        sample_rows=400,
        random_state=0,
    )
    assert stability.rounds == 3 and stability.min_ari > 0.95


def _frame(rng: np.random.Generator, n: int = 400) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "spend": np.concatenate([rng.lognormal(2, 0.3, n // 2), rng.lognormal(6, 0.3, n // 2)]),
            "share": rng.uniform(0, 1, n),
            "band": rng.choice(["low", "high"], n),
        }
    )


def test_preprocessor_logs_skewed_features_and_records_choices() -> None:
    frame = _frame(np.random.default_rng(0))
    frame["spend"] = np.random.default_rng(0).lognormal(3, 1.2, len(frame))  # long right tail
    frame.loc[3, "spend"] = np.nan
    pre = SegmentPreprocessor(numeric=("spend", "share"), categorical=("band",)).fit(frame)
    assert pre.choices_["spend"]["log"] and not pre.choices_["share"]["log"]
    space = pre.transform(frame)
    assert space.shape == (400, 4) and np.isfinite(space).all()
    assert set(np.unique(space[:, 2:])) == {0.0, 1.0}
    with pytest.raises(ValueError, match="missing from the input: \\['share'\\]"):
        pre.transform(frame.drop(columns="share"))


@pytest.mark.parametrize(
    ("segmenter", "pca"),
    [
        (KMeansSegmenter(n_clusters=2, random_state=0), 0),
        (GaussianMixtureSegmenter(n_clusters=2, random_state=0), 0),
        (KMeansSegmenter(n_clusters=2, random_state=0), 2),
    ],
    ids=["kmeans", "gmm", "kmeans-pca"],
)
def test_numpy_export_assigns_exactly_like_the_fitted_segmenter(
    segmenter: object, pca: int, tmp_path: Path
) -> None:
    frame = _frame(np.random.default_rng(1))
    pre = SegmentPreprocessor(
        numeric=("spend", "share"), categorical=("band",), pca_components=pca, random_state=0
    ).fit(frame)
    X = pre.transform(frame)
    fitted = clone(segmenter).fit(X)
    model = pre.export(
        version="seg-test",
        segment_ids=np.array([10, 20]),
        segment_names=("Light", "Heavy"),
        **fitted.export_geometry(),
    )
    loaded = SegmentModel.load(model.save(tmp_path / "model"))
    ids, probability = loaded.assign(
        frame[["spend", "share"]].to_numpy(), {"band": frame["band"].to_numpy(dtype=object)}
    )
    np.testing.assert_array_equal(ids, np.array([10, 20])[fitted.predict(X)])
    np.testing.assert_allclose(probability, fitted.predict_proba(X).max(axis=1), atol=1e-9)
    row = frame.iloc[0]
    one = loaded.assign_features(
        {"spend": row["spend"], "share": row["share"], "band": row["band"]}
    )
    assert one[0] == ids[0] and one[1] == loaded.name_of(ids[0])


def test_tampered_or_missing_model_files_are_refused(tmp_path: Path) -> None:
    frame = _frame(np.random.default_rng(2))
    pre = SegmentPreprocessor(numeric=("spend", "share")).fit(frame)
    fitted = KMeansSegmenter(n_clusters=2, random_state=0).fit(pre.transform(frame))
    directory = pre.export(version="v", **fitted.export_geometry()).save(tmp_path / "m")
    with pytest.raises(SegmentModelError, match="no segment model"):
        SegmentModel.load(tmp_path / "elsewhere")
    arrays = directory / "segment_model.npz"
    arrays.write_bytes(arrays.read_bytes()[:-10])
    with pytest.raises(SegmentModelError, match="checksum"):
        SegmentModel.load(directory)


def test_a_feature_nobody_has_weighs_nothing() -> None:
    frame = _frame(np.random.default_rng(3))
    frame["price_share"] = np.nan  # e.g. price bands in ratings-only data
    pre = SegmentPreprocessor(numeric=("spend", "share", "price_share")).fit(frame)
    assert pre.unobserved_ == ["price_share"]
    space = pre.transform(frame)
    assert np.isfinite(space).all() and (space[:, 2] == 0).all()
