"""How a cost grows with size: medians over repeats, and a power law fitted on log-log.

A cost that grows like ``c * n ** b`` is a straight line of slope ``b`` on log-log axes,
so ``b`` (the growth exponent) is the least-squares slope of log cost on log size: 1 is
linear, 2 quadratic, below 1 a cost with a large fixed part.

Examples
--------
>>> fit = fit_growth([1e3, 1e4, 1e5], [2e-3, 2e-2, 2e-1])
>>> round(fit.exponent, 6), round(fit.predict(1e6), 6)
(1.0, 2.0)
>>> round(fit.size_at(0.5))
250000
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def spread(samples: Sequence[float], digits: int = 4) -> dict[str, float | int]:
    """Median, min and max of repeated measurements (and how many there were)."""
    if not samples:
        raise ValueError("no samples to summarise")
    return {
        "median": round(float(statistics.median(samples)), digits),
        "min": round(float(min(samples)), digits),
        "max": round(float(max(samples)), digits),
        "runs": len(samples),
    }


@dataclass(frozen=True)
class GrowthFit:
    """``cost = coefficient * size ** exponent``, fitted on ``points`` sizes; ``r2`` is
    the share of log-cost variance the line explains."""

    exponent: float
    coefficient: float
    r2: float
    points: int

    def predict(self, size: float) -> float:
        return self.coefficient * size**self.exponent

    def size_at(self, cost: float) -> float:
        """The size at which the fitted cost reaches ``cost`` (inf when it never grows)."""
        if self.exponent <= 1e-9:
            return math.inf
        log_size = (math.log(cost) - math.log(self.coefficient)) / self.exponent
        return math.exp(log_size) if log_size < 700 else math.inf

    def as_dict(self) -> dict[str, float | int]:
        return {
            "exponent": round(self.exponent, 3),
            "coefficient": float(f"{self.coefficient:.6g}"),
            "r2": round(self.r2, 4),
            "points": self.points,
        }


def fit_growth(sizes: Sequence[float], costs: Sequence[float]) -> GrowthFit:
    """Least squares of log cost on log size over at least two distinct positive sizes."""
    size, cost = np.asarray(sizes, dtype=np.float64), np.asarray(costs, dtype=np.float64)
    if len(size) != len(cost):
        raise ValueError("one cost per size")
    if not ((size > 0) & np.isfinite(size) & (cost > 0) & np.isfinite(cost)).all():
        raise ValueError("sizes and costs must be positive")
    x, y = np.log(size), np.log(cost)
    if len(np.unique(x)) < 2:
        raise ValueError("a growth fit needs at least two distinct sizes")
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return GrowthFit(float(slope), float(np.exp(intercept)), r2, len(x))


def crossing(sizes: Sequence[float], costs: Sequence[float], budget: float) -> float:
    """The size at which cost reaches ``budget``, from the power law through the two
    measured sizes around it (the two largest when every cost is below it, the two smallest
    when every cost is above): a cost with a fixed part bends on log-log axes, so the
    local slope says more about where it crosses than one line through every point.

    >>> round(crossing([1e4, 1e5, 1e6], [1.0, 2.0, 20.0], 10.0))
    500000
    """
    order = np.argsort(np.asarray(sizes, dtype=np.float64))
    size = np.asarray(sizes, dtype=np.float64)[order]
    cost = np.asarray(costs, dtype=np.float64)[order]
    if len(size) < 2:
        raise ValueError("a crossing needs at least two sizes")
    above = np.flatnonzero(cost >= budget)
    right = int(np.clip(above[0] if len(above) else len(size) - 1, 1, len(size) - 1))
    pair = slice(right - 1, right + 1)
    return fit_growth(size[pair].tolist(), cost[pair].tolist()).size_at(budget)
