"""Ranking over candidate pools (training.models.validation_ndcg.PooledScores): exactly the
NDCG of ranking over the whole catalogue, and the blend fit's weights unchanged by it."""

from __future__ import annotations

import numpy as np
import pytest

from training.models.blend_fit import SegmentBlender
from training.models.validation_ndcg import PooledScores, ndcg_at_k


def _stack(seed: int, customers: int = 120, items: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-looking scores of five kinds of model: dense, coarse (many ties), sparse
    (mostly zero, like new arrivals), near-duplicates of another, and constant rows (a model
    with no opinion); held-out items that the dense models half know."""
    rng = np.random.default_rng(seed)
    relevant = rng.random((customers, items)) < 0.01
    relevant[:5] = False  # customers without a held-out item
    dense = rng.random((customers, items)) + 0.6 * relevant
    coarse = np.round(rng.random((customers, items)) * 8) / 8
    sparse = np.where(rng.random((customers, items)) < 0.03, rng.random((customers, items)), 0.0)
    twin = np.round(dense, 2)
    flat = np.zeros((customers, items))
    stack = np.stack([dense, coarse, sparse, twin, flat], axis=1)
    stack /= stack.max(axis=2, keepdims=True).clip(min=1e-12)
    return stack, relevant


def _whole(weights: np.ndarray, stack: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    spec = "cm,cmi->ci" if weights.ndim == 2 else "m,cmi->ci"
    return ndcg_at_k(np.einsum(spec, weights, stack), relevant, relevant.sum(1), k)


@pytest.mark.parametrize(("seed", "pools"), [(0, [20]), (1, [20]), (2, [10, 40]), (3, [10, 40])])
def test_pooled_ndcg_equals_ranking_the_whole_catalogue(seed: int, pools: list[int]) -> None:
    stack, relevant = _stack(seed)
    k = 10
    scored = PooledScores.build(stack, relevant, relevant.sum(1), k=k, pools=pools)
    assert scored.pooled and len(scored.widths) == len(pools) + 1
    assert scored.widths == sorted(scored.widths) and scored.widths[-1] == stack.shape[2]
    rng = np.random.default_rng(100 + seed)
    corners = [*np.eye(5), np.full(5, 0.2), np.zeros(5)]
    draws = list(rng.dirichlet(np.ones(5), size=30)) + list(rng.dirichlet([0.2] * 5, size=30))
    settled = unsettled = 0
    for weights in corners + draws:
        assert np.array_equal(scored.ndcg(weights), _whole(weights, stack, relevant, k))
        blended = np.einsum("m,cmi->ci", weights, scored.scores)
        kth = -np.sort(-blended, axis=1)[:, k - 1]
        bound = scored.bound @ weights
        settled += int((kth > bound).sum())
        unsettled += int((kth <= bound).sum())
    # Both paths ran: pooled ranks that the bound settles, and whole-catalogue ranks.
    assert settled > 0 and unsettled > 0
    per_customer = rng.dirichlet(np.ones(5), size=len(stack))
    assert np.array_equal(scored.ndcg(per_customer), _whole(per_customer, stack, relevant, k))


def test_a_subset_ranks_its_customers_as_the_whole_does() -> None:
    stack, relevant = _stack(7)
    scored = PooledScores.build(stack, relevant, relevant.sum(1), k=5, pools=[15])
    chosen = np.random.default_rng(7).random(len(stack)) < 0.3
    part = scored.subset(chosen)
    assert part.fallback is scored.fallback  # shared, not copied
    for weights in np.random.default_rng(8).dirichlet(np.ones(5), size=20):
        expected = _whole(weights, stack[chosen], relevant[chosen], 5)
        assert np.array_equal(part.ndcg(weights), expected)


def test_no_pool_on_a_small_catalogue_or_non_finite_scores() -> None:
    stack, relevant = _stack(1, items=150)
    assert not PooledScores.build(stack, relevant, relevant.sum(1), k=10, pools=[100]).pooled
    stack, relevant = _stack(1)
    stack[3, 0, 7] = np.nan
    plain = PooledScores.build(stack, relevant, relevant.sum(1), k=10, pools=[20])
    assert not plain.pooled and plain.scores is stack
    weights = np.full(5, 0.2)
    assert np.array_equal(plain.ndcg(weights), _whole(weights, stack, relevant, 10))


def test_the_blend_fit_is_the_same_with_and_without_pools() -> None:
    stack, relevant = _stack(3, customers=240, items=800)
    segments = np.random.default_rng(3).integers(0, 3, len(stack))
    repeats = (stack, relevant, relevant.sum(1), segments)

    def fitted(pools: list[int]) -> SegmentBlender:
        return SegmentBlender(
            min_customers=40, max_seconds=600, repeat_model=3, floor_model=2, pools=pools
        ).fit(stack, relevant, relevant.sum(1), segments, repeats=repeats)

    pooled, whole = fitted([12, 40, 150]), fitted([])
    assert pooled.pooled_ and not whole.pooled_
    assert np.array_equal(pooled.global_weights_, whole.global_weights_)
    assert np.array_equal(pooled.segment_weights_, whole.segment_weights_)
    assert pooled.single_ndcg_ == whole.single_ndcg_
    assert pooled.validation_ndcg_ == whole.validation_ndcg_
    assert pooled.floor_ndcg_ == whole.floor_ndcg_
    assert pooled.repeat_share_ == whole.repeat_share_
