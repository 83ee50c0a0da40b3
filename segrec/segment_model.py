"""A fitted segmentation as plain arrays: assign customers to segments with numpy alone.

Training (``training/segmentation``) fits the preprocessing and the clusters and exports
them here; serving loads the same files and calls :meth:`SegmentModel.assign` at request
time. Training also transforms through :meth:`SegmentModel.transform`, so both sides share
one implementation of the arithmetic and cannot drift apart.

Files: ``segment_model.npz`` (arrays, loaded with ``allow_pickle=False``) and
``segment_model.json`` (names, version, metadata and the npz's sha256, checked on load).

Example
-------
>>> import numpy as np
>>> model = SegmentModel(
...     version="seg-001", feature_names=("spend",), log_features=np.array([True]),
...     fill_values=np.array([0.0]), center=np.array([2.0]), scale=np.array([1.0]),
...     centroids=np.array([[-1.0], [1.0]]), segment_ids=np.array([1, 2]),
...     segment_names=("Light", "Heavy"), softness=0.5)
>>> ids, probability = model.assign(np.array([[1.0], [200.0]]))
>>> ids.tolist()
[1, 2]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

ARRAYS_FILE = "segment_model.npz"
META_FILE = "segment_model.json"
UNASSIGNED = -1


class SegmentModelError(ValueError):
    """The exported model is missing, corrupted or inconsistent."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class SegmentModel:
    """Preprocessing + segment geometry + names, exported from a training run.

    ``kind="centroid"`` (K-Means, Ward): nearest centroid wins; membership probability is
    a softmax of ``-d² / (2 * softness)``, where ``softness`` is the mean within-segment
    variance per dimension. ``kind="gmm"``: the Gaussian mixture's own posterior.
    """

    version: str
    feature_names: tuple[str, ...]
    log_features: np.ndarray
    fill_values: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    centroids: np.ndarray
    segment_ids: np.ndarray
    segment_names: tuple[str, ...]
    softness: float = 1.0
    clip: float = 0.0  # scaled values beyond +-clip are clipped (0 = off)
    kind: Literal["centroid", "gmm"] = "centroid"
    categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    gmm_log_weights: np.ndarray | None = None
    gmm_precision_cholesky: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_segments(self) -> int:
        return len(self.segment_ids)

    def name_of(self, segment_id: int) -> str:
        matches = np.flatnonzero(self.segment_ids == segment_id)
        return self.segment_names[int(matches[0])] if len(matches) else "Unassigned"

    # ---- arithmetic shared by training and serving ---------------------------------
    def transform(
        self, numeric: np.ndarray, categorical: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Raw feature rows (n, features) in ``feature_names`` order -> the clustering space."""
        values = np.array(numeric, dtype=np.float64, ndmin=2, copy=True)
        if values.shape[1] != len(self.feature_names):
            raise SegmentModelError(
                f"expected {len(self.feature_names)} features {list(self.feature_names)}, "
                f"got {values.shape[1]} columns"
            )
        missing = ~np.isfinite(values)
        values[missing] = np.broadcast_to(self.fill_values, values.shape)[missing]
        logged = np.log1p(np.clip(values[:, self.log_features], 0.0, None))
        values[:, self.log_features] = logged
        scaled = (values - self.center) / self.scale
        if self.clip > 0:
            # A handful of extreme customers would otherwise pull a centroid of their own.
            scaled = np.clip(scaled, -self.clip, self.clip)
        blocks = [scaled]
        for name, categories in self.categorical.items():
            column = (categorical or {}).get(name)
            if column is None:
                raise SegmentModelError(f"categorical feature {name!r} is missing")
            labels = np.asarray(column, dtype=object).reshape(-1, 1)
            # Unknown categories encode as all zeros rather than failing a request.
            blocks.append((labels == np.array(categories, dtype=object)).astype(np.float64))
        space = np.hstack(blocks) if len(blocks) > 1 else scaled
        if self.pca_components is not None and self.pca_mean is not None:
            space = (space - self.pca_mean) @ self.pca_components.T
        return space

    def centroids_in_units(self) -> np.ndarray:
        """Segment centres mapped back to the original units of the numeric features."""
        space = self.centroids
        if self.pca_components is not None and self.pca_mean is not None:
            space = space @ self.pca_components + self.pca_mean
        values = space[:, : len(self.feature_names)] * self.scale + self.center
        values[:, self.log_features] = np.expm1(values[:, self.log_features])
        return values

    def log_likelihoods(self, space: np.ndarray) -> np.ndarray:
        """Unnormalised log membership scores (n, segments) in the clustering space."""
        if self.kind == "gmm":
            if self.gmm_precision_cholesky is None or self.gmm_log_weights is None:
                raise SegmentModelError("a gmm model needs weights and precision matrices")
            scores = np.empty((len(space), self.n_segments))
            for j in range(self.n_segments):
                chol = self.gmm_precision_cholesky[j]
                projected = (space - self.centroids[j]) @ chol
                log_det = np.log(np.diag(chol)).sum()
                scores[:, j] = (
                    self.gmm_log_weights[j]
                    + log_det
                    - 0.5 * np.einsum("ij,ij->i", projected, projected)
                    - 0.5 * space.shape[1] * np.log(2 * np.pi)
                )
            return scores
        squared = (
            np.einsum("ij,ij->i", space, space)[:, None]
            - 2.0 * space @ self.centroids.T
            + np.einsum("ij,ij->i", self.centroids, self.centroids)[None, :]
        )
        return -np.maximum(squared, 0.0) / (2.0 * self.softness)

    def assign_space(self, space: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(segment ids, membership probability, all probabilities) for transformed rows."""
        scores = self.log_likelihoods(space)
        scores = scores - scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        probabilities = weights / weights.sum(axis=1, keepdims=True)
        best = probabilities.argmax(axis=1)
        return self.segment_ids[best], probabilities[np.arange(len(best)), best], probabilities

    def assign(
        self, numeric: np.ndarray, categorical: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Segment id and membership probability for raw feature rows."""
        ids, probability, _ = self.assign_space(self.transform(numeric, categorical))
        return ids, probability

    def assign_features(self, features: dict[str, Any]) -> tuple[int, str, float]:
        """One customer from a feature mapping (as read online): id, name, probability.

        Missing numeric features use the training fill values, so a partial feature set
        still gets a segment."""
        row = np.array(
            [[_as_float(features.get(name)) for name in self.feature_names]], dtype=np.float64
        )
        categorical = {
            name: np.array([features.get(name) or ""], dtype=object) for name in self.categorical
        }
        ids, probability = self.assign(row, categorical)
        segment_id = int(ids[0])
        return segment_id, self.name_of(segment_id), float(probability[0])

    # ---- files ---------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "log_features": self.log_features.astype(bool),
            "fill_values": self.fill_values,
            "center": self.center,
            "scale": self.scale,
            "centroids": self.centroids,
            "segment_ids": self.segment_ids.astype(np.int64),
        }
        for name in ("pca_mean", "pca_components", "gmm_log_weights", "gmm_precision_cholesky"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        arrays_path = directory / ARRAYS_FILE
        with arrays_path.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        meta = {
            "version": self.version,
            "kind": self.kind,
            "feature_names": list(self.feature_names),
            "segment_names": list(self.segment_names),
            "softness": self.softness,
            "clip": self.clip,
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "arrays_sha256": _sha256(arrays_path),
            "metadata": self.metadata,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Path) -> SegmentModel:
        """Load and verify an exported model; any inconsistency raises SegmentModelError."""
        meta_path, arrays_path = directory / META_FILE, directory / ARRAYS_FILE
        if not meta_path.exists() or not arrays_path.exists():
            raise SegmentModelError(f"no segment model in {directory} (run make segments)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise SegmentModelError(f"{meta_path} is not valid JSON: {error}") from error
        if _sha256(arrays_path) != meta.get("arrays_sha256"):
            raise SegmentModelError(f"{arrays_path} does not match the checksum in {meta_path}")
        with np.load(arrays_path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        model = cls(
            version=meta["version"],
            kind=meta["kind"],
            feature_names=tuple(meta["feature_names"]),
            segment_names=tuple(meta["segment_names"]),
            softness=float(meta["softness"]),
            clip=float(meta.get("clip", 0.0)),
            categorical={k: tuple(v) for k, v in meta["categorical"].items()},
            metadata=meta.get("metadata", {}),
            log_features=arrays["log_features"],
            fill_values=arrays["fill_values"],
            center=arrays["center"],
            scale=arrays["scale"],
            centroids=arrays["centroids"],
            segment_ids=arrays["segment_ids"],
            pca_mean=arrays.get("pca_mean"),
            pca_components=arrays.get("pca_components"),
            gmm_log_weights=arrays.get("gmm_log_weights"),
            gmm_precision_cholesky=arrays.get("gmm_precision_cholesky"),
        )
        model.validate()
        return model

    def validate(self) -> None:
        n_features = len(self.feature_names)
        for name in ("log_features", "fill_values", "center", "scale"):
            if getattr(self, name).shape != (n_features,):
                raise SegmentModelError(
                    f"{name} has shape {getattr(self, name).shape}, expected ({n_features},)"
                )
        if len(self.segment_names) != len(self.segment_ids) or len(self.centroids) != len(
            self.segment_ids
        ):
            raise SegmentModelError("segment ids, names and centroids differ in count")
        if np.any(self.scale <= 0):
            raise SegmentModelError("scale must be positive")


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, str):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
