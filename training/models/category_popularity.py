"""Popularity within the customer's favourite categories and price bands.

Personalisation at its cheapest and often its strongest for light customers: a handful
of views says which categories someone shops, and within them the popular items are the
best bet. The customer's category shares are smoothed towards everyone's
(``prior_strength`` pseudo-interactions), so one view does not make a category
everything; with no history the model is plain popularity.
"""

from __future__ import annotations

import dataclasses
from numbers import Real

import numpy as np
from sklearn.utils.validation import check_scalar

from training.features.inputs import price_bands
from training.models.base import Recommender
from training.models.interactions import EventWeights, Interactions


class CategoryPopularity(Recommender):
    """Item popularity re-weighted by the customer's smoothed category and price-band
    affinity (price bands: terciles within the category, as in the features).

    Parameters
    ----------
    popularity_half_life_days : float or None, default=30
        Recency decay of item popularity (None = all-time).
    affinity_half_life_days : float, default=90
        Recency decay of the customer's own events when measuring affinity.
    prior_strength : float, default=5
        Pseudo-interactions spread like everyone's category mix.
    event_weights : EventWeights

    Examples
    --------
    >>> import pandas as pd
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "b", "b", "c"], "product_id": ["P1", "P2", "P2", "P3"],
    ...     "ts": pd.to_datetime(["2026-01-01"] * 4, utc=True),
    ...     "type": ["view", "purchase", "view", "purchase"], "value": [None] * 4})
    >>> products = pd.DataFrame({"product_id": ["P1", "P2", "P3"],
    ...                          "category": ["toys", "books", "toys"]})
    >>> data = Interactions.from_events(events, products=products)
    >>> model = CategoryPopularity(prior_strength=0.1).fit(data)
    >>> data.items.ids(model.recommend(data.customers.index_of("a"), k=2)[0]).tolist()
    ['P3', 'P1']
    """

    kind = "category_popularity"

    def __init__(
        self,
        *,
        popularity_half_life_days: float | None = 30.0,
        affinity_half_life_days: float = 90.0,
        prior_strength: float = 5.0,
        event_weights: EventWeights = EventWeights(),  # noqa: B008 (frozen, so shared safely)
    ) -> None:
        self.popularity_half_life_days = popularity_half_life_days
        self.affinity_half_life_days = affinity_half_life_days
        self.prior_strength = prior_strength
        self.event_weights = event_weights

    def _check_params(self) -> None:
        if self.popularity_half_life_days is not None:
            check_scalar(
                self.popularity_half_life_days,
                "popularity_half_life_days",
                Real,
                min_val=0,
                include_boundaries="neither",
            )
        check_scalar(
            self.affinity_half_life_days,
            "affinity_half_life_days",
            Real,
            min_val=0,
            include_boundaries="neither",
        )
        check_scalar(
            self.prior_strength, "prior_strength", Real, min_val=0, include_boundaries="neither"
        )
        if not isinstance(self.event_weights, EventWeights):
            raise TypeError("event_weights must be an EventWeights")

    def _codes(self, interactions: Interactions, column: str) -> tuple[np.ndarray, np.ndarray]:
        products = interactions.products
        if products is None or column not in products:
            return np.array(["all"]), np.zeros(interactions.n_items, dtype=np.int64)
        labels = products[column].fillna("unknown").astype(str).to_numpy()
        values, codes = np.unique(labels, return_inverse=True)
        return values, codes.astype(np.int64)

    def _prior(self, interactions: Interactions, codes: np.ndarray, n_values: int) -> np.ndarray:
        # Everyone's mix, from the same (undecayed) event weights as a customer's affinity.
        weights = interactions.event_weights(self.event_weights, None)
        totals = np.bincount(codes[interactions.item], weights=weights, minlength=n_values)
        return totals / totals.sum() if totals.sum() > 0 else np.full(n_values, 1.0 / n_values)

    def _fit(self, interactions: Interactions) -> None:
        n_items = interactions.n_items
        self.categories_, self.item_category_ = self._codes(interactions, "category")
        if interactions.products is not None and {"category", "price"} <= set(
            interactions.products.columns
        ):
            bands = price_bands(interactions.products)
            interactions = dataclasses.replace(
                interactions, products=interactions.products.assign(price_band=bands.to_numpy())
            )
        self.bands_, self.item_band_ = self._codes(interactions, "price_band")
        weights = interactions.event_weights(self.event_weights, self.popularity_half_life_days)
        totals = np.bincount(interactions.item, weights=weights, minlength=n_items)
        self.item_scores_ = totals / totals.sum() if totals.sum() > 0 else np.zeros(n_items)
        self.category_prior_ = self._prior(interactions, self.item_category_, len(self.categories_))
        self.band_prior_ = self._prior(interactions, self.item_band_, len(self.bands_))

    def export_arrays(self) -> dict[str, np.ndarray]:
        return {
            "item_scores": self.item_scores_,
            "item_category": self.item_category_,
            "category_prior": self.category_prior_,
            "item_band": self.item_band_,
            "band_prior": self.band_prior_,
            "event_weights": self.event_weights.as_array(),
            "half_life_days": np.asarray(self.affinity_half_life_days, dtype=np.float64),
            "prior_strength": np.asarray(self.prior_strength, dtype=np.float64),
        }
