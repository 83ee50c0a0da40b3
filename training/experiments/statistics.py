"""The tests behind the A/B report: proportions, rates clustered by customer, a bootstrap
for revenue, and the sample-ratio-mismatch check.

Why customers, not exposures
----------------------------
Experiments randomise *customers* (a salted hash of the pseudonymous id), and one
customer sees many carousels. Those exposures are not independent: a customer who likes
the shop clicks on most of them. Treating each exposure as an independent trial
understates the variance and flags differences that are not there (the A/A test in
``tests/test_ab_report.py`` shows how often). So every test here has the customer as its
unit:

- :func:`two_proportion_ztest` on *customers* (the share of customers who clicked,
  carted or bought at least once): one independent Bernoulli trial per customer, the
  textbook test is exact in its assumptions.
- :func:`clustered_rate_test` for per-*exposure* rates (click-through, add-to-cart and
  conversion per exposure): the rate is a ratio of per-customer sums, its variance comes
  from the customers' residuals (the delta method; Deng et al., "Applying the Delta
  Method in Metric Analytics", KDD 2018). With one exposure per customer it is the
  unpooled two-proportion z-test (up to the ``k / (k - 1)`` small-sample factor).
- :func:`bootstrap_ratio_difference` for revenue per exposure and per customer: revenue
  is heavy-tailed (a few big baskets), so instead of a normal approximation customers are
  resampled with replacement within each variant (a customer-clustered bootstrap), all of
  a customer's exposures and revenue moving together. Seeded.

Differences are always *treatment minus control*. Intervals are two-sided at
``confidence``; p-values two-sided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

# Bootstrap index draws are made in chunks of about this many elements (~32 MB of int64).
_CHUNK_ELEMENTS = 1 << 22
# Sample-ratio mismatch is judged strictly: the check runs on every report and a false
# alarm discards an experiment, while a real mismatch shows up as a tiny p-value anyway.
SRM_THRESHOLD = 1e-3


@dataclass(frozen=True)
class Comparison:
    """A treatment-minus-control difference, its interval and its two-sided p-value.

    Attributes
    ----------
    control, treatment : float
        The metric in each group.
    difference : float
        ``treatment - control``.
    low, high : float
        The interval of the difference at ``confidence``.
    p_value : float
        Two-sided, for "no difference". NaN when a group is empty.
    n_control, n_treatment : int
        Units (customers) in each group.
    method : str
        Which test made it (see the module docstring).
    """

    control: float
    treatment: float
    difference: float
    low: float
    high: float
    p_value: float
    n_control: int
    n_treatment: int
    confidence: float
    method: str

    @property
    def relative_lift(self) -> float:
        """``difference / control`` (NaN when the control is 0)."""
        return self.difference / self.control if self.control else math.nan

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the p-value is below ``alpha`` (False when it is undefined)."""
        return bool(self.p_value < alpha)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN stays NaN; the report writer turns it into null)."""
        return {**asdict(self), "relative_lift": self.relative_lift}


@dataclass(frozen=True)
class Estimate:
    """One group's metric with its interval."""

    estimate: float
    low: float
    high: float
    n: int  # customers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square goodness of fit of the customers per variant against the configured
    shares. ``mismatch`` means the split is not what assignment should produce: the
    comparison is then suspect (a variant crashing, filtering or logging differently)."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    dof: int
    p_value: float
    threshold: float

    @property
    def mismatch(self) -> bool:
        return bool(self.p_value < self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mismatch": self.mismatch}


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _two_sided(z: float) -> float:
    return float(2 * stats.norm.sf(abs(z)))


def _p_from_se(difference: float, se: float) -> float:
    if se > 0:
        return _two_sided(difference / se)
    # No variation at all (every unit alike in both groups): equal means no evidence,
    # unequal means the groups differ with certainty.
    return 1.0 if difference == 0 else 0.0


def two_proportion_ztest(
    successes_control: int,
    n_control: int,
    successes_treatment: int,
    n_treatment: int,
    *,
    confidence: float = 0.95,
) -> Comparison:
    """Two-proportion z-test of ``x_t / n_t`` against ``x_c / n_c`` (independent trials).

    The test statistic uses the pooled proportion (the variance under the null
    hypothesis); the interval of the difference uses each group's own variance (Wald).

    Examples
    --------
    >>> r = two_proportion_ztest(100, 1000, 130, 1000)
    >>> round(r.difference, 3), round(r.p_value, 4)
    (0.03, 0.0355)
    """
    for name, x, n in (
        ("control", successes_control, n_control),
        ("treatment", successes_treatment, n_treatment),
    ):
        if n < 0 or x < 0 or x > n:
            raise ValueError(f"{name}: need 0 <= successes <= trials, got {x} of {n}")
    z_crit = _z(confidence)
    if n_control == 0 or n_treatment == 0:
        nan = math.nan
        p_c = successes_control / n_control if n_control else nan
        p_t = successes_treatment / n_treatment if n_treatment else nan
        return Comparison(
            p_c, p_t, p_t - p_c, nan, nan, nan, n_control, n_treatment, confidence, "z-test"
        )
    p_c = successes_control / n_control
    p_t = successes_treatment / n_treatment
    pooled = (successes_control + successes_treatment) / (n_control + n_treatment)
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    se = math.sqrt(p_c * (1 - p_c) / n_control + p_t * (1 - p_t) / n_treatment)
    difference = p_t - p_c
    return Comparison(
        control=p_c,
        treatment=p_t,
        difference=difference,
        low=difference - z_crit * se,
        high=difference + z_crit * se,
        p_value=_p_from_se(difference, se_null),
        n_control=n_control,
        n_treatment=n_treatment,
        confidence=confidence,
        method="two-proportion z-test on customers",
    )


def _ratio_and_variance(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """``sum(y) / sum(n)`` and its delta-method variance with customers as clusters."""
    k = len(numerator)
    total = float(denominator.sum())
    if k == 0 or total == 0:
        return math.nan, math.nan
    ratio = float(numerator.sum()) / total
    if k == 1:
        return ratio, math.nan
    residual = numerator - ratio * denominator
    # k / (k - 1): the small-sample correction of cluster-robust variances.
    variance = float((residual**2).sum()) / total**2 * k / (k - 1)
    return ratio, variance


def _as_arrays(*values: npt.ArrayLike) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    return arrays


def rate_interval(
    successes: npt.ArrayLike, trials: npt.ArrayLike, *, confidence: float = 0.95
) -> Estimate:
    """One group's ``sum(successes) / sum(trials)`` with a customer-clustered normal
    interval (``successes[i]``, ``trials[i]``: customer ``i``'s counts)."""
    y, n = _as_arrays(successes, trials)
    if len(y) != len(n):
        raise ValueError(f"successes ({len(y)}) and trials ({len(n)}) differ in length")
    ratio, variance = _ratio_and_variance(y, n)
    half = _z(confidence) * math.sqrt(variance) if variance == variance else math.nan
    return Estimate(ratio, ratio - half, ratio + half, len(y))


def clustered_rate_test(
    successes_control: npt.ArrayLike,
    trials_control: npt.ArrayLike,
    successes_treatment: npt.ArrayLike,
    trials_treatment: npt.ArrayLike,
    *,
    confidence: float = 0.95,
) -> Comparison:
    """z-test of a per-exposure rate between two groups of customers.

    Each array holds one value per customer: how many of their exposures succeeded
    (clicked, converted...) and how many exposures they had. The rate is
    ``sum(successes) / sum(trials)``; its variance is the delta-method (cluster-robust)
    variance over customers, so correlated exposures of one customer count as one unit.

    Examples
    --------
    One exposure per customer gives the unpooled z-test (with ``k - 1`` for ``k``):

    >>> r = clustered_rate_test([1] * 10 + [0] * 90, [1] * 100, [1] * 20 + [0] * 80, [1] * 100)
    >>> round(r.difference, 2), round(r.p_value, 3)
    (0.1, 0.047)
    """
    y_c, n_c, y_t, n_t = _as_arrays(
        successes_control, trials_control, successes_treatment, trials_treatment
    )
    if len(y_c) != len(n_c) or len(y_t) != len(n_t):
        raise ValueError("each group needs as many trial counts as success counts")
    r_c, v_c = _ratio_and_variance(y_c, n_c)
    r_t, v_t = _ratio_and_variance(y_t, n_t)
    difference = r_t - r_c
    se = math.sqrt(v_c + v_t) if v_c == v_c and v_t == v_t else math.nan
    half = _z(confidence) * se
    p_value = _p_from_se(difference, se) if se == se else math.nan
    return Comparison(
        control=r_c,
        treatment=r_t,
        difference=difference,
        low=difference - half,
        high=difference + half,
        p_value=p_value,
        n_control=len(y_c),
        n_treatment=len(y_t),
        confidence=confidence,
        method="z-test, customer-clustered (delta method)",
    )


def _bootstrap_ratios(
    numerator: np.ndarray, denominator: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_boot`` ratios ``sum(num) / sum(den)`` over customers resampled with replacement;
    NaN for a resample whose denominators sum to 0 (it has no ratio; quantiles skip it)."""
    k = len(numerator)
    out = np.empty(n_boot)
    chunk = max(1, _CHUNK_ELEMENTS // max(k, 1))
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        index = rng.integers(0, k, size=(rows, k))
        below = denominator[index].sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + rows] = np.where(
                below != 0, numerator[index].sum(1) / below, np.nan
            )
    return out


def _rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def bootstrap_ratio_interval(
    numerator: npt.ArrayLike,
    denominator: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = None,
) -> Estimate:
    """One group's ``sum(numerator) / sum(denominator)`` (e.g. revenue per exposure) with
    a customer-resampling percentile interval."""
    num, den = _as_arrays(numerator, denominator)
    if len(num) == 0 or den.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, len(num))
    estimate = float(num.sum() / den.sum())
    if n_boot < 1:
        return Estimate(estimate, math.nan, math.nan, len(num))
    draws = _bootstrap_ratios(num, den, n_boot, _rng(random_state))
    low, high = np.nanquantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Estimate(estimate, float(low), float(high), len(num))


def bootstrap_ratio_difference(
    numerator_control: npt.ArrayLike,
    denominator_control: npt.ArrayLike,
    numerator_treatment: npt.ArrayLike,
    denominator_treatment: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = None,
) -> Comparison:
    """Customer-clustered bootstrap of a ratio metric's difference between two groups.

    One value per customer in each array: revenue per exposure is ``numerator`` = the
    customer's revenue and ``denominator`` = their exposures; revenue per customer has a
    denominator of ones. Customers are resampled with replacement within each group; the
    interval is the percentile interval of the resampled differences, and the p-value is
    twice the smaller tail of that distribution beyond 0 (with the +1 correction, so it is
    never reported as exactly 0 from finitely many resamples).

    Examples
    --------
    >>> r = bootstrap_ratio_difference([0, 10] * 50, [1] * 100, [0, 20] * 50, [1] * 100,
    ...                                n_boot=500, random_state=0)
    >>> r.difference, r.low > 0, r.p_value < 0.01
    (5.0, True, True)
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    num_c, den_c, num_t, den_t = _as_arrays(
        numerator_control, denominator_control, numerator_treatment, denominator_treatment
    )
    if len(num_c) != len(den_c) or len(num_t) != len(den_t):
        raise ValueError("each group needs as many denominators as numerators")
    nan = math.nan
    if len(num_c) == 0 or len(num_t) == 0 or den_c.sum() == 0 or den_t.sum() == 0:
        return Comparison(
            nan, nan, nan, nan, nan, nan, len(num_c), len(num_t), confidence, "bootstrap"
        )
    control = float(num_c.sum() / den_c.sum())
    treatment = float(num_t.sum() / den_t.sum())

    def untested(why: str) -> Comparison:
        return Comparison(
            control,
            treatment,
            treatment - control,
            nan,
            nan,
            nan,
            len(num_c),
            len(num_t),
            confidence,
            f"bootstrap ({why})",
        )

    if min(len(num_c), len(num_t)) < 2:
        # One customer resampled is always that customer: no spread to test against.
        return untested("not run: a group has fewer than 2 customers")
    rng = _rng(random_state)
    draws = _bootstrap_ratios(num_t, den_t, n_boot, rng) - _bootstrap_ratios(
        num_c, den_c, n_boot, rng
    )
    # A resample without a denominator in either group has no difference.
    draws = draws[~np.isnan(draws)]
    if len(draws) == 0:
        return untested("no resample had a ratio")
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    below = int((draws <= 0).sum())
    above = int((draws >= 0).sum())
    p_value = min(1.0, 2 * (min(below, above) + 1) / (len(draws) + 1))
    return Comparison(
        control=control,
        treatment=treatment,
        difference=treatment - control,
        low=float(low),
        high=float(high),
        p_value=p_value,
        n_control=len(num_c),
        n_treatment=len(num_t),
        confidence=confidence,
        method=f"bootstrap, customers resampled ({n_boot} resamples)",
    )


def sample_ratio_test(
    observed: Mapping[str, int],
    shares: Mapping[str, float],
    *,
    threshold: float = SRM_THRESHOLD,
) -> SampleRatioCheck:
    """Chi-square test of customers per variant (``observed``) against the configured
    ``shares`` (any positive weights; normalised here). A variant configured but never
    seen counts as 0 customers; a variant seen but not configured is an error.

    Examples
    --------
    >>> sample_ratio_test({"a": 1200, "b": 800}, {"a": 0.5, "b": 0.5}).mismatch
    True
    >>> sample_ratio_test({"a": 1010, "b": 990}, {"a": 0.5, "b": 0.5}).mismatch
    False
    """
    unknown = sorted(set(observed) - set(shares))
    if unknown:
        raise ValueError(f"variants {unknown} were observed but have no configured share")
    if len(shares) < 2:
        raise ValueError(f"need at least two variants to compare, got {list(shares)}")
    total_share = sum(shares.values())
    if total_share <= 0 or any(s < 0 for s in shares.values()):
        raise ValueError(f"shares must be non-negative and not all 0, got {dict(shares)}")
    names = list(shares)
    counts = np.array([observed.get(name, 0) for name in names], dtype=np.float64)
    total = counts.sum()
    expected = np.array([shares[name] / total_share for name in names]) * total
    if total == 0:
        chi2, p_value = math.nan, math.nan
    else:
        positive = expected > 0
        if (counts[~positive] > 0).any():  # seen where nothing was expected
            chi2, p_value = math.inf, 0.0
        else:
            result = stats.chisquare(counts[positive], expected[positive])
            chi2, p_value = float(result.statistic), float(result.pvalue)
    return SampleRatioCheck(
        observed={name: int(c) for name, c in zip(names, counts, strict=True)},
        expected={name: float(e) for name, e in zip(names, expected, strict=True)},
        chi2=chi2,
        dof=len(names) - 1,
        p_value=p_value,
        threshold=threshold,
    )
