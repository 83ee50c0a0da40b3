"""Buy again: the customer's own purchases, recency-decayed, weighted by how often the
item is bought again by anyone (staples come back, one-off purchases rarely do)."""

from __future__ import annotations

from numbers import Real

import numpy as np
import pandas as pd
from sklearn.utils import check_scalar

from segrec.scoring import PURCHASE
from training.models.base import Recommender
from training.models.interactions import Interactions


class BuyAgain(Recommender):
    """Score ``repeat_rate_i * sum over the customer's purchases of i of 0.5 ** (age / h)``.

    Items the customer never bought score 0 and are not recommended, so this model only
    re-ranks the customer's own purchases; in a blend it carries the repeat purchases
    that dominate many retail catalogues.

    Parameters
    ----------
    half_life_days : float, default=90.0
        Recency half-life ``h`` of a purchase.
    repeat_prior : float, default=10.0
        Buyers' worth of the catalogue-wide repeat rate mixed into each item's: ``rate_i =
        (repeat_buyers_i + prior * global_rate) / (buyers_i + prior)``. Keeps rarely
        bought items near the global rate instead of 0 or 1.

    Attributes
    ----------
    repeat_rate_ : ndarray of shape (n_items,)
        Smoothed share of an item's buyers who bought it again (on another event).
    global_repeat_rate_ : float
        Share of (customer, item) purchase pairs with more than one purchase event.

    Examples
    --------
    >>> import pandas as pd
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "a", "a", "b"], "product_id": ["P1", "P1", "P2", "P2"],
    ...     "ts": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-02-01", "2026-02-01"],
    ...                          utc=True),
    ...     "type": ["purchase"] * 4, "value": [None] * 4})
    >>> model = BuyAgain().fit(Interactions.from_events(events))
    >>> model.recommend(0, k=5)[0]
    array([0, 1])
    >>> model.recommend(1, k=5)[0]
    array([1])
    """

    kind = "buy_again"
    recommends_only_scored = True

    def __init__(self, *, half_life_days: float = 90.0, repeat_prior: float = 10.0) -> None:
        self.half_life_days = half_life_days
        self.repeat_prior = repeat_prior

    def _check_params(self) -> None:
        check_scalar(
            self.half_life_days, "half_life_days", Real, min_val=0, include_boundaries="neither"
        )
        check_scalar(self.repeat_prior, "repeat_prior", Real, min_val=0)

    def _fit(self, interactions: Interactions) -> None:
        bought = interactions.type_code == PURCHASE
        pairs = pd.DataFrame(
            {"customer": interactions.customer[bought], "item": interactions.item[bought]}
        )
        counts = pairs.groupby(["customer", "item"]).size()
        item = counts.index.get_level_values("item").to_numpy()
        n_items = interactions.n_items
        buyers = np.bincount(item, minlength=n_items).astype(np.float64)
        repeaters = np.bincount(item, weights=counts.to_numpy() > 1, minlength=n_items)
        self.global_repeat_rate_ = float(repeaters.sum() / buyers.sum()) if len(item) else 0.0
        numerator = repeaters + self.repeat_prior * self.global_repeat_rate_
        denominator = buyers + self.repeat_prior
        self.repeat_rate_ = np.divide(
            numerator, denominator, out=np.zeros(n_items), where=denominator > 0
        )
        # A catalogue without repeats would make every score 0; rank by recency alone then.
        if not self.repeat_rate_.any():
            self.repeat_rate_ = np.ones(n_items)

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``repeat_rate`` (n_items,) and ``half_life_days`` (scalar)."""
        return {
            "repeat_rate": self.repeat_rate_,
            "half_life_days": np.asarray(float(self.half_life_days)),
        }
