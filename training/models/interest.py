"""Interest: products the customer keeps looking at, from their own views and carts.

A customer who views or carts a product again and again without buying it yet is a likely
buyer of it, and no other model ranks it for that reason: buy-again only knows
purchases, and the collaborative models score a customer's taste, not their short list.
The score of item ``i`` is ``sum over the customer's events on i of w_type * 0.5 ** (age /
h)`` with view and add-to-cart weights (purchases, ratings and removals weigh 0), so the
model only re-ranks items the customer touched; the blend fits its share where such items
are candidates (the repeats view, see :mod:`training.models.blend_fit`).
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils import check_scalar

from training.models.base import Recommender
from training.models.interactions import EventWeights, Interactions


class Interest(Recommender):
    """Score ``sum over the customer's views and carts of i of w_type * 0.5 ** (age / h)``.

    Parameters
    ----------
    half_life_days : float, default=180.0
        Recency half-life ``h`` of a view or cart.
    view_weight : float, default=1.0
    cart_weight : float, default=3.0
        Weight of an add-to-cart event, relative to a view.

    Examples
    --------
    >>> import pandas as pd
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "a", "a", "a"], "product_id": ["P1", "P1", "P2", "P3"],
    ...     "ts": pd.to_datetime(["2026-01-01"] * 4, utc=True),
    ...     "type": ["view", "view", "add_to_cart", "purchase"], "value": [None] * 4})
    >>> model = Interest().fit(Interactions.from_events(events))
    >>> model.score(0).tolist()  # two views, one cart, a purchase is not interest
    [2.0, 3.0, 0.0]
    >>> model.recommend(0, k=5)[0]
    array([1, 0])
    """

    kind = "interest"
    recommends_only_scored = True

    def __init__(
        self, *, half_life_days: float = 180.0, view_weight: float = 1.0, cart_weight: float = 3.0
    ) -> None:
        self.half_life_days = half_life_days
        self.view_weight = view_weight
        self.cart_weight = cart_weight

    def _check_params(self) -> None:
        check_scalar(
            self.half_life_days, "half_life_days", Real, min_val=0, include_boundaries="neither"
        )
        check_scalar(self.view_weight, "view_weight", Real, min_val=0)
        check_scalar(self.cart_weight, "cart_weight", Real, min_val=0)

    def _fit(self, interactions: Interactions) -> None:
        weights = EventWeights(
            view=self.view_weight,
            add_to_cart=self.cart_weight,
            purchase=0.0,
            rating=0.0,
            remove_from_cart=0.0,
        )
        self.event_weights_ = weights.as_array()
        self.n_items_ = interactions.n_items

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``event_weights`` (per event type code), ``n_items`` and ``half_life_days``
        (scalars)."""
        return {
            "event_weights": self.event_weights_,
            "n_items": np.asarray(self.n_items_, dtype=np.int64),
            "half_life_days": np.asarray(float(self.half_life_days)),
        }
