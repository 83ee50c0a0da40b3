"""Feature preprocessing for segmentation: impute, log-transform, scale, encode, reduce.

Choices made per feature at ``fit`` (and recorded in ``choices_``):

- log1p when the feature is non-negative and right-skewed (skewness above
  ``skew_threshold``): spend, counts and durations, whose long tails would otherwise let a
  few customers dominate the distances;
- a robust scaler (median, IQR / 1.349) when more than ``outlier_share`` of values lie
  beyond 3 IQR of the quartiles after the transform, otherwise a standard scaler (mean,
  standard deviation); both give unit spread for a normal distribution, so the two kinds
  weigh alike in distances;
- scaled values clipped to +-``clip`` (5 by default), so a few extreme customers cannot
  pull a segment of their own;
- one-hot encoding for categorical features (unknown categories encode as zeros);
- optional PCA to ``pca_components`` dimensions.

The fitted state is exported as a :class:`segrec.segment_model.SegmentModel`, whose
numpy arithmetic is what ``transform`` runs, so serving reproduces it exactly.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import skew
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA

from segrec.segment_model import SegmentModel

IQR_TO_SIGMA = 1.349  # IQR of a standard normal distribution


class SegmentPreprocessor(TransformerMixin, BaseEstimator):
    """Turn a customer feature frame into the space segments are found in.

    Parameters
    ----------
    numeric : tuple of str
        Numeric feature columns, in order.
    categorical : tuple of str, default=()
        Categorical columns to one-hot encode.
    log : "auto" or tuple of str
        Which numeric features to log1p; "auto" decides by skewness.
    scaler : {"auto", "standard", "robust"}
        Per-feature scaler; "auto" picks robust for features with heavy outliers.
    clip : float, default=5.0
        Clip scaled values to this many spreads from the centre (0 = no clipping).
    pca_components : int, default=0
        Reduce to this many principal components (0 keeps all dimensions).
    random_state : int or None
        Seed for PCA's randomized solver.

    Examples
    --------
    >>> frame = pd.DataFrame({"spend": [0.0, 10.0, 1000.0, 5.0], "share": [.1, .2, .3, .4]})
    >>> pre = SegmentPreprocessor(numeric=("spend", "share")).fit(frame)
    >>> pre.transform(frame).shape
    (4, 2)
    """

    def __init__(
        self,
        *,
        numeric: tuple[str, ...] = (),
        categorical: tuple[str, ...] = (),
        log: Literal["auto"] | tuple[str, ...] = "auto",
        scaler: Literal["auto", "standard", "robust"] = "auto",
        skew_threshold: float = 1.0,
        outlier_share: float = 0.01,
        clip: float = 5.0,
        pca_components: int = 0,
        random_state: int | None = None,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.log = log
        self.scaler = scaler
        self.skew_threshold = skew_threshold
        self.outlier_share = outlier_share
        self.clip = clip
        self.pca_components = pca_components
        self.random_state = random_state

    def _numeric_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in (*self.numeric, *self.categorical) if c not in frame.columns]
        if missing:
            raise ValueError(f"segmentation features missing from the input: {missing}")
        return frame[list(self.numeric)].astype(np.float64).to_numpy()

    def fit(self, frame: pd.DataFrame, y: Any = None) -> SegmentPreprocessor:
        if not self.numeric:
            raise ValueError("SegmentPreprocessor needs at least one numeric feature")
        if self.scaler not in ("auto", "standard", "robust"):
            raise ValueError(f"scaler must be auto, standard or robust, not {self.scaler!r}")
        values = self._numeric_matrix(frame)
        observed = np.isfinite(values).any(axis=0)
        self.unobserved_ = [n for n, seen in zip(self.numeric, observed, strict=True) if not seen]
        # A feature nobody has (e.g. price bands in ratings-only data) fills with 0 and,
        # being constant, weighs nothing.
        fill = np.zeros(len(self.numeric))
        fill[observed] = np.nanmedian(values[:, observed], axis=0)
        filled = np.where(np.isfinite(values), values, fill)
        if self.log == "auto":
            logged = (filled.min(axis=0) >= 0) & (
                np.nan_to_num(skew(filled, axis=0)) > self.skew_threshold
            )
        else:
            unknown = set(self.log) - set(self.numeric)
            if unknown:
                raise ValueError(f"log features not among the numeric features: {sorted(unknown)}")
            logged = np.array([name in self.log for name in self.numeric])
        transformed = filled.copy()
        transformed[:, logged] = np.log1p(np.clip(transformed[:, logged], 0.0, None))
        q1, median, q3 = np.percentile(transformed, [25, 50, 75], axis=0)
        iqr = q3 - q1
        beyond = ((transformed < q1 - 3 * iqr) | (transformed > q3 + 3 * iqr)).mean(axis=0)
        if self.scaler == "auto":
            robust = (iqr > 0) & (beyond > self.outlier_share)
        else:
            robust = np.full(len(self.numeric), self.scaler == "robust") & (iqr > 0)
        std = transformed.std(axis=0)
        self.fill_values_ = fill
        self.log_features_ = logged
        self.center_ = np.where(robust, median, transformed.mean(axis=0))
        # A constant feature gets scale 1: it then contributes nothing instead of NaN.
        scale = np.where(robust, iqr / IQR_TO_SIGMA, std)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.categories_ = {
            name: tuple(sorted(frame[name].dropna().astype(str).unique()))
            for name in self.categorical
        }
        self.choices_ = {
            name: {"log": bool(logged[i]), "scaler": "robust" if robust[i] else "standard"}
            for i, name in enumerate(self.numeric)
        }
        self.pca_: PCA | None = None
        if self.pca_components:
            space = self._export(centroids=np.zeros((0, 0))).transform(
                values, self._categorical_arrays(frame)
            )
            self.pca_ = PCA(n_components=self.pca_components, random_state=self.random_state).fit(
                space
            )
        return self

    def _categorical_arrays(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        return {name: frame[name].astype(str).to_numpy(dtype=object) for name in self.categorical}

    def _export(self, centroids: np.ndarray, **kwargs: Any) -> SegmentModel:
        pca = getattr(self, "pca_", None)
        return SegmentModel(
            version=kwargs.pop("version", "unversioned"),
            feature_names=tuple(self.numeric),
            log_features=self.log_features_,
            fill_values=self.fill_values_,
            center=self.center_,
            scale=self.scale_,
            clip=self.clip,
            categorical=dict(self.categories_),
            pca_mean=None if pca is None else pca.mean_,
            pca_components=None if pca is None else pca.components_,
            centroids=centroids,
            segment_ids=kwargs.pop("segment_ids", np.zeros(len(centroids), dtype=np.int64)),
            segment_names=kwargs.pop("segment_names", ("",) * len(centroids)),
            **kwargs,
        )

    def export(self, centroids: np.ndarray, **kwargs: Any) -> SegmentModel:
        """The preprocessing plus the given segment geometry as a numpy-only model."""
        return self._export(centroids, **kwargs)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return self._export(centroids=np.zeros((0, 0))).transform(
            self._numeric_matrix(frame), self._categorical_arrays(frame)
        )
