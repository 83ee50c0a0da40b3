"""The one recommender interface every model implements.

Follows the scikit-learn estimator contract: keyword-only hyperparameters stored
unchanged in ``__init__`` (so ``get_params``, ``set_params`` and ``clone`` work),
validation in ``fit``, ``fit`` returns ``self``, learned state in attributes ending in
``_``, ``random_state`` stored as given and turned into a generator inside ``fit``.

Scoring goes through :mod:`segrec.scoring` with the model's exported arrays,
exactly as serving will, so ``export_arrays()`` is complete by construction and tested.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Self

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from segrec.scoring import CustomerState, score_candidates, top_k
from training.models.interactions import Interactions


class Recommender(BaseEstimator, ABC):
    """Base class: fit on :class:`Interactions`, score candidates, recommend top-k.

    Subclasses set ``kind`` (their scorer in :data:`segrec.scoring.SCORERS`)
    and implement ``_check_params``, ``_fit`` and ``export_arrays``; those with
    customer vectors also implement ``export_customer_arrays``.

    A customer is either an index into ``interactions_.customers`` (its training
    events, segment and customer-side rows are used; an index of -1 or out of range is
    an unknown customer, scored like a cold start) or a :class:`CustomerState` built at
    request time.

    Examples
    --------
    >>> import pandas as pd
    >>> from training.models.popularity import Popularity
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "b", "b"], "product_id": ["P1", "P2", "P3"],
    ...     "ts": pd.to_datetime(["2026-01-01"] * 3, utc=True),
    ...     "type": ["purchase", "purchase", "view"], "value": [None] * 3})
    >>> data = Interactions.from_events(events)
    >>> model = Popularity().fit(data)
    >>> items, scores = model.recommend(data.customers.index_of("a"), k=2, exclude=[0])
    >>> data.items.ids(items)
    array(['P2', 'P3'], dtype=object)
    >>> sorted(model.export_arrays())
    ['item_scores', 'segment_scores']
    """

    kind: ClassVar[str]
    # Models that only re-rank the customer's own items (buy again, interest) score every
    # other item 0: recommending those would pad the list with arbitrary items.
    recommends_only_scored: ClassVar[bool] = False

    def fit(self, interactions: Interactions) -> Self:
        """Learn from ``interactions``; returns ``self``."""
        self._check_params()
        if interactions.n_items == 0:
            raise ValueError("interactions have no items")
        self._fit(interactions)
        self.interactions_ = interactions
        return self

    @abstractmethod
    def _check_params(self) -> None:
        """Raise ``ValueError`` for invalid hyperparameters."""

    @abstractmethod
    def _fit(self, interactions: Interactions) -> None:
        """Set the learned attributes."""

    @abstractmethod
    def export_arrays(self) -> dict[str, np.ndarray]:
        """Item-side arrays serving scores with (numpy only); shipped in the bundle.

        The arrays are the model's own (not copies): do not modify them.
        """

    def export_customer_arrays(self) -> dict[str, np.ndarray]:
        """Customer-side arrays, row ``u`` for customer ``u``; written to Feast.

        Models without customer vectors return an empty dict.
        """
        check_is_fitted(self)
        return {}

    def customer_state(self, customer: int) -> CustomerState:
        """What scoring knows about a training customer: events, segment, feature rows."""
        check_is_fitted(self)
        state = self.interactions_.state(int(customer))
        if not 0 <= customer < self.interactions_.n_customers:
            return state
        rows = {name: values[customer] for name, values in self.export_customer_arrays().items()}
        return CustomerState(
            items=state.items,
            types=state.types,
            age_days=state.age_days,
            segment=state.segment,
            features=rows,
        )

    def score(
        self, customer: int | CustomerState, items: npt.ArrayLike | None = None
    ) -> np.ndarray:
        """Scores of candidate ``items`` (all items when None) for ``customer``.

        Higher is better; scores are comparable within a model, not across models.
        Candidates outside the catalogue score NaN.
        """
        check_is_fitted(self)
        if not isinstance(customer, CustomerState):
            customer = self.customer_state(customer)
        candidates = None if items is None else np.asarray(items, dtype=np.int64)
        return score_candidates(self.kind, self.export_arrays(), customer, candidates)

    def recommend(
        self,
        customer: int | CustomerState,
        k: int = 10,
        *,
        exclude: npt.ArrayLike | None = None,
        candidates: npt.ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` items and their scores, best first (ties: lower index first).

        Nothing is filtered unless asked: pass the items to leave out (seen, purchased,
        out of stock) as ``exclude``, and restrict the ranking with ``candidates``. Models
        with ``recommends_only_scored`` return only items scoring above 0, so fewer than
        ``k`` may come back.
        """
        items = None if candidates is None else np.asarray(candidates, dtype=np.int64)
        scores = self.score(customer, items)
        best, best_scores = top_k(
            scores, k, items=items, exclude=None if exclude is None else np.asarray(exclude)
        )
        if self.recommends_only_scored:
            return best[best_scores > 0], best_scores[best_scores > 0]
        return best, best_scores

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to ``item`` and their similarities."""
        raise NotImplementedError(
            f"{type(self).__name__} has no item-to-item similarity; use Content, ALS or SVD"
        )

    def _check_item(self, item: int) -> int:
        check_is_fitted(self)
        if not 0 <= item < self.interactions_.n_items:
            raise ValueError(f"item index {item} is not in 0..{self.interactions_.n_items - 1}")
        return int(item)
