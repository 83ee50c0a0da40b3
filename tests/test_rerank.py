"""The re-ranker: trees exported as arrays and walked with numpy, its features, its slots
for unseen products, and the cross-validated choice between it and the blend."""

from __future__ import annotations

import doctest
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

import segrec.rerank
import segrec.trees
import training.models.reranker
from segrec.blend import COLD_START
from segrec.rerank import (
    CUSTOMER_FEATURES,
    customer_features,
    design,
    feature_names,
    rerank,
    top_candidates,
)
from segrec.scoring import CustomerState
from segrec.trees import WALK_ELEMENTS, tree_scores, walk_arrays
from tests.hand_trees import own_views_stump
from training.models.reranker import (
    RerankData,
    Reranker,
    average_trees,
    bagged_rows,
    export_trees,
    fit_reranker,
    gate_groups,
)


def _meta(groups: tuple[int, ...] = (-2, 0, 1), depth: int = 20) -> dict[str, np.ndarray]:
    return {
        "groups": np.array(groups),
        "reranked_groups": np.array(groups),
        "depth": np.asarray(depth),
        "history_events": np.asarray(100),
        "trend_days": np.asarray(42.0),
    }


@pytest.mark.parametrize(
    "module", [segrec.trees, segrec.rerank, training.models.reranker], ids=lambda m: m.__name__
)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("leaves", [3, 15, 31])
def test_exported_trees_score_exactly_as_scikit_learn(leaves: int) -> None:
    rng = np.random.default_rng(leaves)
    x = rng.random((3000, 6))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the learned side
    y = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1] * x[:, 2]) > 0.6
    model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=leaves, random_state=0)
    model.fit(x, y)
    arrays = export_trees(model)
    block = WALK_ELEMENTS // len(arrays["tree_feature"])
    test = rng.random((3 * block + 7, 6))  # several blocks and a part of one
    test[rng.random(test.shape) < 0.05] = np.nan
    assert np.allclose(tree_scores(arrays, test), model.decision_function(test), atol=1e-12)
    assert tree_scores(arrays, test[:0]).shape == (0,)
    # Serving lays the trees out for the walk once; the scores are the same.
    laid_out = {**arrays, **walk_arrays(arrays)}
    assert np.array_equal(tree_scores(laid_out, test), tree_scores(arrays, test))


def test_averaged_trees_score_the_mean_of_their_ensembles() -> None:
    """Ensembles of different sizes and widths side by side: the walk of the average is
    the mean of the walks, and of scikit-learn's scores."""
    rng = np.random.default_rng(7)
    x = rng.random((2000, 4))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * rng.random(2000) > 0.8
    models = [
        HistGradientBoostingClassifier(max_iter=n, max_leaf_nodes=leaves, random_state=n).fit(x, y)
        for n, leaves in ((20, 3), (35, 15), (10, 7))
    ]
    averaged = average_trees([export_trees(m) for m in models])
    assert averaged["tree_feature"].shape[0] == 65
    test = rng.random((300, 4))
    test[rng.random(test.shape) < 0.05] = np.nan
    expected = np.mean([m.decision_function(test) for m in models], axis=0)
    assert np.allclose(tree_scores(averaged, test), expected, atol=1e-12)
    with pytest.raises(ValueError, match="no ensembles"):
        average_trees([])


def test_bagged_rows_draw_their_own_negatives_and_match_the_features_of_each_item() -> None:
    data = _staples_case(12, seed=4)
    meta = _meta((0,), depth=40)
    customers = np.arange(12)
    bags = bagged_rows(meta, data, customers, 8, seeds=[11, 12])
    assert len(bags) == 2
    first_draw = np.random.default_rng(11)
    start = 0
    for c in customers:
        # The first bag is exactly one seeded draw: the customer's purchases, then the
        # drawn candidates that are not purchases, each row the item's own features.
        eligible = np.flatnonzero((data.blended[c] >= 0) & ~data.unseen[c])
        drawn = first_draw.choice(eligible, size=8, replace=False)
        items = np.concatenate(
            [eligible[data.relevant[c, eligible]], drawn[~data.relevant[c, drawn]]]
        )
        x, y = bags[0]
        rows = slice(start, start + len(items))
        start += len(items)
        expected = design(
            meta,
            data.normalised[c],
            data.blended[c],
            items,
            data.states[c],
            0,
            data.launch_age_days[c],
        )
        assert np.array_equal(x[rows], expected)
        assert np.array_equal(y[rows], data.relevant[c, items])
    assert start == len(bags[0][1])
    # The second bag drew other negatives but holds the same purchases.
    assert bags[0][1].sum() == bags[1][1].sum() == data.relevant.sum()
    assert not np.array_equal(bags[0][0], bags[1][0])


def test_a_multiclass_or_categorical_model_is_refused() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((300, 2))
    three = HistGradientBoostingClassifier(max_iter=3).fit(x, rng.integers(0, 3, 300))
    with pytest.raises(ValueError, match="binary"):
        export_trees(three)
    categorical = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0])
    categorical.fit(np.c_[rng.integers(0, 4, 300), x[:, 1]], rng.random(300) < 0.5)
    with pytest.raises(ValueError, match="categorical"):
        export_trees(categorical)


def test_the_reranker_follows_the_estimator_contract() -> None:
    model = Reranker(max_depth=2, max_leaf_nodes=4, max_iter=30, random_state=3)
    assert model.get_params() == {
        "max_depth": 2,
        "max_leaf_nodes": 4,
        "max_iter": 30,
        "learning_rate": 0.05,
        "random_state": 3,
    }
    rng = np.random.default_rng(0)
    x = rng.random((500, 3))
    assert model.fit(x, x[:, 0] > 0.5) is model
    assert model.n_trees_ == 30
    with pytest.raises(ValueError, match="both relevant and other"):
        Reranker().fit(x, np.zeros(500, bool))


def test_customer_features_count_the_newest_history_events_only() -> None:
    # Newest first by age: item 2 (trend: launched 5 days before the view), 2 again, then
    # item 0 viewed 200 days ago and a purchase of item 1.
    state = CustomerState(items=[0, 2, 2, 1], types=[0, 0, 0, 2], age_days=[200.0, 1.0, 2.0, 3.0])
    launch = np.array([500.0, 300.0, 6.0])
    everything = customer_features(state, launch, history_events=10, trend_days=42)
    # Views: 2, 2, 0 -> trend share 2/3, one repeat of 3 views, 4 events.
    assert everything.tolist() == pytest.approx([2 / 3, 1 / 3, np.log1p(4)])
    newest = customer_features(state, launch, history_events=2, trend_days=42)
    assert newest.tolist() == pytest.approx([1.0, 0.5, np.log1p(2)])
    assert customer_features(CustomerState(), launch, history_events=5, trend_days=1).tolist() == [
        0.0,
        0.0,
        0.0,
    ]


def test_design_rows_name_every_column() -> None:
    meta = _meta()
    normalised = np.array([[0.2, -1.0, 0.9, 0.1], [0.5, -1.0, 0.4, 0.0]])  # item 1 excluded
    blended = np.array([0.35, -1.0, 0.65, 0.05])
    state = CustomerState(items=[3, 3, 0], types=[0, 0, 2], age_days=[1.0, 2.0, 3.0])
    rows = design(meta, normalised, blended, np.array([2, 1, 3]), state, 0, np.zeros(4))
    names = feature_names(["a", "b"], [-2, 0, 1])
    assert rows.shape == (3, len(names))
    column = dict(zip(names, rows.T, strict=True))
    assert column["score_a"].tolist() == [0.9, 0.0, 0.1]  # excluded scores count as 0
    assert column["blend"].tolist() == [0.65, 0.0, 0.05]
    assert column["group_0"].tolist() == [1.0] * 3 and column["group_1"].tolist() == [0.0] * 3
    assert column["own_views"].tolist() == [0.0, 0.0, 2.0]
    assert all(name in column for name in CUSTOMER_FEATURES)


def test_rerank_reorders_the_top_keeps_unseen_slots_and_the_rest_behind() -> None:
    meta = _meta(depth=4)
    n_items = 8
    arrays = own_views_stump(meta, ["a"], [-2, 0, 1])
    blended = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, -1.0, 0.3]])
    normalised = blended[:, None, :].copy()
    unseen = np.zeros(n_items, bool)
    unseen[1] = True  # a new product: keeps its second place
    state = CustomerState(items=[3, 7], types=[0, 0], age_days=[1.0, 1.0])
    scores = rerank(arrays, normalised, blended, [state], [0], np.zeros(n_items), unseen)[0]
    order = np.argsort(-scores, kind="stable")
    # Top 4 of the blend: 0, 1, 2, 3. Item 3 was viewed: it moves first; 1 keeps slot 2;
    # item 7 was viewed too but is past the depth, so it stays behind, in blend order.
    assert order[:4].tolist() == [3, 1, 0, 2]
    # Each slot keeps the blend's score of its rank: the scale serving adds context to.
    assert scores[[3, 1, 0, 2]] == pytest.approx([0.9, 0.8, 0.7, 0.6], abs=1e-8)
    assert scores[[4, 5, 7]].tolist() == [0.5, 0.4, 0.3] and scores[6] == -1.0
    assert top_candidates(blended[0], 4).tolist() == [0, 1, 2, 3]


def test_customers_of_groups_left_out_keep_the_blends_order() -> None:
    """The same customer re-ranked in group 0 and left in the blend's order in group 1,
    which the arrays leave out; training, evaluation and serving all go through this."""
    n_items = 8
    arrays = own_views_stump(_meta(depth=4), ["a"], [-2, 0, 1], reranked_groups=[-2, 0])
    blended = np.tile([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.2, 0.3], (2, 1))
    normalised = blended[:, None, :].copy()
    state = CustomerState(items=[3], types=[0], age_days=[1.0])
    scores = rerank(
        arrays,
        normalised,
        blended,
        [state, state],
        [0, 1],
        np.zeros(n_items),
        np.zeros(n_items, bool),
    )
    assert np.argsort(-scores[0], kind="stable")[:4].tolist() == [3, 0, 1, 2]
    assert scores[1].tolist() == blended[1].tolist()


def _staples_case(n_customers: int, seed: int) -> RerankData:
    """Customers buy the items they viewed at least twice; the blend (random scores over
    two models) knows nothing of that, so only the re-ranker's own-views feature does."""
    rng = np.random.default_rng(seed)
    n_items = 40
    normalised = rng.random((n_customers, 2, n_items))
    blended = normalised.mean(axis=1)
    relevant = np.zeros((n_customers, n_items), bool)
    states = []
    for c in range(n_customers):
        staples = rng.choice(n_items, 3, replace=False)
        browsed = rng.choice(n_items, 6)
        items = np.concatenate([staples, staples, browsed])
        states.append(
            CustomerState(items=items, types=np.zeros(len(items)), age_days=np.arange(len(items)))
        )
        views = np.bincount(items, minlength=n_items)
        relevant[c] = views >= 2
    return RerankData(
        normalised=normalised,
        blended=blended,
        relevant=relevant,
        n_relevant=relevant.sum(axis=1),
        states=states,
        groups=np.zeros(n_customers, np.int64),
        launch_age_days=[np.zeros(n_items)] * n_customers,
        unseen=[np.zeros(n_items, bool)] * n_customers,
    )


def test_the_reranker_is_kept_when_it_beats_the_blend_out_of_sample() -> None:
    data = _staples_case(200, seed=1)
    refits: list[int] = []

    def refit_blend(rows: np.ndarray) -> np.ndarray:
        refits.append(int(rows.sum()))
        return data.blended  # nothing to fit: the blend is fixed here

    fitted = fit_reranker(
        data, _meta((0,), depth=40), refit_blend=refit_blend, k=10, negatives=20, seed=0
    )
    summary = fitted.summary
    assert len(refits) == 2 and sum(refits) == 200  # each fold's blend on the other half
    assert fitted.trees is not None and summary["chosen"] is True
    assert summary["bags"] == 5 and summary["n_trees"] == len(fitted.trees["tree_feature"])
    best = summary["cv_ndcg"][str(summary["max_depth"])]
    assert best > summary["blend_cv_ndcg"] + 0.3
    assert set(fitted.arrays) >= {"tree_feature", "groups", "depth"}
    # The exported trees rank a fresh sample of the same kind far better than the blend.
    fresh = _staples_case(50, seed=2)
    scores = rerank(
        fitted.arrays,
        fresh.normalised,
        fresh.blended,
        fresh.states,
        fresh.groups.tolist(),
        fresh.launch_age_days,
        fresh.unseen,
    )
    hits = np.take_along_axis(fresh.relevant, np.argsort(-scores, axis=1)[:, :3], axis=1)
    assert hits.mean() > 0.9


def test_the_blend_is_kept_when_the_trees_cannot_beat_it() -> None:
    data = _staples_case(120, seed=3)
    # A blend that already puts every staple first: the trees can only tie.
    perfect = data.blended + 2.0 * data.relevant
    fitted = fit_reranker(
        RerankData(**{**data.__dict__, "blended": perfect}),
        _meta((0,), depth=40),
        refit_blend=lambda rows: perfect,
        k=10,
        negatives=20,
        seed=0,
    )
    assert fitted.trees is None and fitted.arrays == {}
    assert fitted.summary["chosen"] is False
    assert fitted.summary["blend_cv_ndcg"] == pytest.approx(1.0)
    assert "as high or higher" in fitted.summary["reason"]


def test_groups_where_the_trees_lose_beyond_the_interval_keep_the_blends_order() -> None:
    """Group 0 buys what it viewed twice (the trees' own-views feature knows, the random
    blend does not). Group 1's blend ranks its purchases first and its customers never
    buy what they viewed twice; no one-hot names groups 0 and 1, so trees learnt mostly
    on group 0 move the wrong items up there. Cold start (staples again) is left out
    unless ``cold_start``."""
    data = _staples_case(300, seed=4)
    groups = np.repeat([0, 1, COLD_START], [200, 60, 40])
    rng = np.random.default_rng(5)
    relevant = data.relevant.copy()
    blended = data.blended.copy()
    for c in np.flatnonzero(groups == 1):
        relevant[c] = False
        bought = rng.choice(np.flatnonzero(~data.relevant[c]), 3, replace=False)
        relevant[c, bought] = True
        blended[c, bought] = blended[c].max() + 0.01  # the blend's first three
    case = RerankData(
        **{
            **data.__dict__,
            "relevant": relevant,
            "n_relevant": relevant.sum(axis=1),
            "blended": blended,
            "groups": groups,
        }
    )
    options: dict[str, Any] = {
        "refit_blend": lambda rows: blended,
        "k": 10,
        "negatives": 20,
        "seed": 0,
        "depths": (2,),
    }
    fitted = fit_reranker(case, _meta((COLD_START,), depth=40), **options)
    by_group = fitted.summary["cv_by_group"]
    assert fitted.summary["chosen"] is True
    assert by_group["1"]["difference"][2] < 0
    assert by_group["1"] | {"is_reranked": False} == by_group["1"]
    assert by_group["1"]["reason"] == "loses beyond the interval"
    assert by_group["0"]["is_reranked"] and by_group["0"]["difference"][1] > 0
    assert by_group[str(COLD_START)]["reason"] == "SEGREC_RERANK_COLD_START is off"
    assert fitted.arrays["reranked_groups"].tolist() == [0]
    # Judged as served: customers left out count at the blend's NDCG.
    served = sum(
        g["customers"] * (g["reranked"] if g["is_reranked"] else g["blend"])
        for g in by_group.values()
    )
    assert fitted.summary["cv_ndcg_gated"] == pytest.approx(served / 300, abs=1e-4)
    # What the summary says is what scoring does: group 1 and cold start keep the blend.
    scores = rerank(
        fitted.arrays,
        case.normalised,
        blended,
        case.states,
        groups.tolist(),
        case.launch_age_days,
        case.unseen,
    )
    assert np.array_equal(scores[groups != 0], blended[groups != 0])
    assert not np.array_equal(scores[groups == 0], blended[groups == 0])
    # Cold start re-ranked when asked: it is staples, where the trees win.
    with_cold = fit_reranker(case, _meta((COLD_START, 0, 1), depth=40), cold_start=True, **options)
    assert with_cold.arrays["reranked_groups"].tolist() == [COLD_START, 0]


def test_gate_groups_reports_every_group_and_keeps_ties() -> None:
    groups = np.repeat([3, 4], 40)
    blend = np.tile([0.1, 0.3], 40)
    kept, why = gate_groups(blend, blend, groups, confidence=0.95, cold_start=False, seed=1)
    assert kept.tolist() == [3, 4]  # a tie is no evidence against the trees
    assert why["3"]["difference"] == [0.0, 0.0, 0.0] and why["3"]["customers"] == 40
