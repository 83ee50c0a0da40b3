"""The view-mixture model: the shared contract, EM against shares known by construction, and
a storefront whose segments look for known reasons (repeats, trends)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from segrec.scoring import CustomerState
from tests.recommender_contract import GROUP_ITEMS, RecommenderContract, checkerboard
from training.models.base import Recommender
from training.models.interactions import DAY, Interactions
from training.models.view_mixture import PARTS, ViewMixture, fit_shares

SEED = 42
END = pd.Timestamp("2026-06-30", tz="UTC")


class TestViewMixture(RecommenderContract):
    invalid_params: ClassVar[dict[str, Any]] = {
        "holdout_days": 0.0,
        "trend_days": (),
        "category_strength": "5",
        "segment_prior_views": -1.0,
    }

    def make_model(self, **params: Any) -> Recommender:
        return ViewMixture(**params)


def test_fit_shares_recovers_the_shares_the_views_were_drawn_with() -> None:
    rng = np.random.default_rng(SEED)
    n_items = 60
    parts = rng.dirichlet(np.full(n_items, 0.3), size=3)  # each part's view distribution
    truth = np.array([[0.6, 0.1, 0.3], [0.1, 0.7, 0.2]])
    groups = np.repeat([0, 1, 2], [20_000, 20_000, 5])
    # Group 2 has five views: it should keep (nearly) everyone's shares.
    drawn_with = np.vstack([truth, [[1.0, 0.0, 0.0]]])[groups]
    part = (rng.random((len(groups), 1)) > drawn_with.cumsum(1)).sum(1)
    item = np.array([rng.choice(n_items, p=parts[p]) for p in part])
    shares, loglik = fit_shares(parts[:, item].T, groups, 3, prior_views=0.0)
    assert shares.shape == (4, 3)
    np.testing.assert_allclose(shares[:2], truth, atol=0.03)
    np.testing.assert_allclose(shares.sum(1), 1.0)
    np.testing.assert_allclose(shares[3], truth.mean(0), atol=0.03)
    # A prior worth 1,000 views: group 2's five views move it little from everyone's, and
    # the large groups move a little of the way towards everyone's.
    shrunk, _ = fit_shares(parts[:, item].T, groups, 3, prior_views=1000.0)
    np.testing.assert_allclose(shrunk[2], shrunk[3], atol=0.01)
    before = np.abs(shares[:2] - shares[3]).sum(1)
    after = np.abs(shrunk[:2] - shrunk[3]).sum(1)
    assert (after < before).all() and (after > before - 0.1).all()
    # The truth is (near) the maximum: other shares explain the views worse.
    swapped = np.vstack([truth[::-1], shares[2:]])
    worse = np.log((swapped[groups] * parts[:, item].T).sum(1)).sum()
    assert loglik > worse
    # A group without views keeps everyone's shares exactly; unexplained views are ignored.
    some, _ = fit_shares(np.array([[0.5, 0.0], [0.0, 0.0]]), np.array([0, 0]), 2, 0.0)
    assert some.tolist() == [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]


def reasons_storefront(seed: int = SEED, unviewed: dict[str, float] | None = None) -> Interactions:
    """Two segments of 150 customers over 300 days, each view drawn for a known reason.

    80 products in 4 categories; product ``n`` launches on day ``3.5 n`` (so some launch
    every week). Segment 0 (loyal) views one of its two favourites 70% of the time;
    segment 1 (trend followers) views a product launched in the last 45 days 60% of the
    time. Otherwise a view picks the customer's favourite category (80%) or any, then a
    product launched by then, more popular the lower its index within the category.
    Every tenth view is also bought. ``unviewed``: products of category c0 nobody views,
    by the day they launch.
    """
    rng = np.random.default_rng(seed)
    n_products, days = 80, 300.0
    launch = np.arange(n_products) * 3.5
    category = np.arange(n_products) % 4
    popularity = 1.0 / (1 + np.arange(n_products) // 4)
    rows = []
    for segment, (p_own, p_trend) in enumerate([(0.7, 0.0), (0.0, 0.6)]):
        for n in range(150):
            customer = f"s{segment}_{n:03d}"
            favourite_category = rng.integers(4)
            favourites = rng.choice(np.flatnonzero(launch < 30), 2, replace=False)
            for day in np.sort(rng.uniform(30, days, 40)):
                on_sale = launch <= day
                mode = rng.random()
                if mode < p_own:
                    product = rng.choice(favourites)
                elif mode < p_own + p_trend:
                    product = rng.choice(np.flatnonzero(on_sale & (launch >= day - 45)))
                else:
                    wanted = favourite_category if rng.random() < 0.8 else rng.integers(4)
                    pool = np.flatnonzero(on_sale & (category == wanted))
                    weights = popularity[pool] / popularity[pool].sum()
                    product = rng.choice(pool, p=weights)
                ts = END - (days - day) * DAY
                rows.append((customer, f"P{product:03d}", ts, "view"))
                if rng.random() < 0.1:
                    bought = ts + pd.Timedelta(minutes=1)
                    rows.append((customer, f"P{product:03d}", bought, "purchase"))
    events = pd.DataFrame(rows, columns=["customer_id", "product_id", "ts", "type"])
    events["value"] = np.nan
    extra = unviewed or {}
    products = pd.DataFrame(
        {
            "product_id": [f"P{n:03d}" for n in range(n_products)] + list(extra),
            "category": [f"c{c}" for c in category] + ["c0"] * len(extra),
            "price": 10.0,
            "launch_ts": [END - (days - d) * DAY for d in [*launch, *extra.values()]],
        }
    )
    segments = pd.Series({c: int(c[1]) for c in events["customer_id"].unique()})
    return Interactions.from_events(
        events, products=products, segments=segments, reference_time=END
    )


@pytest.fixture(scope="module")
def reasons() -> tuple[Interactions, ViewMixture]:
    data = reasons_storefront()
    return data, ViewMixture().fit(data)


def test_the_shares_say_why_each_segment_looks(reasons: tuple[Interactions, ViewMixture]) -> None:
    _, model = reasons
    own, trend, taste = (PARTS.index(p) for p in ("own", "trend", "taste"))
    loyal, followers = model.shares_[0], model.shares_[1]
    assert model.shares_.shape == (3, 3)  # two segments and the unsegmented row
    # The own part also takes taste views of products seen before, so it exceeds 0.7.
    assert loyal[own] > 0.65 and loyal[trend] < 0.1
    assert followers[trend] > 0.45 and followers[own] < loyal[own] / 2
    # Taste views (30% and 40% of the draws) split between taste and the own part.
    assert 0.15 < loyal[taste] < 0.4 and 0.15 < followers[taste] < 0.5
    assert model.trend_days_ == 45.0  # the window the views were drawn with
    assert model.heldout_views_ > 1000


def test_each_segment_gets_its_reason_first(reasons: tuple[Interactions, ViewMixture]) -> None:
    data, model = reasons
    recent = (data.products["launch_ts"] >= END - 45 * DAY).to_numpy()
    for segment in (0, 1):
        customers = [c for c in range(data.n_customers) if data.segments[c] == segment][:20]
        firsts = [int(model.recommend(c, k=1)[0][0]) for c in customers]
        if segment == 0:
            # One of a loyal customer's two favourites (their two most viewed) leads.
            for customer, first in zip(customers, firsts, strict=True):
                events = slice(data.indptr[customer], data.indptr[customer + 1])
                views = data.item[events][data.type_code[events] == 0]
                assert first in np.argsort(-np.bincount(views), kind="stable")[:2]
        else:
            # Among products they never viewed, a follower's first is a recent launch.
            unseen_firsts = [
                int(model.recommend(c, k=1, exclude=data.items_of(c))[0][0]) for c in customers
            ]
            assert recent[unseen_firsts].mean() >= 0.9
    # A segment the bundle does not know scores like no segment.
    state = data.state(0)
    unknown = CustomerState(state.items, state.types, state.age_days, segment=99)
    none = CustomerState(state.items, state.types, state.age_days, segment=-1)
    np.testing.assert_array_equal(model.score(unknown), model.score(none))
    assert not np.array_equal(model.score(state), model.score(none))


def test_a_ratings_only_export_counts_every_event_as_a_look() -> None:
    events, products, segments = checkerboard()
    purchases = events[events["type"] == "purchase"]
    data = Interactions.from_events(purchases, products=products, segments=segments)
    model = ViewMixture().fit(data)
    assert model.export_arrays()["event_weights"][2] > 0  # purchases are looks here
    for customer in (0, data.n_customers - 1):
        group = int(str(data.customers.ids([customer])[0])[1])
        items, _ = model.recommend(customer, k=3, exclude=data.items_of(customer))
        assert ((items >= GROUP_ITEMS) == bool(group)).all()


def test_a_launch_nobody_viewed_yet_counts_as_its_groups_mean() -> None:
    data = reasons_storefront(unviewed={"NEW": 299.0, "OLD": 100.0})
    model = ViewMixture().fit(data)
    new, old = data.items.index(["NEW", "OLD"])
    group = model.item_category_ * len(model.bands_) + model.item_band_
    assert group[new] == group[old]
    others = np.flatnonzero((group == group[new]) & ~np.isin(np.arange(data.n_items), [new, old]))
    views = np.bincount(data.item[data.type_code == 0], minlength=data.n_items)
    counts = views[others] + model.popularity_smoothing
    old_count = model.popularity_smoothing  # proven: on sale 200 days without a view
    mean = (counts.sum() + old_count) / (len(others) + 1)  # over the proven products
    total = counts.sum() + old_count + mean
    # A day old: no views is no evidence yet. 200 days old: it is.
    assert model.item_within_[new] == pytest.approx(mean / total)
    assert model.item_within_[old] == pytest.approx(old_count / total)
    assert model.item_trend_[new] > 0 and model.item_trend_[old] == 0
    # So a trend follower sees the new launch before the old one, in their own category.
    follower = next(c for c in range(data.n_customers) if data.segments[c] == 1)
    scores = model.score(follower, [new, old])
    assert scores[0] > 10 * scores[1]
