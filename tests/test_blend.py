"""Blend weights on constructed cases whose right answer is known; blending and filters."""

from __future__ import annotations

import numpy as np
import pytest

from segrec.blend import blend, normalise, weights_for
from segrec.filters import FilterRules
from training.models.blend_fit import SegmentBlender, ndcg_at_k


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
