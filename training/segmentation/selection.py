"""Choosing the number of segments, and measuring how stable the segments are.

For every candidate k the configured segmenter is fitted and scored by stability,
silhouette (on a sample: it is quadratic in rows), Davies-Bouldin, Calinski-Harabasz and
inertia. Stability is the mean adjusted Rand index between the segmenter fitted on all
rows and refits on bootstrap half-samples, compared on an evaluation sample: segments that
reappear whenever the data is resampled are real structure, segments that do not are
artefacts of one fit (Ben-Hur et al. 2002, Lange et al. 2004).

The chosen k is the most stable one; candidates within ``stability_tolerance`` of the
most stable are tied, and the tie goes to the one with the best silhouette (then to the
fewer segments). Stability alone cannot break such ties: a coarse split that merges real
segments is as reproducible as the right one (von Luxburg 2010, "Clustering stability:
an overview"); on the synthetic data k = 3 and k = 6 are both above 0.97, and only the
silhouette tells them apart. Davies-Bouldin, Calinski-Harabasz and the inertia elbow (the
point furthest below the line joining the first and last inertia) are recorded beside it
as cross-checks, not votes: on overlapping customer data Calinski-Harabasz falls with k
almost always, and inertia always does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from tqdm import tqdm


@dataclass(frozen=True)
class KScore:
    k: int
    silhouette: float
    davies_bouldin: float
    calinski_harabasz: float
    inertia: float
    smallest_segment_share: float
    stability: float


@dataclass(frozen=True)
class KChoice:
    k: int
    scores: list[KScore]
    elbow_k: int
    rule: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "chosen_k": self.k,
            "elbow_k": self.elbow_k,
            "rule": self.rule,
            "candidates": [asdict(s) for s in self.scores],
        }


def _inertia(X: np.ndarray, labels: np.ndarray) -> float:
    total = 0.0
    for label in np.unique(labels):
        members = X[labels == label]
        total += float(((members - members.mean(axis=0)) ** 2).sum())
    return total


def elbow(ks: list[int], inertias: list[float]) -> int:
    """The k whose inertia lies furthest below the straight line from first to last."""
    if len(ks) < 3:
        return ks[0]
    x = np.asarray(ks, dtype=float)
    y = np.asarray(inertias, dtype=float)
    x = (x - x[0]) / (x[-1] - x[0])
    y = (y - y[-1]) / max(y[0] - y[-1], 1e-12)
    # The normalised line runs from (0, 1) to (1, 0): distance below it is 1 - x - y.
    return int(ks[int(np.argmax(1.0 - x - y))])


def score_k(
    X: np.ndarray,
    make: Callable[[int], Any],
    ks: range,
    *,
    sample_rows: int,
    stability_rounds: int,
    random_state: int,
    stability_tolerance: float = 0.01,
    progress: bool | None = None,
) -> KChoice:
    """Fit ``make(k)`` for each k in ``ks``, score it, and choose k."""
    if len(ks) == 0:
        raise ValueError("the range of k to try is empty (check segment_k_min/segment_k_max)")
    rng = np.random.default_rng(random_state)
    sample = rng.choice(len(X), size=min(sample_rows, len(X)), replace=False)
    # Stability refits see half of an evaluation sample (at most 5 x sample_rows rows).
    evaluation = rng.choice(len(X), size=min(5 * sample_rows, len(X)), replace=False)
    scores = []
    for k in tqdm(
        ks, desc="choosing k", unit="k", disable=None if progress is None else not progress
    ):
        fitted = make(k).fit(X)
        labels = fitted.labels_
        if len(np.unique(labels)) < 2:
            continue
        sample_labels = labels[sample]
        silhouette = (
            float(silhouette_score(X[sample], sample_labels))
            if len(np.unique(sample_labels)) > 1
            else -1.0
        )
        stability = bootstrap_stability(
            X[evaluation],
            functools.partial(make, k),
            fitted.predict(X[evaluation]),
            rounds=stability_rounds,
            sample_rows=max(len(evaluation) // 2, k),
            random_state=random_state + k,
        )
        scores.append(
            KScore(
                k=k,
                silhouette=round(silhouette, 4),
                davies_bouldin=round(float(davies_bouldin_score(X, labels)), 4),
                calinski_harabasz=round(float(calinski_harabasz_score(X, labels)), 2),
                inertia=round(_inertia(X, labels), 2),
                smallest_segment_share=round(float(np.bincount(labels).min() / len(labels)), 4),
                stability=stability.mean_ari,
            )
        )
    if not scores:
        raise ValueError("no candidate k produced two or more segments")
    most_stable = max(s.stability for s in scores)
    tied = [s for s in scores if s.stability >= most_stable - stability_tolerance]
    best = max(tied, key=lambda s: (s.silhouette, -s.k))
    return KChoice(
        k=best.k,
        scores=scores,
        elbow_k=elbow([s.k for s in scores], [s.inertia for s in scores]),
        rule=f"most stable k (bootstrap adjusted Rand; ties within {stability_tolerance} "
        "go to the best silhouette)",
    )


@dataclass(frozen=True)
class Stability:
    rounds: int
    mean_ari: float
    min_ari: float
    ari: list[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_stability(
    X: np.ndarray,
    make: Callable[[], Any],
    reference: np.ndarray,
    *,
    rounds: int,
    sample_rows: int,
    random_state: int,
) -> Stability:
    """Refit on ``rounds`` bootstrap samples (at most ``sample_rows`` rows each) and compare
    each refit's labels for every row with ``reference`` (adjusted Rand index)."""
    rng = np.random.default_rng(random_state)
    scores = []
    for _ in range(rounds):
        rows = rng.choice(len(X), size=min(sample_rows, len(X)), replace=True)
        refit = make().fit(X[rows])
        scores.append(round(float(adjusted_rand_score(reference, refit.predict(X))), 4))
    return Stability(
        rounds=rounds,
        mean_ari=round(float(np.mean(scores)), 4),
        min_ari=round(float(np.min(scores)), 4),
        ari=scores,
    )
