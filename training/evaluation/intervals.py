"""Bootstrap confidence intervals for per-customer metrics.

Customers are the unit of resampling: a bootstrap sample draws ``n`` customers with
replacement and takes the mean. For two models evaluated on the same customers,
:func:`paired_bootstrap` resamples customers (not the two arrays independently), so the
customer-to-customer variation both models share cancels out and the interval of the
difference is much narrower than two separate intervals suggest.

Intervals are percentile intervals: the ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` quantiles of the bootstrap means. Seeded: the same inputs,
``n_boot`` and ``random_state`` give the same interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# Bootstrap index draws are made in chunks of about this many elements (~32 MB of int64).
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class BootstrapInterval:
    """A mean (or mean difference) with its bootstrap percentile interval.

    Attributes
    ----------
    estimate : float
        The mean on the full sample (for a paired comparison, ``mean(a - b)``).
    low, high : float
        The percentile interval's bounds.
    share_above_zero : float
        Share of bootstrap means that are > 0: for a difference, how often the first
        model came out ahead (near 1 or 0 = a consistent winner).
    confidence : float
    n_boot : int
    n : int
        Number of customers used (pairs with a NaN on either side are left out).
    """

    estimate: float
    low: float
    high: float
    share_above_zero: float
    confidence: float
    n_boot: int
    n: int

    def excludes_zero(self) -> bool:
        """Whether 0 lies outside ``[low, high]`` (a clear difference at ``confidence``)."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def bootstrap_ci(
    values: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = None,
) -> BootstrapInterval:
    """Percentile bootstrap interval for the mean of one per-customer metric array.

    NaN values (customers where the metric is undefined) are left out.

    Examples
    --------
    >>> ci = bootstrap_ci([0.0, 1.0] * 50, n_boot=500, random_state=0)
    >>> ci.estimate, ci.low < 0.5 < ci.high, ci.n
    (0.5, True, 100)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    return _bootstrap(x[~np.isnan(x)], n_boot, confidence, random_state)


def paired_bootstrap(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = None,
) -> BootstrapInterval:
    """Paired percentile bootstrap of ``mean(a) - mean(b)`` over the same customers.

    ``a[i]`` and ``b[i]`` are one customer's metric under two models (e.g. the blend and
    one single model). Each bootstrap sample resamples customers and takes the mean of
    ``a - b`` over them. Customers with NaN in either array are left out of both.

    Returns
    -------
    BootstrapInterval
        ``estimate`` = mean difference, ``low``/``high`` its interval,
        ``share_above_zero`` = share of bootstrap differences > 0.

    Examples
    --------
    >>> a = np.array([0.5, 0.6, 0.7, 0.8])
    >>> ci = paired_bootstrap(a, a - 0.1, n_boot=200, random_state=0)
    >>> round(ci.estimate, 6), round(ci.low, 6), round(ci.high, 6), ci.share_above_zero
    (0.1, 0.1, 0.1, 1.0)
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in length: {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return _bootstrap(x[keep] - y[keep], n_boot, confidence, random_state)


def _bootstrap(
    x: np.ndarray,
    n_boot: int,
    confidence: float,
    random_state: int | np.random.Generator | None,
) -> BootstrapInterval:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = x.size
    if n == 0:
        raise ValueError("no values to bootstrap (empty, or all NaN)")
    rng = np.random.default_rng(random_state)
    means = np.empty(n_boot)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return BootstrapInterval(
        estimate=float(x.mean()),
        low=float(low),
        high=float(high),
        share_above_zero=float((means > 0).mean()),
        confidence=confidence,
        n_boot=n_boot,
        n=n,
    )
