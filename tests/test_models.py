"""Recommenders: the shared contract on a checkerboard, hand-computed answers, the
library cross-checks (Surprise, implicit), and a hit-rate check on the small storefront."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from implicit.nearest_neighbours import bm25_weight
from threadpoolctl import threadpool_limits

from segrec.scoring import (
    EVENT_TYPES,
    CustomerState,
    als_confidence,
    als_fold_in,
    score_candidates,
    top_k,
)
from tests.conftest import Dataset
from tests.recommender_contract import (
    GROUP_ITEMS,
    TOY_END,
    RecommenderContract,
    checkerboard,
    toy_interactions,
)
from training.models.als import ALS
from training.models.base import Recommender
from training.models.buy_again import BuyAgain
from training.models.category_popularity import CategoryPopularity
from training.models.content import Content
from training.models.interactions import (
    DAY,
    EventWeights,
    IdVocabulary,
    Interactions,
    customer_state,
    held_out_items,
    temporal_split,
)
from training.models.interest import Interest
from training.models.new_arrivals import NewArrivals, launch_age_days
from training.models.popularity import Popularity
from training.models.svd import SVD
from training.models.view_mixture import ViewMixture

SEED = 42


@pytest.fixture(scope="module", autouse=True)
def single_threaded_blas() -> Iterator[None]:
    """One BLAS thread: on a small shared machine, OpenBLAS threads waiting for a busy
    core made TruncatedSVD's small dense solves 100x slower."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def frame(rows: list[tuple[str, str, str, str, float]]) -> pd.DataFrame:
    """Events from (customer, product, day, type, value) tuples."""
    events = pd.DataFrame(rows, columns=["customer_id", "product_id", "ts", "type", "value"])
    events["ts"] = pd.to_datetime(events["ts"], utc=True)
    return events


# --- the shared contract, once per model -------------------------------------------------


class TestGlobalPopularity(RecommenderContract):
    finds_groups = False
    invalid_params: ClassVar[dict[str, Any]] = {
        "half_life_days": 0.0,
        "segment_prior": -1.0,
        "event_weights": {},
    }

    def make_model(self, **params: Any) -> Recommender:
        return Popularity(**params)


class TestSegmentPopularity(RecommenderContract):
    invalid_params: ClassVar[dict[str, Any]] = {"window_days": -3.0}

    def make_model(self, **params: Any) -> Recommender:
        return Popularity(by_segment=True, **params)


class TestTrendingPopularity(RecommenderContract):
    finds_groups = False

    def make_model(self, **params: Any) -> Recommender:
        return Popularity(half_life_days=7.0, window_days=30.0, **params)


class TestCategoryPopularity(RecommenderContract):
    invalid_params: ClassVar[dict[str, Any]] = {
        "prior_strength": 0.0,
        "affinity_half_life_days": -1,
    }

    def make_model(self, **params: Any) -> Recommender:
        return CategoryPopularity(**params)


class TestBuyAgain(RecommenderContract):
    finds_groups = False
    fills_k = False
    invalid_params: ClassVar[dict[str, Any]] = {"half_life_days": 0, "repeat_prior": -1.0}

    def make_model(self, **params: Any) -> Recommender:
        return BuyAgain(**params)


class TestInterest(RecommenderContract):
    finds_groups = False
    fills_k = False
    invalid_params: ClassVar[dict[str, Any]] = {"half_life_days": 0, "cart_weight": -1.0}

    def make_model(self, **params: Any) -> Recommender:
        return Interest(**params)


class TestSVD(RecommenderContract):
    has_similar_items = True
    invalid_params: ClassVar[dict[str, Any]] = {
        "embedding_size": 0,
        "feedback": "stars",
        "learning_rate": 0.0,
    }

    def make_model(self, **params: Any) -> Recommender:
        defaults: dict[str, Any] = {
            # Strong regularisation and few epochs: with one fixed sample of negatives,
            # longer training fits the sample's noise instead of the two groups.
            "embedding_size": 4,
            "epochs": 50,
            "learning_rate": 0.01,
            "reg": 0.2,
            "random_state": SEED,
        }
        return SVD(**{**defaults, **params})


class TestALS(RecommenderContract):
    has_similar_items = True
    invalid_params: ClassVar[dict[str, Any]] = {
        "weighting": "tfidf",
        "epochs": 0,
        "alpha": 0.0,
        "bm25_b": 2.0,
    }

    def make_model(self, **params: Any) -> Recommender:
        # One implicit thread: OpenMP barriers crawl when another process holds a core.
        defaults: dict[str, Any] = {
            "embedding_size": 4,
            "reg": 0.1,
            "num_threads": 1,
            "random_state": SEED,
        }
        return ALS(**{**defaults, **params})


class TestALSBM25(TestALS):
    def make_model(self, **params: Any) -> Recommender:
        return super().make_model(**{"weighting": "bm25", **params})


class TestALSLog(TestALS):
    def make_model(self, **params: Any) -> Recommender:
        return super().make_model(**{"weighting": "log", "half_life_days": 30.0, **params})


class TestNewArrivals(RecommenderContract):
    # On the checkerboard every product is weeks old; the category lift still keeps each
    # customer in their own group's products.
    invalid_params: ClassVar[dict[str, Any]] = {"half_life_days": 0.0, "prior_strength": -1}

    def make_model(self, **params: Any) -> Recommender:
        return NewArrivals(**params)


class TestContent(RecommenderContract):
    has_similar_items = True
    invalid_params: ClassVar[dict[str, Any]] = {"embedding_size": 0, "price_bands": 0}

    def make_model(self, **params: Any) -> Recommender:
        defaults: dict[str, Any] = {"embedding_size": 8, "random_state": SEED}
        return Content(**{**defaults, **params})


# --- interactions, vocabularies and splits ----------------------------------------------


def test_vocabulary_maps_unknown_ids_to_minus_one() -> None:
    vocab = IdVocabulary(["P3", "P1", "P3", "P2"])
    assert len(vocab) == 3
    np.testing.assert_array_equal(vocab.index(["P1", "nope", "P2", "P3"]), [1, -1, 2, 0])
    assert vocab.index_of("nope") == -1
    assert "P1" in vocab
    assert vocab.to_array().dtype.kind == "U"
    assert list(IdVocabulary.from_values(["b", "a", "b"]).to_array()) == ["a", "b"]


def test_confidence_sums_event_weights_with_decay() -> None:
    events = frame(
        [
            ("c1", "P1", "2026-01-31", "view", np.nan),
            ("c1", "P1", "2026-01-31", "purchase", np.nan),
            ("c1", "P2", "2026-01-21", "add_to_cart", np.nan),
            ("c1", "P2", "2026-01-21", "remove_from_cart", np.nan),
            ("c2", "P3", "2026-01-11", "rating", 4.0),
            ("c2", "P9", "2026-01-11", "wishlist", np.nan),
        ]
    )
    data = Interactions.from_events(events, reference_time="2026-01-31")
    assert (data.n_customers, data.n_items) == (2, 4)
    assert data.dropped_events == 1  # the unknown event type
    weights = EventWeights(view=1, add_to_cart=3, purchase=5, rating=2, remove_from_cart=0)
    plain = data.confidence(weights)
    assert plain.shape == (2, 4)
    assert plain.dtype == np.float32
    np.testing.assert_allclose(plain.toarray(), [[6, 3, 0, 0], [0, 0, 2, 0]])
    decayed = data.confidence(weights, half_life_days=10.0).toarray()
    np.testing.assert_allclose(decayed, [[6, 1.5, 0, 0], [0, 0, 0.5, 0]], rtol=1e-6)
    assert plain.nnz == 3  # P9 only had an unknown event; nothing stored for it


def test_interactions_refuse_events_after_the_reference_time() -> None:
    events = frame([("c1", "P1", "2026-02-02", "view", np.nan)])
    with pytest.raises(ValueError, match="split by time"):
        Interactions.from_events(events, reference_time="2026-02-01")


def test_interactions_use_the_product_catalogue_as_item_vocabulary() -> None:
    events = frame(
        [
            ("c1", "P2", "2026-01-01", "view", np.nan),
            ("c1", "P7", "2026-01-01", "view", np.nan),
        ]
    )
    products = pd.DataFrame({"product_id": ["P1", "P2", "P3"]})
    data = Interactions.from_events(events, products=products, segments={"c1": 4, "c9": 1})
    assert list(data.items.to_array()) == ["P1", "P2", "P3"]
    assert data.dropped_events == 1
    np.testing.assert_array_equal(data.items_of(0), [1])
    assert data.segments is not None and list(data.segments) == [4]
    assert data.state(-1).items.size == 0


def test_customer_state_from_raw_events_drops_unknown_products() -> None:
    items = IdVocabulary(["P1", "P2"])
    events = frame(
        [
            ("new", "P2", "2026-01-01", "purchase", np.nan),
            ("new", "P5", "2026-01-01", "view", np.nan),
        ]
    )
    state = customer_state(events, items, now="2026-01-03", segment=2)
    np.testing.assert_array_equal(state.items, [1])
    np.testing.assert_array_equal(state.types, [EVENT_TYPES.index("purchase")])
    np.testing.assert_allclose(state.age_days, [2.0])
    assert state.segment == 2


def test_temporal_split_never_leaks_the_future(tiny: Dataset) -> None:
    events = tiny.clean("events")
    split = temporal_split(events, test_days=30, validation_days=20)
    assert len(split.train) + len(split.validation) + len(split.test) == len(events)
    assert split.train["ts"].max() <= split.validation_cut < split.validation["ts"].min()
    assert split.validation["ts"].max() <= split.test_cut < split.test["ts"].min()
    assert split.test_cut - split.validation_cut == pd.Timedelta(days=20)
    assert len(split.before_test) == len(split.train) + len(split.validation)
    # Training interactions anchored at the cut accept the train side only.
    Interactions.from_events(split.train, reference_time=split.validation_cut)
    with pytest.raises(ValueError, match="split by time"):
        Interactions.from_events(split.before_test, reference_time=split.validation_cut)


def test_held_out_items_per_customer() -> None:
    items = IdVocabulary(["P1", "P2", "P3"])
    test = frame(
        [
            ("a", "P3", "2026-01-01", "purchase", np.nan),
            ("a", "P1", "2026-01-02", "purchase", np.nan),
            ("a", "P3", "2026-01-03", "purchase", np.nan),
            ("a", "P2", "2026-01-03", "view", np.nan),
            ("new", "P2", "2026-01-03", "purchase", np.nan),
            ("new", "P8", "2026-01-03", "purchase", np.nan),
        ]
    )
    held = held_out_items(test, items)
    assert held.keys() == {"a", "new"}
    np.testing.assert_array_equal(held["a"], [0, 2])
    np.testing.assert_array_equal(held["new"], [1])
    np.testing.assert_array_equal(held_out_items(test, items, types=["view"])["a"], [1])


# --- scoring helpers ---------------------------------------------------------------------


def test_top_k_breaks_ties_by_index_and_skips_nan_and_excluded() -> None:
    scores = np.array([0.5, np.nan, 0.9, 0.5, 0.5, 0.1])
    items, values = top_k(scores, 3, exclude=np.array([2]))
    np.testing.assert_array_equal(items, [0, 3, 4])
    np.testing.assert_array_equal(values, [0.5, 0.5, 0.5])
    assert len(top_k(scores, 10)[0]) == 5
    items, _ = top_k(np.array([1.0, 2.0]), 1, items=np.array([40, 7]))
    np.testing.assert_array_equal(items, [7])


def test_fold_in_solves_the_weighted_least_squares() -> None:
    rng = np.random.default_rng(SEED)
    y = rng.normal(size=(12, 3))
    items, conf = np.array([2, 5, 7]), np.array([3.0, 1.5, 6.0])
    x = als_fold_in(y, items, conf, reg=0.3)
    c = np.ones(12)
    c[items] = conf
    p = np.zeros(12)
    p[items] = 1.0
    # Normal equations of sum_i c_i (p_i - x . y_i)^2 + reg |x|^2.
    expected = np.linalg.solve(y.T @ (c[:, None] * y) + 0.3 * np.eye(3), y.T @ (c * p))
    np.testing.assert_allclose(x, expected)


def test_scoring_imports_numpy_only() -> None:
    """Serving installs no pandas, scikit-learn, Surprise or implicit."""
    code = (
        "import sys, segrec.scoring; "
        "print(sorted({'pandas', 'sklearn', 'surprise', 'implicit', 'scipy'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unknown_model_kind() -> None:
    with pytest.raises(ValueError, match="unknown model kind"):
        score_candidates("magic", {}, CustomerState())


# --- model specifics ---------------------------------------------------------------------


def test_segment_popularity_shrinks_towards_global() -> None:
    events = frame(
        [
            ("a", "P1", "2026-01-01", "view", np.nan),
            ("b", "P2", "2026-01-01", "view", np.nan),
            ("c", "P2", "2026-01-01", "view", np.nan),
            ("c", "P2", "2026-01-01", "view", np.nan),
        ]
    )
    data = Interactions.from_events(events, segments={"a": 0, "b": 1, "c": 1})
    model = Popularity(by_segment=True, segment_prior=4.0).fit(data)
    np.testing.assert_allclose(model.item_scores_, [0.25, 0.75])
    # Segment 0: (1 + 4 * 0.25) / (1 + 4) for P1, (0 + 4 * 0.75) / 5 for P2.
    np.testing.assert_allclose(model.segment_scores_[0], [0.4, 0.6])
    # Segment 1: three events on P2, so (0 + 4 * 0.25) / (3 + 4) for P1.
    np.testing.assert_allclose(model.score(CustomerState(segment=1)), [1 / 7, 6 / 7])
    np.testing.assert_allclose(model.score(CustomerState(segment=7)), [0.25, 0.75])
    with pytest.raises(ValueError, match="segments"):
        Popularity(by_segment=True).fit(Interactions.from_events(events))


def test_trending_popularity_counts_recent_events_only() -> None:
    events = frame(
        [
            ("a", "P1", "2025-06-01", "purchase", np.nan),
            ("b", "P1", "2025-06-02", "purchase", np.nan),
            ("c", "P2", "2026-01-10", "view", np.nan),
            ("d", "P3", "2026-01-20", "view", np.nan),
        ]
    )
    data = Interactions.from_events(events, reference_time="2026-01-20")
    trending = Popularity(half_life_days=10.0, window_days=30.0).fit(data)
    # P1 is outside the window; P2 is one half-life old.
    np.testing.assert_allclose(trending.item_scores_, [0, 0.5 / 1.5, 1 / 1.5])
    assert Popularity().fit(data).recommend(-1, k=1)[0][0] == 0


def test_buy_again_ranks_repeats_and_recency() -> None:
    events = frame(
        [
            ("a", "P1", "2025-10-01", "purchase", np.nan),
            ("a", "P1", "2025-11-01", "purchase", np.nan),
            ("a", "P2", "2026-01-01", "purchase", np.nan),
            ("b", "P2", "2026-01-01", "purchase", np.nan),
            ("b", "P3", "2026-01-01", "view", np.nan),
        ]
    )
    data = Interactions.from_events(events, reference_time="2026-01-01")
    model = BuyAgain(half_life_days=30.0, repeat_prior=0.0).fit(data)
    # P1: 1 of 1 buyers repeats; P2: 0 of 2; global rate 1/3 only matters with a prior.
    np.testing.assert_allclose(model.repeat_rate_, [1.0, 0.0, 0.0])
    assert model.global_repeat_rate_ == pytest.approx(1 / 3)
    expected_p1 = 2 ** (-92 / 30) + 2 ** (-61 / 30)
    np.testing.assert_allclose(model.score(0), [expected_p1, 0.0, 0.0])
    smoothed = BuyAgain(half_life_days=30.0, repeat_prior=3.0).fit(data)
    items, _ = smoothed.recommend(0, k=5)
    np.testing.assert_array_equal(items, [1, 0])  # recent P2 beats old P1 here
    assert smoothed.recommend(1, k=5)[0].tolist() == [1]  # viewed P3 is not "again"
    assert smoothed.recommend(-1, k=5)[0].size == 0


def test_interest_ranks_repeated_views_and_carts_with_recency() -> None:
    events = frame(
        [
            ("a", "P1", "2025-12-02", "view", np.nan),
            ("a", "P1", "2026-01-01", "view", np.nan),
            ("a", "P2", "2026-01-01", "add_to_cart", np.nan),
            ("a", "P3", "2026-01-01", "purchase", np.nan),
            ("b", "P3", "2026-01-01", "view", np.nan),
        ]
    )
    data = Interactions.from_events(events, reference_time="2026-01-01")
    model = Interest(half_life_days=30.0, cart_weight=3.0).fit(data)
    a = data.customers.index_of("a")
    # P1: a view 30 days ago (half weight) and one today; P2: a cart today; P3 bought only.
    np.testing.assert_allclose(model.score(a), [1.5, 3.0, 0.0])
    assert model.recommend(a, k=5)[0].tolist() == [1, 0]
    assert model.recommend(a, k=5, exclude=[1])[0].tolist() == [0]
    assert model.recommend(data.customers.index_of("b"), k=5)[0].tolist() == [2]
    assert model.recommend(-1, k=5)[0].size == 0
    # A live view at request time counts like a training one.
    live = CustomerState(items=[0, 2], types=[0, 0], age_days=[0.0, 0.0])
    np.testing.assert_allclose(model.score(live), [1.0, 0.0, 1.0])


def test_svd_implicit_mapping_follows_the_documented_table() -> None:
    from training.models.svd import implicit_ratings

    events = frame(
        [
            ("a", "P1", "2026-01-01", "purchase", np.nan),
            ("a", "P1", "2026-01-01", "purchase", np.nan),
            ("a", "P2", "2026-01-01", "purchase", np.nan),
            ("a", "P3", "2026-01-01", "add_to_cart", np.nan),
            ("a", "P4", "2026-01-01", "view", np.nan),
            ("a", "P5", "2025-12-02", "view", np.nan),
            ("a", "P6", "2025-10-01", "purchase", np.nan),
            ("a", "P6", "2025-10-05", "rating", 2.0),
        ]
    )
    data = Interactions.from_events(events, reference_time="2026-01-01")
    ratings = implicit_ratings(data, half_life_days=30.0)
    np.testing.assert_allclose(ratings["rating"], [5.0, 4.5, 4.0, 3.0, 2.5, 2.0])


def test_svd_chooses_explicit_ratings_only_when_they_cover_the_data(small: Dataset) -> None:
    ratings = frame(
        [
            (c, p, "2026-01-01", "rating", float(1 + (i + j) % 5))
            for i, c in enumerate("abcd")
            for j, p in enumerate(["P1", "P2", "P3"])
        ]
    )
    assert SVD(random_state=0).fit(Interactions.from_events(ratings)).feedback_ == "explicit"
    storefront = Interactions.from_events(small.clean("events").head(20_000))
    model = SVD(epochs=2, random_state=0).fit(storefront)
    assert model.feedback_ == "implicit"


def test_svd_numpy_scores_match_surprise_and_never_enumerate_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import surprise

    def forbidden(*args: object) -> None:
        raise AssertionError("build_anti_testset enumerates every unrated pair")

    monkeypatch.setattr(surprise.Trainset, "build_anti_testset", forbidden)
    data = toy_interactions()
    model = SVD(embedding_size=3, epochs=5, random_state=SEED, keep_surprise=True).fit(data)
    trainset, algo = model.trainset_, model.algo_
    for customer in (0, 13, 39):
        inner_u = trainset.to_inner_uid(customer)
        expected = [
            algo.estimate(inner_u, trainset.to_inner_iid(item)) for item in range(data.n_items)
        ]
        np.testing.assert_allclose(model.score(customer), expected, rtol=1e-9)
    # Unknown customers get Surprise's bias-only estimate mu + b_i.
    inner_i = trainset.to_inner_iid(4)
    assert model.score(-1)[4] == pytest.approx(algo.estimate("nobody", inner_i))
    assert model.export_customer_arrays()["user_factors"].shape == (data.n_customers, 3)


def test_als_orientation_with_more_items_than_customers() -> None:
    events = frame([(c, f"P{i}", "2026-01-01", "purchase", np.nan) for c in "ab" for i in range(7)])
    model = ALS(embedding_size=3, num_threads=1, random_state=0).fit(
        Interactions.from_events(events)
    )
    assert model.user_factors_.shape == (2, 3)
    assert model.item_factors_.shape == (7, 3)


def test_als_bm25_matches_implicit_bm25_weight() -> None:
    data = toy_interactions()
    model = ALS(
        embedding_size=2, weighting="bm25", bm25_k1=1.2, bm25_b=0.75, epochs=1, num_threads=1
    )
    model.fit(data)
    raw = data.confidence(model.event_weights)
    expected = bm25_weight(raw.T, K1=1.2, B=0.75).T.tocsr()
    np.testing.assert_allclose(model.confidence_.toarray(), expected.toarray(), rtol=1e-5)


@pytest.mark.parametrize("weighting", ["none", "log", "bm25"])
def test_als_fold_in_matches_implicit_recalculate_user(weighting: str) -> None:
    data = toy_interactions()
    model = ALS(
        embedding_size=4, weighting=weighting, alpha=3.0, num_threads=1, random_state=SEED
    ).fit(data)
    arrays = model.export_arrays()
    for customer in (0, 25):
        state = data.state(customer)  # events only, no stored factors: forces the fold-in
        items, conf = als_confidence(arrays, state)
        np.testing.assert_allclose(items, model.confidence_[customer].indices)
        # implicit multiplies its input by alpha itself.
        np.testing.assert_allclose(conf / 3.0, model.confidence_[customer].data, rtol=1e-5)
        expected = model.model_.recalculate_user(customer, model.confidence_[customer])
        folded = als_fold_in(model.item_factors_, items, conf, model.reg, model.gramian_)
        np.testing.assert_allclose(folded, expected, rtol=1e-3, atol=1e-5)
        from_events = model.score(state)
        np.testing.assert_allclose(from_events, model.item_factors_ @ folded, rtol=1e-5)


def test_als_folds_in_a_new_customer_towards_their_group() -> None:
    data = toy_interactions()
    model = ALS(embedding_size=4, reg=0.1, num_threads=1, random_state=SEED).fit(data)
    garden = data.items.index(["P000", "P003", "P007", "P011"])
    state = CustomerState(
        items=garden, types=np.array([2, 2, 0, 2]), age_days=np.array([1.0, 3.0, 3.0, 9.0])
    )
    items, _ = model.recommend(state, k=5, exclude=garden)
    assert (items < GROUP_ITEMS).all()


def test_content_profiles_equal_profiles_from_events() -> None:
    data = toy_interactions()
    model = Content(embedding_size=8, random_state=SEED).fit(data)
    for customer in (0, 33):
        np.testing.assert_allclose(
            model.profile(data.state(customer)), model.profiles_[customer], atol=1e-6
        )
    assert model.profile(CustomerState()).any() == np.False_


def test_content_handles_a_new_product_nobody_bought() -> None:
    events, products, _ = checkerboard()
    new = {
        "product_id": "P0NEW",
        "title": "Verdo garden hose reel",
        "description": "hose rake spade trowel shears for the garden lawn",
        "category": "garden",
        "brand": "Verdo",
        "price": 12.0,
    }
    catalogue = pd.concat([products, pd.DataFrame([new])], ignore_index=True)
    data = Interactions.from_events(events, products=catalogue)
    model = Content(embedding_size=8, n_neighbours=5, random_state=SEED).fit(data)
    item = data.items.index_of("P0NEW")
    similar, _ = model.similar_items(item, k=5)
    assert (similar < GROUP_ITEMS).all()
    np.testing.assert_array_equal(model.neighbours_[item], similar)
    garden_fan = data.customers.index_of("g0_00")
    assert model.score(garden_fan, [item])[0] > model.score(garden_fan, [GROUP_ITEMS])[0]


def _with_new_products(launch: dict[str, str] | None = None) -> Interactions:
    """The checkerboard plus two products nobody touched: a garden one and a kitchen one."""
    events, products, segments = checkerboard()
    new = pd.DataFrame(
        [
            {"product_id": "P0NEW", "category": "garden", "brand": "Verdo", "price": 9.0},
            {"product_id": "P1NEW", "category": "kitchen", "brand": "Cucina", "price": 29.0},
        ]
    )
    catalogue = pd.concat([products, new], ignore_index=True)
    if launch is not None:
        catalogue["launch_ts"] = pd.to_datetime(catalogue["product_id"].map(launch), utc=True)
    return Interactions.from_events(
        events, products=catalogue, segments=segments, reference_time=TOY_END
    )


def test_launch_age_is_first_seen_and_zero_for_products_nobody_touched() -> None:
    data = _with_new_products()
    ages = launch_age_days(data)
    first = pd.DataFrame({"item": data.item, "age": data.age_days}).groupby("item")["age"].max()
    np.testing.assert_allclose(ages[first.index.to_numpy()], first.to_numpy())
    assert ages[data.items.index(["P0NEW", "P1NEW"])].tolist() == [0.0, 0.0]
    # A catalogue launch date wins where it is known; a future launch counts as today.
    launched = _with_new_products(
        {"P000": str(TOY_END - 200 * DAY), "P1NEW": str(TOY_END + 3 * DAY)}
    )
    ages = launch_age_days(launched)
    assert ages[launched.items.index_of("P000")] == pytest.approx(200.0)
    assert ages[launched.items.index_of("P1NEW")] == 0.0
    assert ages[launched.items.index_of("P001")] == launch_age_days(data)[1]


def test_new_arrivals_puts_the_new_product_of_the_favourite_category_first() -> None:
    data = _with_new_products()
    model = NewArrivals().fit(data)
    for customer, expected in (("g0_00", "P0NEW"), ("g1_05", "P1NEW")):
        index = data.customers.index_of(customer)
        items, _ = model.recommend(index, k=1, exclude=data.items_of(index))
        assert data.items.ids(items).tolist() == [expected]
    # Nobody's history: both new products lead, in catalogue order.
    items, _ = model.recommend(-1, k=2)
    assert sorted(data.items.ids(items)) == ["P0NEW", "P1NEW"]


def test_new_arrivals_freshness_halves_every_half_life() -> None:
    data = _with_new_products({"P000": str(TOY_END - 21 * DAY), "P001": str(TOY_END - 42 * DAY)})
    model = NewArrivals(half_life_days=21.0, prior_strength=1e6).fit(data)
    scores = model.score(-1, data.items.index(["P0NEW", "P000", "P001"]))
    # A huge prior makes every lift 1: what is left is freshness.
    np.testing.assert_allclose(scores, [1.0, 0.5, 0.25], rtol=1e-4)


# --- the small synthetic storefront ------------------------------------------------------


def hit_rate(
    model: Recommender, data: Interactions, held: dict[str, np.ndarray], k: int = 10
) -> float:
    hits = [
        np.isin(model.recommend(data.customers.index_of(c), k)[0], items).any()
        for c, items in held.items()
    ]
    return float(np.mean(hits))


def random_hit_rate(n_items: int, held: dict[str, np.ndarray], k: int = 10) -> float:
    """Expected hit rate of a uniformly random ranking: 1 - C(n - m, k) / C(n, k)."""
    rates = []
    for items in held.values():
        miss = np.prod((n_items - len(items) - np.arange(k)) / (n_items - np.arange(k)))
        rates.append(1.0 - miss)
    return float(np.mean(rates))


@pytest.fixture(scope="module")
def storefront_split(small: Dataset) -> tuple[Interactions, dict[str, np.ndarray]]:
    """Train before the last 28 days; held-out purchases of known customers after."""
    split = temporal_split(small.clean("events"), test_days=28, validation_days=0)
    data = Interactions.from_events(
        split.train, products=small.clean("products"), reference_time=split.validation_cut
    )
    held = {
        c: items
        for c, items in held_out_items(split.test, data.items).items()
        if c in data.customers
    }
    assert len(held) > 300
    return data, held


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        BuyAgain(),
        SVD(random_state=SEED),
        ALS(num_threads=1, random_state=SEED),
        Content(random_state=SEED),
        Popularity(by_segment=False, half_life_days=14.0, window_days=60.0),
        CategoryPopularity(),
        ViewMixture(),
    ],
    ids=["buy_again", "svd", "als", "content", "trending", "category_popularity", "view_mixture"],
)
def test_models_beat_random_ranking_on_a_time_split(
    model: Recommender, storefront_split: tuple[Interactions, dict[str, np.ndarray]]
) -> None:
    data, held = storefront_split
    model.fit(data)
    baseline = random_hit_rate(data.n_items, held)
    assert hit_rate(model, data, held) > 5 * baseline
