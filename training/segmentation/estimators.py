"""Clustering algorithms behind one segmenter interface (scikit-learn contract).

Every segmenter: keyword-only hyperparameters stored unchanged; ``fit(X)`` returns
``self`` and leaves ``labels_``, ``cluster_centers_`` and ``n_clusters_``;
``predict(X)`` and ``predict_proba(X)`` work on new rows; ``export_geometry()`` returns
what :class:`segrec.segment_model.SegmentModel` needs to assign with numpy alone.

- :class:`KMeansSegmenter`: the default; mini-batch above ``minibatch_rows``; supports
  ``partial_fit`` for updates between full retrains.
- :class:`GaussianMixtureSegmenter`: soft memberships from a Gaussian mixture.
- :class:`WardSegmenter`: agglomerative (Ward) on a sample, then nearest centroid.
- :class:`DensityOutlierDetector`: HDBSCAN on a sample; flags customers far from every
  dense region (label -1). Used to report outliers, not to define segments.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans, MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin_min
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_array, check_is_fitted, check_random_state


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(axis=1, keepdims=True)


def _squared_distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    squared = (
        np.einsum("ij,ij->i", X, X)[:, None]
        - 2.0 * X @ centers.T
        + np.einsum("ij,ij->i", centers, centers)[None, :]
    )
    return np.maximum(squared, 0.0)


class CentroidSegmenter(ClusterMixin, BaseEstimator):
    """Shared behaviour of segmenters whose segments are centroids (nearest wins)."""

    cluster_centers_: np.ndarray
    softness_: float

    def _set_softness(self, X: np.ndarray, labels: np.ndarray) -> None:
        # Mean within-segment variance per dimension: the softmax temperature that turns
        # distances into membership probabilities comparable across data sets.
        within = ((X - self.cluster_centers_[labels]) ** 2).sum() / max(X.size, 1)
        self.softness_ = float(max(within, 1e-9))

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "cluster_centers_")
        X = check_array(X)
        return _squared_distances(X, self.cluster_centers_).argmin(axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "cluster_centers_")
        X = check_array(X)
        return _softmax_rows(-_squared_distances(X, self.cluster_centers_) / (2 * self.softness_))

    def export_geometry(self) -> dict[str, Any]:
        check_is_fitted(self, "cluster_centers_")
        return {"kind": "centroid", "centroids": self.cluster_centers_, "softness": self.softness_}


class KMeansSegmenter(CentroidSegmenter):
    """K-Means segments; MiniBatchKMeans when there are more than ``minibatch_rows`` rows.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> X, _ = make_blobs(200, centers=3, random_state=42)
    >>> KMeansSegmenter(n_clusters=3, random_state=0).fit(X).n_clusters_
    3
    """

    def __init__(
        self,
        *,
        n_clusters: int = 6,
        n_init: int = 10,
        minibatch_rows: int = 200_000,
        batch_size: int = 4096,
        random_state: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.minibatch_rows = minibatch_rows
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None) -> KMeansSegmenter:
        X = check_array(X)
        if self.n_clusters < 2 or self.n_clusters > len(X):
            raise ValueError(f"n_clusters={self.n_clusters} must be in 2..{len(X)} (rows)")
        model: KMeans | MiniBatchKMeans
        if len(X) > self.minibatch_rows:
            model = MiniBatchKMeans(
                n_clusters=self.n_clusters,
                n_init=self.n_init,
                batch_size=self.batch_size,
                random_state=self.random_state,
            )
        else:
            model = KMeans(
                n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.random_state
            )
        model.fit(X)
        self.cluster_centers_ = model.cluster_centers_
        self.labels_ = self.predict(X)
        self.inertia_ = float(((X - self.cluster_centers_[self.labels_]) ** 2).sum())
        self.n_clusters_ = self.n_clusters
        self.counts_ = np.bincount(self.labels_, minlength=self.n_clusters).astype(np.float64)
        self.minibatch_ = isinstance(model, MiniBatchKMeans)
        self._set_softness(X, self.labels_)
        return self

    def partial_fit(self, X: np.ndarray, y: Any = None) -> KMeansSegmenter:
        """Move the centroids towards new rows, weighting by how many rows each has seen
        (the mini-batch K-Means update), without refitting from scratch."""
        check_is_fitted(self, "cluster_centers_")
        X = check_array(X)
        labels = self.predict(X)
        centers = self.cluster_centers_.copy()
        counts = self.counts_.copy()
        for j in range(self.n_clusters_):
            members = X[labels == j]
            if len(members) == 0:
                continue
            counts[j] += len(members)
            step = len(members) / counts[j]
            centers[j] = (1 - step) * centers[j] + step * members.mean(axis=0)
        self.cluster_centers_ = centers
        self.counts_ = counts
        self.labels_ = self.predict(X)
        self._set_softness(X, self.labels_)
        return self


class WardSegmenter(CentroidSegmenter):
    """Agglomerative (Ward) clustering of a random sample; other rows join the nearest
    centroid. Ward needs memory quadratic in the rows, hence the sample."""

    def __init__(
        self, *, n_clusters: int = 6, sample_rows: int = 10_000, random_state: int | None = None
    ) -> None:
        self.n_clusters = n_clusters
        self.sample_rows = sample_rows
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None) -> WardSegmenter:
        X = check_array(X)
        if self.n_clusters < 2 or self.n_clusters > len(X):
            raise ValueError(f"n_clusters={self.n_clusters} must be in 2..{len(X)} (rows)")
        rng = check_random_state(self.random_state)
        rows = rng.choice(len(X), size=min(self.sample_rows, len(X)), replace=False)
        sample_labels = AgglomerativeClustering(n_clusters=self.n_clusters).fit_predict(X[rows])
        self.cluster_centers_ = np.vstack(
            [X[rows][sample_labels == j].mean(axis=0) for j in range(self.n_clusters)]
        )
        self.labels_ = self.predict(X)
        self.n_clusters_ = self.n_clusters
        self._set_softness(X, self.labels_)
        return self


class GaussianMixtureSegmenter(ClusterMixin, BaseEstimator):
    """Gaussian mixture segments with soft memberships (initialised from K-Means)."""

    def __init__(
        self,
        *,
        n_clusters: int = 6,
        covariance_type: Literal["full", "diag", "tied"] = "diag",
        reg_covar: float = 1e-3,
        max_iter: int = 200,
        random_state: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None) -> GaussianMixtureSegmenter:
        X = check_array(X)
        if self.n_clusters < 2 or self.n_clusters > len(X):
            raise ValueError(f"n_clusters={self.n_clusters} must be in 2..{len(X)} (rows)")
        self.mixture_ = GaussianMixture(
            n_components=self.n_clusters,
            covariance_type=self.covariance_type,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            init_params="k-means++",
            random_state=self.random_state,
        ).fit(X)
        self.cluster_centers_ = self.mixture_.means_
        self.labels_ = self.mixture_.predict(X)
        self.n_clusters_ = self.n_clusters
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "mixture_")
        return self.mixture_.predict(check_array(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "mixture_")
        return self.mixture_.predict_proba(check_array(X))

    def export_geometry(self) -> dict[str, Any]:
        check_is_fitted(self, "mixture_")
        k, d = self.cluster_centers_.shape
        chol = self.mixture_.precisions_cholesky_
        if self.covariance_type == "diag":
            full = np.stack([np.diag(row) for row in chol])
        elif self.covariance_type == "tied":
            full = np.broadcast_to(chol, (k, d, d)).copy()
        else:
            full = chol
        return {
            "kind": "gmm",
            "centroids": self.cluster_centers_,
            "gmm_log_weights": np.log(self.mixture_.weights_),
            "gmm_precision_cholesky": full,
        }


class DensityOutlierDetector(ClusterMixin, BaseEstimator):
    """Customers far from everyone, with HDBSCAN's dense regions as labels.

    On a sample: HDBSCAN finds the dense regions, and each sample point's distance to its
    ``neighbours``-th nearest neighbour measures how crowded its surroundings are. A row
    is an outlier (-1) when its own such distance (to the sample) exceeds the
    ``radius_quantile`` of the sample's; otherwise it gets the label of the nearest
    point of a dense region. (HDBSCAN's noise label alone marks about half of a sparse,
    12-dimensional customer sample, which is not what "outlier" should mean.)
    """

    def __init__(
        self,
        *,
        min_cluster_size: int = 50,
        sample_rows: int = 10_000,
        neighbours: int = 5,
        radius_quantile: float = 0.99,
        random_state: int | None = None,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.sample_rows = sample_rows
        self.neighbours = neighbours
        self.radius_quantile = radius_quantile
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None) -> DensityOutlierDetector:
        X = check_array(X)
        rng = check_random_state(self.random_state)
        rows = rng.choice(len(X), size=min(self.sample_rows, len(X)), replace=False)
        sample = X[rows]
        labels = HDBSCAN(min_cluster_size=self.min_cluster_size, copy=True).fit_predict(sample)
        clustered = labels >= 0
        if not clustered.any():
            raise ValueError("HDBSCAN found no dense region; lower min_cluster_size")
        self.core_points_ = sample[clustered]
        self.core_labels_ = labels[clustered]
        self.sample_index_ = NearestNeighbors(n_neighbors=min(self.neighbours + 1, len(sample)))
        self.sample_index_.fit(sample)
        # +1: each sample point is its own nearest neighbour.
        own = self.sample_index_.kneighbors(sample)[0][:, -1]
        self.threshold_ = float(np.quantile(own, self.radius_quantile))
        self.n_clusters_ = int(labels.max() + 1)
        self.labels_ = self.predict(X)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "core_points_")
        X = check_array(X)
        crowd = self.sample_index_.kneighbors(X, n_neighbors=self.neighbours)[0][:, -1]
        nearest, _ = pairwise_distances_argmin_min(X, self.core_points_)
        return np.where(crowd <= self.threshold_, self.core_labels_[nearest], -1)


SEGMENTERS: dict[str, type[ClusterMixin]] = {
    "kmeans": KMeansSegmenter,
    "gmm": GaussianMixtureSegmenter,
    "ward": WardSegmenter,
}


def make_segmenter(
    algorithm: str, n_clusters: int, *, random_state: int, sample_rows: int, minibatch_rows: int
) -> Any:
    """The configured segmenter with the settings' sizes."""
    if algorithm == "kmeans":
        return KMeansSegmenter(
            n_clusters=n_clusters, minibatch_rows=minibatch_rows, random_state=random_state
        )
    if algorithm == "gmm":
        return GaussianMixtureSegmenter(n_clusters=n_clusters, random_state=random_state)
    if algorithm == "ward":
        return WardSegmenter(
            n_clusters=n_clusters, sample_rows=sample_rows, random_state=random_state
        )
    raise ValueError(f"unknown segment algorithm {algorithm!r}; use one of {sorted(SEGMENTERS)}")
