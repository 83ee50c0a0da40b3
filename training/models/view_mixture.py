"""View mixture: where the customer's next views go, as a mixture of three reasons to look.

A shopper's next view is, in shares that differ by segment, one of three things: a
product they keep coming back to (their own views), one of the recent launches everyone
is looking at (a trend), or a draw from their tastes: a category they like, a price band
their segment shops, and within that (category, band) group a product as popular as the
group's views make it. The single-reason models each hold one part (interest, new
arrivals, category popularity), but the blend mixes their min-max normalised scores,
which cannot weigh a part by how much of the next views it takes. This model estimates
those shares instead, per segment, by maximum likelihood on the latest views:

    q(i) = s_own * own(i) + s_trend * trend(i) + s_taste * category(i) * band(i) * within(i)

- ``own(i)``: the customer's share of their views on ``i`` (recency-weighted);
- ``trend(i)``: for a product launched at most ``D`` days ago, the share of the coming
  ``horizon_days`` it is still inside its ``D`` days, over the number of products inside
  theirs now (a trend view picks one of them at random);
- ``category(i)``: the customer's share of views in ``i``'s category, smoothed towards their
  segment's (``category_strength`` views of it, a Dirichlet posterior mean);
- ``band(i)``: the segment's share of views in ``i``'s price band;
- ``within(i)``: ``i``'s views (plus ``popularity_smoothing``) over its group's; a
  product launched less than ``D`` days ago that nobody viewed yet counts as many views
  as its group's mean (no views yet is no evidence against it).

How the shares are fitted: the views of the last ``holdout_days`` before the reference
time are held out, the parts are computed from the views before them, and the shares per
segment are fitted by EM (the likelihood is concave in the shares, so EM finds its
maximum), each segment's shrunk towards everyone's by a Dirichlet prior worth
``segment_prior_views`` views (a segment with few views keeps everyone's). ``D`` and
``category_strength`` are each chosen from their candidates by the held-out likelihood.
The candidates are compared on the same held-out views, those every candidate gives a
chance. The parts are then recomputed on every view for scoring. The fitted shares, the
chosen values, the held-out log-likelihood and the number of views it is over are
attributes (``shares_``, ``trend_days_``, ``category_strength_``, ``heldout_loglik_``,
``heldout_views_``).

A view is not a purchase: ``q`` is multiplied by the product's conversion, its purchases
per view smoothed towards everyone's (``conversion_prior_views`` views of it), which is
how an out-of-stock product, seldom bought however often viewed, falls back.

Serving scores it from the customer's events and segment with numpy
(:func:`segrec.scoring.score_view_mixture`); the trend part is shipped as of the bundle's
reference time, like the new-arrivals model's launch ages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_scalar

from segrec.scoring import EVENT_TYPES, PURCHASE, decay
from training.models.category_popularity import CategoryPopularity
from training.models.interactions import EventWeights, Interactions
from training.models.new_arrivals import launch_age_days

VIEW = EVENT_TYPES.index("view")
VIEWS_ONLY = EventWeights(view=1.0, add_to_cart=0.0, purchase=0.0, rating=0.0)
PARTS = ("own", "trend", "taste")
EM_ITERATIONS = 500  # at most; EM stops once no share moves by more than EM_TOLERANCE
EM_TOLERANCE = 1e-7


@dataclass(frozen=True)
class _Looks:
    """What a set of looks gives (see :meth:`ViewMixture._looks`)."""

    own: sp.csr_matrix  # (customers, items): recency-weighted looks
    customer_category: np.ndarray  # (customers, categories): recency-weighted looks
    category: np.ndarray  # (rows, categories): each row's mix, smoothed to everyone's
    band: np.ndarray  # (rows, bands)
    looks: np.ndarray  # (items,): looks at each product
    launched: np.ndarray  # (items,): on sale then
    launch: np.ndarray  # (items,): launch age then, days

    def within(self, group: np.ndarray, smoothing: float, trend_days: float) -> np.ndarray:
        """Each product's share of its group's looks. A product nobody looked at yet that
        launched within ``trend_days`` gets its group's mean count: no looks is no
        evidence against it yet (after that long, it is)."""
        counts = self.looks + smoothing
        unproven = (self.looks == 0) & (self.launch <= trend_days) & self.launched
        on_sale = self.launched & ~unproven
        n_groups = int(group.max(initial=0)) + 1
        members = np.bincount(group, weights=on_sale, minlength=n_groups)
        mean = np.bincount(group, weights=counts * on_sale, minlength=n_groups) / np.maximum(
            members, 1.0
        )
        counts = np.where(unproven, np.maximum(mean[group], smoothing), counts) * self.launched
        totals = np.bincount(group, weights=counts, minlength=n_groups)
        return counts / np.where(totals[group] > 0, totals[group], 1.0)


def _em(
    parts: np.ndarray, groups: np.ndarray, n_groups: int, prior: np.ndarray, strength: float
) -> np.ndarray:
    shares = np.tile(prior, (n_groups, 1))
    counts = np.bincount(groups, minlength=n_groups)[:, None].astype(np.float64)
    empty = (counts + strength)[:, 0] == 0
    for _ in range(EM_ITERATIONS):
        weighted = shares[groups] * parts
        responsibility = weighted / weighted.sum(1, keepdims=True)
        totals = np.column_stack(
            [np.bincount(groups, weights=r, minlength=n_groups) for r in responsibility.T]
        )
        previous = shares
        shares = (totals + strength * prior) / np.where(empty[:, None], 1.0, counts + strength)
        shares[empty] = prior
        if np.abs(shares - previous).max() < EM_TOLERANCE:
            break
    return shares


def fit_shares(
    parts: np.ndarray, groups: np.ndarray, n_groups: int, prior_views: float
) -> tuple[np.ndarray, float]:
    """Mixture shares per group by EM: ``parts`` (views, parts) holds each held-out view's
    probability under each part, ``groups`` its group (0 to ``n_groups - 1``).

    Returns ``(shares, log-likelihood)``. ``shares`` has ``n_groups + 1`` rows: row ``g``
    is group ``g``'s, the last everyone's. A group's shares are fitted as if it had
    ``prior_views`` more views split in everyone's shares, so a group with few views
    keeps nearly everyone's and one without views keeps them exactly. Views no part can
    produce (probability 0 under each) say nothing about the shares and are left out.

    Examples
    --------
    >>> parts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> shares, _ = fit_shares(parts, np.array([0, 0, 0, 1]), 3, prior_views=0.0)
    >>> shares.round(3).tolist()  # group 2 has no views: everyone's shares
    [[0.667, 0.333], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]]
    """
    parts = np.asarray(parts, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    explained = parts.sum(1) > 0
    parts, groups = parts[explained], groups[explained]
    uniform = np.full(parts.shape[1], 1.0 / parts.shape[1])
    overall = _em(parts, np.zeros(len(parts), dtype=np.int64), 1, uniform, 0.0)[0]
    table = np.vstack([_em(parts, groups, n_groups, overall, prior_views), overall])
    loglik = float(np.log((table[groups] * parts).sum(1)).sum())
    return table, loglik


class ViewMixture(CategoryPopularity):
    """Own views, trends and segment tastes mixed in shares fitted per segment (module
    docstring).

    Parameters
    ----------
    holdout_days : float, default=28
        The latest days of views the shares, ``D`` and ``category_strength`` are fitted on.
    horizon_days : float, default=28
        The days ahead recommendations are for: a launch's trend part is the share of them
        it is still trending.
    trend_days : sequence of float, default=(21, 45, 90)
        Candidates for ``D``, the days after launch a product counts as a trend.
    category_strength : sequence of float, default=(2, 5, 20)
        Candidates for the views' worth of the segment's category mix in a customer's.
    own_half_life_days : float, default=365
        Recency half-life of the customer's views, in their own and category parts.
    popularity_smoothing : float, default=1
        Views added to every product's count within its group.
    segment_prior_views : float, default=100
        Views' worth of everyone's shares and mixes in a segment's.
    conversion_prior_views : float, default=200
        Views' worth of everyone's purchases per view in a product's.

    Examples
    --------
    >>> import pandas as pd
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a"] * 4 + ["b"] * 3,
    ...     "product_id": ["P1", "P1", "P1", "P2", "P2", "P3", "P2"],
    ...     "ts": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01", "2026-03-02",
    ...                           "2026-01-05", "2026-02-20", "2026-03-01"], utc=True),
    ...     "type": ["view"] * 7, "value": [None] * 7})
    >>> model = ViewMixture(holdout_days=14).fit(Interactions.from_events(events))
    >>> model.shares_.shape  # no segments: the unsegmented row
    (1, 3)
    >>> int(model.recommend(0, k=1)[0][0])  # a's own favourite first
    0
    """

    kind = "view_mixture"
    # What CategoryPopularity's fit reads: everyone's views, all-time.
    popularity_half_life_days = None
    event_weights = VIEWS_ONLY

    def __init__(
        self,
        *,
        holdout_days: float = 28.0,
        horizon_days: float = 28.0,
        trend_days: Sequence[float] = (21.0, 45.0, 90.0),
        category_strength: Sequence[float] = (2.0, 5.0, 20.0),
        own_half_life_days: float = 365.0,
        popularity_smoothing: float = 1.0,
        segment_prior_views: float = 100.0,
        conversion_prior_views: float = 200.0,
    ) -> None:
        self.holdout_days = holdout_days
        self.horizon_days = horizon_days
        self.trend_days = trend_days
        self.category_strength = category_strength
        self.own_half_life_days = own_half_life_days
        self.popularity_smoothing = popularity_smoothing
        self.segment_prior_views = segment_prior_views
        self.conversion_prior_views = conversion_prior_views

    def _check_params(self) -> None:
        for name in ("holdout_days", "horizon_days", "own_half_life_days"):
            check_scalar(getattr(self, name), name, Real, min_val=0, include_boundaries="neither")
        for name in ("popularity_smoothing", "segment_prior_views", "conversion_prior_views"):
            check_scalar(getattr(self, name), name, Real, min_val=0)
        for name in ("trend_days", "category_strength"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ValueError(f"{name} must be a non-empty sequence of numbers, got {values!r}")
            for value in values:
                check_scalar(value, name, Real, min_val=0, include_boundaries="neither")

    def _fit(self, interactions: Interactions) -> None:
        data = interactions
        # A ratings-only export (MovieLens) has no views: every event is then a look.
        has_views = bool((data.type_code == VIEW).any())
        self.look_weights_ = VIEWS_ONLY if has_views else EventWeights(remove_from_cart=0.0)
        self.event_weights = self.look_weights_
        super()._fit(data)
        n_items = data.n_items
        looks = self.look_weights_.as_array()[data.type_code] > 0
        segments = data.segments if data.segments is not None else np.full(data.n_customers, -1)
        n_segments = int(max(segments.max(initial=-1) + 1, 0))
        # Row per customer: their segment, or the last row (no segment).
        row = np.where(segments >= 0, segments, n_segments)
        launch = launch_age_days(data)

        held = looks & (data.age_days < self.holdout_days)
        earlier = self._looks(
            data, looks & ~held, float(self.holdout_days), row, n_segments + 1, launch
        )
        customer, item, age = data.customer[held], data.item[held], data.age_days[held]
        own = earlier.own
        own_total = np.asarray(own.sum(1)).ravel()[customer]
        own_part = np.asarray(own[customer, item]).ravel() / np.where(own_total > 0, own_total, 1)
        launches = np.sort(launch)
        rows = row[customer]
        group = self.item_category_ * len(self.bands_) + self.item_band_
        # What every candidate shares: each view's customer's looks in its category, all
        # their looks, their row's share of that category and band, the product's age.
        at = (np.arange(len(item)), self.item_category_[item])
        in_category = earlier.customer_category[customer][at]
        looked = earlier.customer_category[customer].sum(1)
        row_share = earlier.category[rows][at]
        band_share = earlier.band[rows, self.item_band_[item]]
        launched_ago = launch[item] - age
        candidates = []
        for trend_days in self.trend_days:
            trending = np.searchsorted(launches, age + trend_days, side="right") - np.searchsorted(
                launches, age, side="left"
            )
            inside = (launched_ago >= 0) & (launched_ago <= trend_days) & (trending > 0)
            trend_part = np.where(inside, 1.0 / np.maximum(trending, 1), 0.0)
            within = earlier.within(group, float(self.popularity_smoothing), float(trend_days))
            for strength in self.category_strength:
                category = (in_category + strength * row_share) / (looked + strength)
                taste_part = category * band_share * within[item]
                parts = np.column_stack([own_part, trend_part, taste_part])
                candidates.append((float(trend_days), float(strength), parts))
        # The candidates are compared on the same views: those each of them can explain
        # (a view of a product launched in the held-out days, past a short trend window,
        # has no chance under that window; leaving it out would favour the window).
        common = np.logical_and.reduce([parts.sum(1) > 0 for *_, parts in candidates])
        best: tuple[float, float, float, np.ndarray] | None = None
        for trend_days, strength, parts in candidates:
            shares, loglik = fit_shares(
                parts[common], rows[common], n_segments + 1, float(self.segment_prior_views)
            )
            if best is None or loglik > best[0]:
                best = (loglik, trend_days, strength, shares[:-1])
        assert best is not None
        self.heldout_loglik_, self.trend_days_, self.category_strength_, self.shares_ = best
        self.heldout_views_ = int(common.sum())

        everything = self._looks(data, looks, 0.0, row, n_segments + 1, launch)
        self.segment_category_ = everything.category
        self.segment_band_ = everything.band
        self.item_within_ = everything.within(
            group, float(self.popularity_smoothing), self.trend_days_
        )
        listed = data.listed if data.listed is not None else np.ones(n_items, dtype=bool)
        trending_now = listed & (launch <= self.trend_days_)
        still = np.clip((self.trend_days_ - launch) / self.horizon_days, 0.0, 1.0)
        self.item_trend_ = np.where(trending_now, still, 0.0) / max(int(trending_now.sum()), 1)
        views = np.bincount(data.item[looks], minlength=n_items).astype(np.float64)
        bought = np.bincount(data.item[data.type_code == PURCHASE], minlength=n_items)
        overall = bought.sum() / views.sum() if views.sum() > 0 else 1.0
        prior = float(self.conversion_prior_views)
        self.item_conversion_ = (bought + prior * overall) / (views + prior)

    def _looks(
        self,
        data: Interactions,
        looks: np.ndarray,
        shift: float,
        row: np.ndarray,
        n_rows: int,
        launch: np.ndarray,
    ) -> _Looks:
        """What the events in ``looks`` give as of ``shift`` days before the reference time
        (``row``: each customer's row of ``n_rows``; ``launch``: launch ages at the
        reference time)."""
        customer, item = data.customer[looks], data.item[looks]
        weight = decay(data.age_days[looks] - shift, float(self.own_half_life_days))
        own = sp.csr_matrix((weight, (customer, item)), shape=(data.n_customers, data.n_items))
        own.sum_duplicates()
        n_categories, n_bands = len(self.categories_), len(self.bands_)
        customer_category = np.bincount(
            customer * n_categories + self.item_category_[item],
            weights=weight,
            minlength=data.n_customers * n_categories,
        ).reshape(data.n_customers, n_categories)
        mixes = []
        for codes, width in ((self.item_category_, n_categories), (self.item_band_, n_bands)):
            counts = np.bincount(
                row[customer] * width + codes[item], minlength=n_rows * width
            ).reshape(n_rows, width)
            overall = (counts.sum(0) + 1.0) / (counts.sum() + width)
            prior = float(self.segment_prior_views)
            mixes.append((counts + prior * overall) / (counts.sum(1, keepdims=True) + prior))
        # The products on sale then: launched ``shift`` days before, or listed now.
        launched = launch >= shift if shift > 0 else data.listed
        if launched is None:
            launched = np.ones(data.n_items, dtype=bool)
        looks_per_item = np.bincount(item, minlength=data.n_items).astype(np.float64)
        return _Looks(
            own,
            customer_category,
            mixes[0],
            mixes[1],
            looks_per_item,
            launched,
            np.maximum(launch - shift, 0.0),
        )

    def export_arrays(self) -> dict[str, np.ndarray]:
        return {
            "item_within": self.item_within_,
            "item_trend": self.item_trend_,
            "item_conversion": self.item_conversion_,
            "item_category": self.item_category_,
            "item_band": self.item_band_,
            "segment_shares": self.shares_,
            "segment_category": self.segment_category_,
            "segment_band": self.segment_band_,
            "category_strength": np.asarray(self.category_strength_, dtype=np.float64),
            "event_weights": self.look_weights_.as_array(),
            "half_life_days": np.asarray(self.own_half_life_days, dtype=np.float64),
        }
