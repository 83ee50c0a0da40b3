"""Churn risk: the probability that a customer makes no purchase in the next N days.

:class:`ChurnModel` follows the scikit-learn estimator contract: keyword-only
hyperparameters stored unchanged, validation in ``fit``, which returns ``self``, learned
state in trailing-underscore attributes. Inside it a histogram gradient boosting
classifier (missing values handled natively: a customer without purchases has no
recency) is fitted on part of the customers and calibrated (isotonic by default) on the
rest, split by customer so that one customer's rows at several as-of times never sit on
both sides.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.utils.validation import check_is_fitted, check_random_state

SEED_RANGE = 2**31 - 1


def calibration_split(groups: np.ndarray, share: float, rng: np.random.RandomState) -> np.ndarray:
    """A boolean mask of rows held out for calibration: about ``share`` of the groups
    (customers), all rows of a held-out group together."""
    # Codes by hashing: np.isin on string ids compares every pair (minutes at 100k).
    codes, unique = pd.factorize(np.asarray(groups))
    held = np.zeros(len(unique), dtype=bool)
    held[rng.permutation(len(unique))[: max(1, round(share * len(unique)))]] = True
    return held[codes]


class ChurnModel(ClassifierMixin, BaseEstimator):
    """Calibrated gradient-boosted churn classifier on customer features.

    Parameters
    ----------
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization
        Passed to :class:`~sklearn.ensemble.HistGradientBoostingClassifier`.
    calibration : {"isotonic", "sigmoid", "none"}
        How probabilities are calibrated on the held-out customers.
    calibration_share : float
        Share of customers held out of the classifier's fit to calibrate it.
    random_state : int, RandomState or None
        Seeds the customer split and the classifier.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn.datasets import make_classification
    >>> x, y = make_classification(600, n_features=4, random_state=42)
    >>> model = ChurnModel(max_iter=20, random_state=0).fit(pd.DataFrame(x), y)
    >>> model.predict_proba(pd.DataFrame(x[:2])).shape
    (2, 2)
    """

    def __init__(
        self,
        *,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 40,
        l2_regularization: float = 1.0,
        calibration: Literal["isotonic", "sigmoid", "none"] = "isotonic",
        calibration_share: float = 0.25,
        random_state: Any = None,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.calibration = calibration
        self.calibration_share = calibration_share
        self.random_state = random_state

    def fit(self, x: pd.DataFrame, y: Any, groups: Any = None) -> ChurnModel:
        """Fit on features ``x`` and labels ``y`` (1 = churned); ``groups`` (customer ids,
        default: one group per row) keep a customer's rows on one side of the split."""
        if self.calibration not in ("isotonic", "sigmoid", "none"):
            raise ValueError(f"calibration must be isotonic, sigmoid or none: {self.calibration!r}")
        if not 0 < self.calibration_share < 1:
            raise ValueError(f"calibration_share must be in (0, 1): {self.calibration_share}")
        frame = pd.DataFrame(x).reset_index(drop=True)
        labels = np.asarray(y).astype(np.int64)
        if len(frame) != len(labels):
            raise ValueError(f"x has {len(frame)} rows, y {len(labels)}")
        if set(np.unique(labels)) != {0, 1}:
            raise ValueError("churn labels need both classes (0 = bought again, 1 = churned)")
        rng = check_random_state(self.random_state)
        keys = np.arange(len(frame)) if groups is None else np.asarray(groups)
        held = (
            calibration_split(keys, self.calibration_share, rng)
            if self.calibration != "none"
            else np.zeros(len(frame), dtype=bool)
        )
        self.feature_names_ = list(frame.columns)
        self.classes_ = np.array([0, 1])
        self.base_rate_ = float(labels.mean())
        self.classifier_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=False,
            random_state=int(rng.randint(SEED_RANGE)),
        ).fit(frame[~held], labels[~held])
        self.calibrator_: CalibratedClassifierCV | None = None
        if held.any():
            if len(np.unique(labels[held])) < 2:
                raise ValueError("the calibration customers hold one class only; use more data")
            self.calibrator_ = CalibratedClassifierCV(
                FrozenEstimator(self.classifier_), method=self.calibration
            ).fit(frame[held], labels[held])
        self.n_fit_rows_ = int((~held).sum())
        self.n_calibration_rows_ = int(held.sum())
        return self

    def _frame(self, x: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "classifier_")
        frame = pd.DataFrame(x)
        absent = [c for c in self.feature_names_ if c not in frame]
        if absent:
            raise ValueError(f"features missing: {', '.join(absent)}")
        return frame[self.feature_names_]

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities, columns (bought again, churned)."""
        frame = self._frame(x)
        model = self.calibrator_ if self.calibrator_ is not None else self.classifier_
        return np.asarray(model.predict_proba(frame))

    def predict_proba_uncalibrated(self, x: pd.DataFrame) -> np.ndarray:
        """The classifier's own probabilities, before calibration (for the report)."""
        return np.asarray(self.classifier_.predict_proba(self._frame(x)))

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(x)[:, 1] >= 0.5).astype(np.int64)


def churn_metrics(
    y: np.ndarray, risk: np.ndarray, risk_uncalibrated: np.ndarray, base_rate: float
) -> dict[str, Any]:
    """Ranking (ROC-AUC, PR-AUC = average precision) and probability quality (Brier score,
    before and after calibration, and of predicting the training base rate for everyone)."""
    y = np.asarray(y).astype(np.int64)
    return {
        "rows": len(y),
        "base_rate": round(float(y.mean()), 4),
        "roc_auc": round(float(roc_auc_score(y, risk)), 4),
        "roc_auc_uncalibrated": round(float(roc_auc_score(y, risk_uncalibrated)), 4),
        "pr_auc": round(float(average_precision_score(y, risk)), 4),
        "pr_auc_uncalibrated": round(float(average_precision_score(y, risk_uncalibrated)), 4),
        "brier_uncalibrated": round(float(brier_score_loss(y, risk_uncalibrated)), 5),
        "brier_calibrated": round(float(brier_score_loss(y, risk)), 5),
        "brier_base_rate": round(float(brier_score_loss(y, np.full(len(y), base_rate))), 5),
        "mean_risk": round(float(np.mean(risk)), 4),
    }


def ranking_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """ROC-AUC and PR-AUC of any score (only its order matters), for baselines."""
    y = np.asarray(y).astype(np.int64)
    return {
        "roc_auc": round(float(roc_auc_score(y, score)), 4),
        "pr_auc": round(float(average_precision_score(y, score)), 4),
    }


def recency_baseline(days_since_purchase: np.ndarray) -> np.ndarray:
    """The rule a marketer would use without a model: the longer since the last purchase,
    the likelier the churn (never bought = longest). Only its ranking is scored."""
    days = np.asarray(days_since_purchase, dtype=np.float64)
    longest = np.nanmax(days) if np.isfinite(days).any() else 0.0
    return np.where(np.isnan(days), longest + 1.0, days)
