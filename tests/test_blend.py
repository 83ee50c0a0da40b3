"""Blend weights on constructed cases whose right answer is known; blending and filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segrec.blend import blend, normalise, weights_for
from segrec.filters import FilterRules
from segrec.settings import Settings
from tests.recommender_contract import TOY_END, checkerboard
from training.models.blend_fit import SegmentBlender, floored, sample_customers
from training.models.interactions import Interactions
from training.models.validation_ndcg import ndcg_at_k, top_k_rows
from training.train.evaluate import blended_scores
from training.train.stacks import (
    exclude,
    fit_models,
    make_models,
    relevant_mask,
    score_stack,
    seen_mask,
)


def _case(rng: np.random.Generator, n: int, informative: int, n_models: int = 3):
    """Customers whose relevant items only model ``informative`` ranks first."""
    relevant = np.zeros((n, 30), dtype=bool)
    relevant[np.arange(n), rng.integers(0, 30, n)] = True
    stack = rng.random((n, n_models, 30))
    stack[:, informative] = relevant + 0.3 * rng.random((n, 30))
    return normalise(stack), relevant


def test_each_segment_gets_the_model_that_knows_it() -> None:
    rng = np.random.default_rng(42)
    stack0, rel0 = _case(rng, 80, informative=0)
    stack1, rel1 = _case(rng, 80, informative=2)
    stack_small, rel_small = _case(rng, 5, informative=1)  # too few: backs off
    stack = np.concatenate([stack0, stack1, stack_small])
    relevant = np.concatenate([rel0, rel1, rel_small])
    segments = np.repeat([7, 8, 9], [80, 80, 5])
    blender = SegmentBlender(min_customers=30).fit(stack, relevant, relevant.sum(1), segments)
    weights = dict(zip(blender.segment_ids_.tolist(), blender.segment_weights_, strict=True))
    # Any weight that lets the informative model dominate ranks perfectly; ties keep the
    # earlier weights, so it need not reach 1.
    assert weights[7].argmax() == 0 and weights[7][0] >= 0.5
    assert weights[8].argmax() == 2 and weights[8][2] >= 0.5
    assert blender.backed_off_ == [9]
    np.testing.assert_array_equal(weights[9], blender.global_weights_)
    # Shrunk a little towards the global weights (80 customers, min 30), still near perfect.
    assert blender.validation_ndcg_[7] > 0.95
    np.testing.assert_allclose(blender.segment_weights_.sum(axis=1), 1.0)
    unknown = weights_for(
        99, blender.segment_ids_, blender.segment_weights_, blender.global_weights_
    )
    np.testing.assert_array_equal(unknown, blender.global_weights_)


def test_the_blend_sample_is_seeded_stratified_and_capped() -> None:
    # Shuffled groups of 600, 300, 60 and 10 customers; at most 200 of the 970.
    groups = np.random.default_rng(0).permutation(np.repeat([3, 1, 7, 5], [600, 300, 60, 10]))
    chosen = sample_customers(groups, 200, min_per_group=30, random_state=42)
    assert len(chosen) == 200 and len(set(chosen.tolist())) == 200
    assert (np.diff(chosen) > 0).all()  # in the customers' own order
    counts = dict(zip(*np.unique(groups[chosen], return_counts=True), strict=True))
    # The small group whole, the one of 60 at the minimum (in proportion it would get 12),
    # the large ones in proportion to their size: 160 shared 600:300.
    assert counts == {5: 10, 7: 30, 3: 107, 1: 53}
    again = sample_customers(groups, 200, min_per_group=30, random_state=42)
    np.testing.assert_array_equal(chosen, again)
    other = sample_customers(groups, 200, min_per_group=30, random_state=43)
    assert set(other.tolist()) != set(chosen.tolist())
    assert dict(zip(*np.unique(groups[other], return_counts=True), strict=True)) == counts
    # Under the cap: everyone, in order (the weights are those of the whole set).
    np.testing.assert_array_equal(sample_customers(groups, 970, min_per_group=30), np.arange(970))
    # Floors that do not fit in the cap become equal shares; the cap still holds.
    tight = sample_customers(groups, 50, min_per_group=30, random_state=42)
    assert np.bincount(groups[tight], minlength=8)[[5, 7, 3, 1]].tolist() == [10, 13, 14, 13]
    assert len(sample_customers(groups, 0, min_per_group=30)) == 0
    with pytest.raises(ValueError, match="at least 0"):
        sample_customers(groups, -1, min_per_group=30)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="customers, models, candidates"):
        SegmentBlender().fit(np.zeros((2, 3)), np.zeros((2, 3), bool), np.ones(2), np.zeros(2))


def test_ndcg_by_hand() -> None:
    # Ranking by score: items 2, 0, 1. Relevant: item 0 (position 2) and item 1 (position 3).
    # DCG = 1/log2(3) + 1/log2(4) = 0.6309 + 0.5; ideal (2 hits) = 1 + 0.6309.
    scores = np.array([[0.5, 0.1, 0.9]])
    relevant = np.array([[True, True, False]])
    expected = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert ndcg_at_k(scores, relevant, np.array([2]), k=3)[0] == pytest.approx(expected)
    # A relevant item outside the candidates still counts in the ideal.
    assert ndcg_at_k(scores, relevant, np.array([3]), k=3)[0] < expected


def test_normalise_and_blend_keep_contributions() -> None:
    scores = np.array([[2.0, 4.0, np.nan], [1.0, 1.0, 1.0]])
    normalised = normalise(scores)
    np.testing.assert_array_equal(normalised, [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    total, parts = blend(normalised, np.array([0.25, 0.75]))
    np.testing.assert_allclose(total, parts.sum(axis=0))
    np.testing.assert_allclose(total, [0.0, 0.25, 0.0])


def test_filters_stock_repeat_categories_and_diversity() -> None:
    rules = FilterRules(
        in_stock=np.array([True, True, False, True, True, True]),
        category=np.array([0, 0, 0, 1, 1, 2]),
        repeat_category=np.array([False, True, False]),
        max_per_category=2,
    )
    allowed = rules.allowed(bought=np.array([0, 3]))
    # 0 bought in a no-repeat category: out; 3 bought where repeats are normal: stays; 2: no stock.
    assert allowed.tolist() == [False, True, False, True, True, True]
    assert rules.allowed(bought=np.array([0]), exclude_bought=False)[0]
    assert rules.diversify(np.array([3, 4, 1, 5, 0]), k=4).tolist() == [3, 4, 1, 5]
    capped = FilterRules(rules.in_stock, rules.category, rules.repeat_category, max_per_category=1)
    assert capped.diversify(np.array([3, 4, 1, 5, 0]), k=4).tolist() == [3, 1, 5]


def _blend_ndcg(blender: SegmentBlender, stack, relevant, segments) -> float:
    scores = blended_scores(stack, blender, segments)
    return float(ndcg_at_k(scores, relevant, relevant.sum(1), blender.k).mean())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_blend_is_never_worse_than_the_best_single_model_on_validation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, items = 120, 40
    relevant = rng.random((n, items)) < 0.08
    relevant[np.arange(n), rng.integers(0, items, n)] = True
    # Models of mixed use: noise, a weak and a strong signal, and one that knows half.
    strength = np.array([0.0, 0.3, 1.0, 2.0])
    stack = rng.random((n, 4, items)) + strength[None, :, None] * relevant[:, None, :]
    stack[: n // 2, 3] = rng.random((n // 2, items))
    stack = normalise(stack)
    segments = rng.integers(0, 3, n)
    blender = SegmentBlender(min_customers=30, floor_model=1, floor_tolerance=0.05).fit(
        stack, relevant, relevant.sum(1), segments
    )
    singles = [ndcg_at_k(stack[:, m], relevant, relevant.sum(1), 10).mean() for m in range(4)]
    assert blender.single_ndcg_ == pytest.approx(singles, abs=1e-5)
    assert _blend_ndcg(blender, stack, relevant, segments) >= max(singles) - 1e-9
    # Each fitted segment too, before the new-product floor (its recorded value).
    for segment, value in blender.validation_ndcg_.items():
        mine = segments == segment
        best = max(
            ndcg_at_k(stack[mine, m], relevant[mine], relevant[mine].sum(1), 10).mean()
            for m in range(4)
        )
        assert value >= round(best, 4) - 1e-4


def test_shrinking_never_takes_a_segment_below_its_best_single_model() -> None:
    rng = np.random.default_rng(7)
    n_big, n_small, items = 200, 40, 30
    segments = np.repeat([0, 1], [n_big, n_small])
    relevant = np.zeros((n_big + n_small, items), dtype=bool)
    relevant[np.arange(len(segments)), rng.integers(0, items, len(segments))] = True
    stack = rng.random((len(segments), 3, items))
    # The large segment is ranked by model 0 and so are the global weights; the small one
    # by model 2, whose relevant items lead by only 0.05: a quarter of anything else mixed
    # in (what shrinking 40 customers towards the global weights does) buries them.
    stack[:n_big, 0] = relevant[:n_big] + 0.3 * rng.random((n_big, items))
    stack[n_big:, 2] = 0.9 + 0.05 * relevant[n_big:] + 0.01 * rng.random((n_small, items))
    blender = SegmentBlender(min_customers=15).fit(stack, relevant, relevant.sum(1), segments)
    small = segments == 1
    alone = ndcg_at_k(stack[small, 2], relevant[small], relevant[small].sum(1), 10).mean()
    assert alone > 0.95
    shrunk = 40 / (40 + 15) * np.eye(3)[2] + 15 / (40 + 15) * blender.global_weights_
    mixed = np.einsum("m,cmi->ci", shrunk, stack[small])
    assert ndcg_at_k(mixed, relevant[small], relevant[small].sum(1), 10).mean() < 0.7 * alone
    assert blender.validation_ndcg_[1] >= alone - 1e-9
    assert _blend_ndcg(blender, stack[small], relevant[small], segments[small]) >= alone - 1e-9


def test_new_product_floor_is_the_largest_that_validation_allows() -> None:
    rng = np.random.default_rng(5)
    n, items = 200, 30
    relevant = np.zeros((n, items), dtype=bool)
    relevant[np.arange(n), rng.integers(0, items, n)] = True
    stack = rng.random((n, 3, items))
    stack[:, 0] += 1.5 * relevant  # knows most customers
    stack[:40, 2] += 3.0 * relevant[:40]  # the new-products model: knows a fifth, sharply
    stack = normalise(stack)
    segments = np.zeros(n, dtype=int)
    for tolerance in (0.0, 0.05):
        blender = SegmentBlender(floor_model=2, floor_tolerance=tolerance).fit(
            stack, relevant, relevant.sum(1), segments
        )
        floor = blender.new_product_floor_
        values = {float(f): v for f, v in blender.floor_ndcg_.items()}
        best = max(values.values())
        allowed = [
            f
            for f, v in values.items()
            if v >= (1 - tolerance) * best - 1e-5 and v >= max(blender.single_ndcg_) - 1e-5
        ]
        assert floor == max(allowed)
        assert (blender.segment_weights_[:, 2] >= floor - 1e-12).all()
        assert blender.global_weights_[2] >= floor - 1e-12
        np.testing.assert_allclose(blender.segment_weights_.sum(axis=1), 1.0)
    assert floor > 0  # with 5% to spare, the new-products model keeps a share
    assert floored(np.array([[0.6, 0.4, 0.0], [0.1, 0.1, 0.8]]), 2, 0.3).round(3).tolist() == [
        [0.42, 0.28, 0.3],
        [0.1, 0.1, 0.8],
    ]


def test_repeat_model_weight_is_fitted_where_repeats_count() -> None:
    rng = np.random.default_rng(9)
    n, items = 100, 30
    relevant = np.zeros((n, items), dtype=bool)
    relevant[np.arange(n), rng.integers(0, items, n)] = True
    stack = rng.random((n, 3, items))
    stack[:, 1] += 2.0 * relevant
    stack[:, 2] = 0.0  # the repeat model cannot score new items
    stack = normalise(stack)
    # Where repeats count, half the relevant items are repeats only the repeat model knows.
    repeat_relevant = relevant.copy()
    repeat_relevant[np.arange(n), rng.integers(0, items, n)] = True
    repeat_stack = stack.copy()
    repeat_stack[:, 2] = normalise(rng.random((n, items)) + 2.0 * (repeat_relevant & ~relevant))
    segments = np.zeros(n, dtype=int)
    plain = SegmentBlender(repeat_model=2).fit(stack, relevant, relevant.sum(1), segments)
    assert plain.global_weights_[2] == 0.0 and plain.repeat_share_ == {}
    blender = SegmentBlender(repeat_model=2).fit(
        stack,
        relevant,
        relevant.sum(1),
        segments,
        repeats=(repeat_stack, repeat_relevant, repeat_relevant.sum(1), segments),
    )
    share = blender.repeat_share_["global"]
    assert 0 < share < 1
    np.testing.assert_allclose(blender.global_weights_[:2], (1 - share) * plain.global_weights_[:2])
    assert _blend_ndcg(blender, repeat_stack, repeat_relevant, segments) > _blend_ndcg(
        plain, repeat_stack, repeat_relevant, segments
    )
    # New items rank as before: the repeat model scores them all alike.
    assert _blend_ndcg(blender, stack, relevant, segments) == pytest.approx(
        _blend_ndcg(plain, stack, relevant, segments)
    )


def test_several_own_history_models_get_their_shares_in_turn() -> None:
    """Column 2 knows repeat purchases, column 3 viewed items not bought yet: both are held
    at 0 on new items and each gets a share where the customer's own items count."""
    rng = np.random.default_rng(11)
    n, items = 120, 30
    relevant = np.zeros((n, items), dtype=bool)
    relevant[np.arange(n), rng.integers(0, items, n)] = True
    stack = rng.random((n, 4, items))
    stack[:, 1] += 2.0 * relevant
    stack[:, 2:] = 0.0  # neither own-history model scores new items
    stack = normalise(stack)
    own = relevant.copy()
    repeats = rng.integers(0, items, n)
    viewed = rng.integers(0, items, n)
    own[np.arange(n), repeats] = own[np.arange(n), viewed] = True
    own_stack = stack.copy()
    noise = rng.random((n, 2, items))
    noise[np.arange(n), 0, repeats] += 2.0
    noise[np.arange(n), 1, viewed] += 2.0
    own_stack[:, 2:] = normalise(noise)
    segments = np.zeros(n, dtype=int)
    view = (own_stack, own, own.sum(1), segments)
    only_first = SegmentBlender(repeat_model=2).fit(
        stack, relevant, relevant.sum(1), segments, repeats=view
    )
    both = SegmentBlender(repeat_model=(2, 3)).fit(
        stack, relevant, relevant.sum(1), segments, repeats=view
    )
    assert only_first.global_weights_[3] >= 0  # searched on new items: it does nothing there
    assert both.repeat_share_["global"] > 0 and both.repeat_share_["3:global"] > 0
    assert both.global_weights_.sum() == pytest.approx(1.0)
    assert _blend_ndcg(both, own_stack, own, segments) > _blend_ndcg(
        only_first, own_stack, own, segments
    )
    with pytest.raises(ValueError, match="repeat_model 7"):
        SegmentBlender(repeat_model=(2, 7)).fit(stack, relevant, relevant.sum(1), segments)


def test_a_freshly_launched_product_of_the_favourite_category_reaches_the_blend() -> None:
    """Validation: everyone buys one of their category's new products; test: a product
    launched after the last event, in the customer's category, is in their top 10."""
    events, products, segments = checkerboard()
    launches = []
    # Products nobody has touched yet: V ones sell in validation, T ones are launched last.
    for tag, count in (("V", 3), ("T", 1)):
        for group, category in ((0, "garden"), (1, "kitchen")):
            for n in range(count):
                launches.append(
                    {
                        "product_id": f"P{group}{tag}{n}",
                        "category": category,
                        "title": f"new {category} {n}",
                        "description": category,
                        "brand": "Novo",
                        "price": 10.0 + 20 * group,
                    }
                )
    catalogue = pd.concat([products, pd.DataFrame(launches)], ignore_index=True)
    customers = sorted(events["customer_id"].unique())
    bought = pd.DataFrame(
        {
            "customer_id": customers,
            "product_id": [f"P{c[1]}V{i % 3}" for i, c in enumerate(customers)],
            "ts": TOY_END + pd.Timedelta(days=5),
            "type": "purchase",
            "value": np.nan,
        }
    )
    settings = Settings()
    train = Interactions.from_events(
        events, products=catalogue, segments=segments, reference_time=TOY_END
    )
    models = fit_models(make_models(settings), train)
    index = train.customers.index(customers)
    held = [train.items.index([p]) for p in bought["product_id"]]
    stack = exclude(score_stack(models, train, index), seen_mask(train, index))
    names = list(models)
    relevant = relevant_mask(held, train.n_items)
    blender = SegmentBlender(
        repeat_model=names.index("buy_again"), floor_model=names.index("new_arrivals")
    ).fit(stack, relevant, relevant.sum(1), np.asarray(train.segments))
    assert blender.global_weights_[names.index("new_arrivals")] > 0

    after = Interactions.from_events(
        pd.concat([events, bought], ignore_index=True),
        products=catalogue,
        segments=segments,
        reference_time=TOY_END + pd.Timedelta(days=10),
    )
    models = fit_models(make_models(settings), after)
    index = after.customers.index(customers)
    scores = blended_scores(
        exclude(score_stack(models, after, index), seen_mask(after, index)),
        blender,
        np.asarray(after.segments),
    )
    for row, customer in enumerate(customers):
        ranking = after.items.ids(np.argsort(-scores[row], kind="stable")).tolist()
        own, other = f"P{customer[1]}T0", f"P{1 - int(customer[1])}T0"
        assert ranking.index(own) < min(10, ranking.index(other)), (customer, ranking[:10])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_rows_equals_a_full_stable_sort(seed: int) -> None:
    """The partition-based top k ranks exactly as the full stable sort it replaces: ties
    (to the lower position) across the k-th place, excluded items, NaN and k >= items."""
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n, m = int(rng.integers(1, 20)), int(rng.integers(1, 40))
        k = int(rng.integers(1, m + 2))
        scores = (
            rng.integers(0, 4, (n, m)).astype(float) if rng.random() < 0.5 else rng.random((n, m))
        )
        scores[rng.random((n, m)) < 0.2] = -1e9
        if rng.random() < 0.3:
            scores[rng.random((n, m)) < 0.2] = np.nan
        expected = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, m)]
        assert np.array_equal(top_k_rows(scores, min(k, m)), expected)
