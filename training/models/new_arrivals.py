"""New arrivals: recently launched products in the customer's categories and price bands.

No model that learns from interactions can rank a product nobody has touched yet, yet in
a storefront that keeps launching products a fair share of purchases are of products a
few weeks old. This model scores freshness alone, re-weighted by the customer's taste:
``freshness(i) * lift_category(i) * lift_band(i)``, with the smoothed category and
price-band lifts of :class:`~training.models.category_popularity.CategoryPopularity`.

Launch date: the catalogue's ``launch_ts`` column when the products table has one, else
the first event on the product (first seen), which trails a real launch by a day or two
in a shop with traffic. A catalogue product nobody touched before the reference time is
taken as launched at the reference time: it is in the catalogue the bundle ships, so it
is new (the cold-start product). Products added to the catalogue after training are not
in the bundle and wait for the next training run.

Freshness is ``0.5 ** (launch_age_days / half_life_days)``. The bundle ships the launch
ages at its reference time; later, every age grows by the same amount, which scales every
freshness by the same factor, and the blend's min-max normalisation cancels it. So serving
needs no clock for this model.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_scalar

from training.models.category_popularity import CategoryPopularity
from training.models.interactions import DAY, LAUNCH_COLUMN, EventWeights, Interactions


def launch_age_days(interactions: Interactions) -> np.ndarray:
    """Days from each item's launch to the reference time (0 for never-seen items and for
    launches after the reference time)."""
    first_seen = np.zeros(interactions.n_items)
    # Oldest event per item: the largest age.
    np.maximum.at(first_seen, interactions.item, interactions.age_days)
    products = interactions.products
    if products is not None and LAUNCH_COLUMN in products:
        launch = pd.to_datetime(products[LAUNCH_COLUMN], utc=True)
        age = ((interactions.reference_time - launch) / DAY).to_numpy(dtype=np.float64)
        first_seen = np.where(np.isfinite(age), age, first_seen)
    return np.maximum(first_seen, 0.0)


class NewArrivals(CategoryPopularity):
    """Launch recency times the customer's smoothed category and price-band affinity.

    Parameters
    ----------
    half_life_days : float, default=21
        Days after launch at which a product is half as fresh.
    affinity_half_life_days : float, default=90
        Recency decay of the customer's own events when measuring affinity.
    prior_strength : float, default=5
        Pseudo-interactions spread like everyone's category mix.
    event_weights : EventWeights

    Examples
    --------
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "a", "b"], "product_id": ["P1", "P2", "P2"],
    ...     "ts": pd.to_datetime(["2026-01-01", "2026-03-01", "2026-03-01"], utc=True),
    ...     "type": ["view", "view", "purchase"], "value": [None] * 3})
    >>> products = pd.DataFrame({"product_id": ["P1", "P2", "P3", "P4"],
    ...                          "category": ["toys", "toys", "toys", "books"]})
    >>> data = Interactions.from_events(events, products=products)
    >>> model = NewArrivals().fit(data)
    >>> model.launch_age_days_.tolist()  # P2 first seen today; P3, P4 never seen: new
    [59.0, 0.0, 0.0, 0.0]
    >>> a = data.customers.index_of("a")  # a toys shopper
    >>> data.items.ids(model.recommend(a, k=2, exclude=data.items_of(a))[0]).tolist()
    ['P3', 'P4']
    """

    kind = "new_arrivals"

    def __init__(
        self,
        *,
        half_life_days: float = 21.0,
        affinity_half_life_days: float = 90.0,
        prior_strength: float = 5.0,
        event_weights: EventWeights = EventWeights(),  # noqa: B008 (frozen, so shared safely)
    ) -> None:
        self.half_life_days = half_life_days
        self.affinity_half_life_days = affinity_half_life_days
        self.prior_strength = prior_strength
        self.event_weights = event_weights

    # The parent's popularity is fitted all-time and not exported: freshness replaces it.
    popularity_half_life_days: float | None = None

    def _check_params(self) -> None:
        check_scalar(
            self.half_life_days, "half_life_days", Real, min_val=0, include_boundaries="neither"
        )
        super()._check_params()

    def _fit(self, interactions: Interactions) -> None:
        super()._fit(interactions)
        self.launch_age_days_ = launch_age_days(interactions)

    def export_arrays(self) -> dict[str, np.ndarray]:
        arrays = super().export_arrays()
        del arrays["item_scores"]
        arrays["launch_age_days"] = self.launch_age_days_
        arrays["freshness_half_life_days"] = np.asarray(self.half_life_days, dtype=np.float64)
        return arrays
