"""Outlier flags: values are flagged for models to weigh or ignore, never deleted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MAD_TO_SIGMA = 1.4826  # makes the MAD a consistent estimate of sigma for normal data


@dataclass(frozen=True)
class OutlierFences:
    """Fences on a (log-)scale learned from data: IQR fences and robust z-score limits."""

    low: float
    high: float
    median: float
    mad: float
    z_limit: float
    log_scale: bool

    def flags(self, values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(outside the IQR fences, beyond the robust z limit) for each value; NaN is neither."""
        x = np.asarray(values, dtype=float)
        x = np.log(x) if self.log_scale else x
        with np.errstate(invalid="ignore", divide="ignore"):
            iqr = (x < self.low) | (x > self.high)
            z = np.abs(x - self.median) / (MAD_TO_SIGMA * self.mad) if self.mad > 0 else x * 0
            beyond = z > self.z_limit
        return iqr & ~np.isnan(x), beyond & ~np.isnan(x)

    def describe(self) -> dict[str, float | bool]:
        to_units = np.exp if self.log_scale else (lambda v: v)
        return {
            "iqr_fence_low": round(float(to_units(self.low)), 4),
            "iqr_fence_high": round(float(to_units(self.high)), 4),
            "robust_z_limit": self.z_limit,
            "log_scale": self.log_scale,
        }


def fit_fences(
    values: pd.Series | np.ndarray,
    *,
    iqr_k: float,
    z_limit: float,
    log_scale: bool,
    min_half_width: float = 0.0,
) -> OutlierFences:
    """Learn fences from the non-missing values (positive values only on a log scale).

    ``min_half_width`` keeps the fences at least that far from the median (on the fitted
    scale): when most values are identical (an event price equal to list price) the
    spread is tiny and ordinary variation (a 30% discount) would otherwise be flagged.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if log_scale:
        x = np.log(x[x > 0])
    if len(x) == 0:
        return OutlierFences(-np.inf, np.inf, 0.0, 0.0, z_limit, log_scale)
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    iqr = q3 - q1
    mad = float(np.median(np.abs(x - median)))
    if mad == 0:
        # Mostly-constant data (quantity 1 in most orders): both spreads collapse to zero
        # and would flag every other value, so fall back to the mean absolute deviation.
        mean_ad = float(np.mean(np.abs(x - median)))
        mad = mean_ad / MAD_TO_SIGMA * 1.2533
        iqr = max(iqr, 1.349 * mean_ad * 1.2533)
    low = min(q1 - iqr_k * iqr, median - min_half_width)
    high = max(q3 + iqr_k * iqr, median + min_half_width)
    mad = max(mad, min_half_width / (z_limit * MAD_TO_SIGMA))
    return OutlierFences(low, high, median, mad, z_limit, log_scale)


def flag_outliers(fences: OutlierFences, values: pd.Series | np.ndarray) -> np.ndarray:
    """Flag values that both rules call outliers: IQR alone over-flags skewed counts, z alone
    is fooled by heavy tails, and a value both reject is worth a person's look."""
    iqr, beyond = fences.flags(values)
    return iqr & beyond
