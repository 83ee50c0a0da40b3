"""The tests every recommender passes (like implicit's RecommenderBaseTestMixin).

Subclass :class:`RecommenderContract` as ``TestSomething`` and implement ``make_model``.
The data is a checkerboard: two groups of customers, each interacting only with its own
group of products, so the right answer is known: a collaborative model recommends
unseen products of the customer's own group.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from segrec.scoring import CustomerState, score_candidates
from training.models.base import Recommender
from training.models.interactions import Interactions

GROUP_CUSTOMERS = 20
GROUP_ITEMS = 15
ITEMS_PER_CUSTOMER = 8
TOY_END = pd.Timestamp("2026-06-30", tz="UTC")


def checkerboard(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Events, products and segments of the two-group toy storefront.

    Customer ``g{group}_{n}`` views and buys ``ITEMS_PER_CUSTOMER`` random products of
    its group (``P{group}{n:02d}``), some twice; group 0 shops garden tools, group 1
    kitchenware, so the content model sees the groups too.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for group in (0, 1):
        for n in range(GROUP_CUSTOMERS):
            picks = rng.choice(GROUP_ITEMS, ITEMS_PER_CUSTOMER, replace=False)
            for rank, item in enumerate(picks):
                day = TOY_END - pd.Timedelta(days=int(rng.integers(1, 90)))
                product = f"P{group}{item:02d}"
                rows.append((f"g{group}_{n:02d}", product, day, "view", np.nan))
                rows.append((f"g{group}_{n:02d}", product, day, "purchase", np.nan))
                if rank % 3 == 0:
                    again = day + pd.Timedelta(hours=int(rng.integers(1, 24)))
                    rows.append((f"g{group}_{n:02d}", product, again, "purchase", np.nan))
    events = pd.DataFrame(rows, columns=["customer_id", "product_id", "ts", "type", "value"])
    themes = {
        0: ("garden", "Verdo", "hose rake spade trowel shears for the garden lawn"),
        1: ("kitchen", "Cucina", "pan knife whisk ladle pot for the kitchen stove"),
    }
    products = pd.DataFrame(
        [
            {
                "product_id": f"P{group}{item:02d}",
                "title": f"{themes[group][1]} {themes[group][2].split()[item % 5]} {item}",
                "description": themes[group][2],
                "category": themes[group][0],
                "brand": themes[group][1],
                "price": 5.0 + item + 20 * group,
            }
            for group in (0, 1)
            for item in range(GROUP_ITEMS)
        ]
    )
    customers = sorted(events["customer_id"].unique())
    segments = pd.Series([int(c[1]) for c in customers], index=customers)
    return events, products, segments


def toy_interactions() -> Interactions:
    events, products, segments = checkerboard()
    return Interactions.from_events(events, products=products, segments=segments)


def group_of_item(item: int) -> int:
    """Products are indexed in catalogue order: the first GROUP_ITEMS are group 0."""
    return int(item >= GROUP_ITEMS)


def group_of_customer(data: Interactions, customer: int) -> int:
    return int(str(data.customers.ids([customer])[0])[1])


def savez_roundtrip(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays after ``np.savez`` and ``np.load(allow_pickle=False)``: plain numpy."""
    buffer = io.BytesIO()
    np.savez(buffer, **cast(dict[str, Any], arrays))
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return {name: loaded[name] for name in loaded.files}


class RecommenderContract:
    """Shared tests; subclasses implement ``make_model`` and set the class flags."""

    # Must recommend unseen products of the customer's own checkerboard group.
    finds_groups: ClassVar[bool] = True
    # Returns k items whenever the catalogue has them (BuyAgain only returns purchases).
    fills_k: ClassVar[bool] = True
    has_similar_items: ClassVar[bool] = False
    # Hyperparameters that fit must reject (validation in fit, not in __init__).
    invalid_params: ClassVar[dict[str, Any]] = {}

    def make_model(self, **params: Any) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> Interactions:
        return toy_interactions()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data: Interactions) -> Recommender:
        return cls().make_model().fit(data)

    def test_get_params_and_clone(self) -> None:
        model = self.make_model()
        params = model.get_params()
        copy = clone(model)
        assert copy is not model
        assert copy.get_params() == params
        assert model.set_params(**params) is model

    def test_fit_returns_self_and_keeps_hyperparameters(self, data: Interactions) -> None:
        model = self.make_model()
        before = model.get_params()
        assert model.fit(data) is model
        assert model.get_params() == before

    def test_unfitted_model_refuses_to_score(self) -> None:
        with pytest.raises(NotFittedError):
            self.make_model().score(0)

    def test_invalid_hyperparameters_fail_in_fit(self, data: Interactions) -> None:
        for name, value in self.invalid_params.items():
            model = self.make_model(**{name: value})  # __init__ accepts anything
            with pytest.raises((ValueError, TypeError)):
                model.fit(data)

    def test_same_random_state_same_model(self, data: Interactions) -> None:
        first = self.make_model().fit(data).export_arrays()
        second = self.make_model().fit(data).export_arrays()
        assert first.keys() == second.keys()
        for name in first:
            np.testing.assert_array_equal(first[name], second[name], err_msg=name)

    def test_recommend_returns_k_sorted_and_excludes(
        self, fitted: Recommender, data: Interactions
    ) -> None:
        for customer in (0, data.n_customers - 1):
            seen = data.items_of(customer)
            items, scores = fitted.recommend(customer, k=5, exclude=seen[:3])
            assert len(items) == len(scores) <= 5
            if self.fills_k:
                assert len(items) == 5
            assert not np.isin(items, seen[:3]).any()
            assert len(np.unique(items)) == len(items)
            assert np.all(np.diff(scores) <= 0)
            np.testing.assert_allclose(scores, fitted.score(customer, items))

    def test_recommend_within_candidates(self, fitted: Recommender, data: Interactions) -> None:
        candidates = np.array([3, 17, 25, 8])
        items, _ = fitted.recommend(0, k=10, candidates=candidates)
        assert set(items) <= set(candidates)

    def test_unknown_customer_and_items(self, fitted: Recommender, data: Interactions) -> None:
        for customer in (-1, data.n_customers, 10**9, CustomerState()):
            scores = fitted.score(customer)
            assert scores.shape == (data.n_items,)
            assert np.isfinite(scores).all()
            items, _ = fitted.recommend(customer, k=5)
            assert len(items) <= 5
        scores = fitted.score(0, np.array([0, -1, data.n_items]))
        assert np.isfinite(scores[0])
        assert np.isnan(scores[1:]).all()

    def test_exported_arrays_reproduce_scores(
        self, fitted: Recommender, data: Interactions
    ) -> None:
        """What serving does: bundle arrays + customer features + events -> numpy scores."""
        arrays = savez_roundtrip(fitted.export_arrays())
        customer_arrays = savez_roundtrip(fitted.export_customer_arrays())
        assert all(len(v) == data.n_customers for v in customer_arrays.values())
        for customer in range(0, data.n_customers, 7):
            history = data.state(customer)
            state = CustomerState(
                items=history.items,
                types=history.types,
                age_days=history.age_days,
                segment=history.segment,
                features={name: rows[customer] for name, rows in customer_arrays.items()},
            )
            np.testing.assert_allclose(
                score_candidates(fitted.kind, arrays, state), fitted.score(customer), rtol=1e-6
            )
        np.testing.assert_allclose(
            score_candidates(fitted.kind, arrays, CustomerState()), fitted.score(-1)
        )

    def test_checkerboard_recommends_own_group(
        self, fitted: Recommender, data: Interactions
    ) -> None:
        if not self.finds_groups:
            pytest.skip("not a model of what similar customers like")
        for customer in range(data.n_customers):
            items, _ = fitted.recommend(customer, k=3, exclude=data.items_of(customer))
            group = group_of_customer(data, customer)
            assert [group_of_item(i) for i in items] == [group] * 3, customer

    def test_similar_items(self, fitted: Recommender) -> None:
        if not self.has_similar_items:
            with pytest.raises(NotImplementedError):
                fitted.similar_items(0)
            return
        for item in (0, GROUP_ITEMS + 1):
            similar, scores = fitted.similar_items(item, k=4)
            assert item not in similar
            assert len(similar) == 4
            assert np.all(np.diff(scores) <= 0)
            assert {group_of_item(i) for i in similar} == {group_of_item(item)}
        with pytest.raises(ValueError, match="item index"):
            fitted.similar_items(-1)
