"""The re-ranker: boosted trees that reorder the blend's best candidates per customer.

Fitted on the validation customers the blend's own-history shares are fitted on (the
view where repeats count and the business filters apply, as serving shows), after the
blend: each customer's held-out purchases against ``negatives`` other candidates drawn at
random (seeded). One draw of negatives moves a single fit noticeably, so a re-ranker is
the average of ``bags`` fits, each on its own draw (:func:`average_trees`: their trees side
by side, values divided by their number); on the default data that lifted the
cross-validated NDCG@10 from 0.135 to 0.143 (and let larger trees win).
:func:`fit_reranker` picks the tree depth by 2-fold cross-validation over those customers
and keeps the re-ranker only if its cross-validated NDCG@k (the customers it does not
re-rank at the blend's, below) beats the blend's, cross-validated the same way: in each
fold the blend weights are refitted on the other half, and the trees learn on the other
half on top of that blend, so neither has seen the customers it is judged on (the
blend's NDCG on the customers it was fitted on would flatter it).

Which customers it re-ranks is decided on the same out-of-fold NDCG, per blend group
(:func:`gate_groups`): a group keeps the blend's order when the re-ranker loses there
beyond the paired bootstrap interval of the difference (``group_confidence``), and cold-start
customers keep it unless ``cold_start`` says otherwise. The trees read the customer's
recent events (views, repeats, launches, their views of the candidate), which cold-start
customers barely have, so for them the trees can only re-weigh the model scores the
blend's cold-start weights were fitted for on exactly those customers; on validation the
re-ranker lost there at every data size measured (see the README). A group left out
keeps the blend's per-segment weights, which were fitted on its customers. The trees
still learn from every group's customers (the cross-validation that chose them did).

The features and the scoring are :mod:`segrec.rerank`'s (numpy): the fitted trees are
exported with :func:`export_trees` and every score, here too, comes from
:func:`segrec.trees.tree_scores`, the code serving runs.

Example
-------
>>> rng = np.random.default_rng(0)
>>> x = rng.random((400, 2)); y = x[:, 0] > 0.5
>>> model = Reranker(max_iter=20, random_state=0).fit(x, y)
>>> bool((model.decision_function(np.array([[0.9, 0.5]])) > 0).all())
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.utils.validation import check_is_fitted

from segrec.blend import COLD_START
from segrec.rerank import Candidates, candidates, design, reorder
from segrec.scoring import CustomerState
from segrec.trees import TREE_ARRAYS, tree_scores
from training.evaluation.intervals import paired_bootstrap
from training.models.validation_ndcg import ndcg_at_k

# Tree depths tried by cross-validation, each tree with up to 2**depth leaves. Serving
# walks one level per step for every tree, so its cost is trees x depth: capped trees
# scored as well as free-growing ones on validation in 40% fewer steps.
DEPTHS = (2, 3, 4)
BAGS = 5  # fits averaged per re-ranker, each on its own draw of negatives


def export_trees(model: HistGradientBoostingClassifier) -> dict[str, np.ndarray]:
    """A fitted binary ``HistGradientBoostingClassifier`` as :mod:`segrec.trees` arrays."""
    check_is_fitted(model)
    if len(model.classes_) != 2:
        raise ValueError("only a binary classifier's trees can be exported")
    nodes = [predictors[0].nodes for predictors in model._predictors]
    if any(n["is_categorical"].any() for n in nodes):
        raise ValueError("categorical splits are not supported; one-hot encode instead")
    width = max(len(n) for n in nodes)
    arrays = {
        "tree_feature": np.zeros((len(nodes), width), np.int64),
        "tree_threshold": np.zeros((len(nodes), width)),
        "tree_missing_left": np.zeros((len(nodes), width), bool),
        "tree_left": np.tile(np.arange(width), (len(nodes), 1)),
        "tree_right": np.tile(np.arange(width), (len(nodes), 1)),
        "tree_value": np.zeros((len(nodes), width)),
    }
    for t, n in enumerate(nodes):
        split = ~n["is_leaf"].astype(bool)
        size = len(n)
        arrays["tree_feature"][t, :size] = np.where(split, n["feature_idx"], 0)
        arrays["tree_threshold"][t, :size] = np.where(split, n["num_threshold"], 0.0)
        arrays["tree_missing_left"][t, :size] = n["missing_go_to_left"].astype(bool)
        arrays["tree_left"][t, :size] = np.where(split, n["left"], np.arange(size))
        arrays["tree_right"][t, :size] = np.where(split, n["right"], np.arange(size))
        arrays["tree_value"][t, :size] = np.where(split, 0.0, n["value"])
    arrays["tree_baseline"] = np.asarray(float(np.ravel(model._baseline_prediction)[0]))
    arrays["tree_depth"] = np.asarray(max(int(n["depth"].max()) for n in nodes), np.int64)
    return arrays


class Reranker(BaseEstimator):
    """Boosted trees (scikit-learn's ``HistGradientBoostingClassifier``) on re-ranking
    features; scores through the exported arrays.

    Parameters
    ----------
    max_depth : int, default=3
    max_leaf_nodes : int, default=8
    max_iter : int, default=200
        Trees at most (early stopping on a seeded 10% of the rows may stop sooner).
    learning_rate : float, default=0.05
    random_state : int, default=0
    """

    def __init__(
        self,
        max_depth: int = 3,
        max_leaf_nodes: int = 8,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        random_state: int = 0,
    ) -> None:
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: np.ndarray) -> Self:
        labels = np.asarray(y).astype(bool)
        if labels.all() or not labels.any():
            raise ValueError("the re-ranker needs both relevant and other candidates")
        model = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            max_leaf_nodes=self.max_leaf_nodes,
            random_state=self.random_state,
        ).fit(x, labels)
        self.trees_ = export_trees(model)
        self.n_trees_ = int(self.trees_["tree_feature"].shape[0])
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Log-odds that each row is a relevant candidate."""
        check_is_fitted(self)
        return tree_scores(self.trees_, x)


@dataclass
class RerankData:
    """Validation customers for the re-ranker: every model's normalised scores
    (customers, models, items), the blend's (customers, items), relevant items, and per
    customer the state (events before the window), blend group and item launch ages."""

    normalised: np.ndarray
    blended: np.ndarray
    relevant: np.ndarray
    n_relevant: np.ndarray
    states: Sequence[CustomerState]
    groups: np.ndarray
    launch_age_days: Sequence[np.ndarray]
    unseen: Sequence[np.ndarray]  # per customer: items without training interactions


@dataclass
class RerankFit:
    trees: dict[str, np.ndarray] | None  # averaged trees; None: the blend ranks better
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # the bundle's ``rerank``
    summary: dict[str, Any] = field(default_factory=dict)


def average_trees(ensembles: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One ensemble whose :func:`segrec.trees.tree_scores` is the mean of the given
    ensembles' (their trees side by side, leaf values and baselines divided by their
    number; narrower trees padded with unreachable nodes)."""
    if not ensembles:
        raise ValueError("no ensembles to average")
    width = max(e["tree_feature"].shape[1] for e in ensembles)
    out: dict[str, np.ndarray] = {}
    for name in TREE_ARRAYS[:-2]:
        parts = []
        for e in ensembles:
            trees, nodes = e[name].shape
            if name in ("tree_left", "tree_right"):
                pad = np.tile(np.arange(nodes, width), (trees, 1))  # point to themselves
            else:
                pad = np.zeros((trees, width - nodes), e[name].dtype)
            parts.append(np.hstack([e[name], pad]))
        out[name] = np.vstack(parts)
    out["tree_value"] = out["tree_value"] / len(ensembles)
    out["tree_baseline"] = np.asarray(np.mean([float(e["tree_baseline"]) for e in ensembles]))
    out["tree_depth"] = np.asarray(max(int(e["tree_depth"]) for e in ensembles), np.int64)
    return out


def bagged_rows(
    meta: dict[str, np.ndarray],
    data: RerankData,
    customers: np.ndarray,
    negatives: int,
    seeds: Sequence[int],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per seed, feature rows and labels: each customer's relevant items and
    ``negatives`` other candidates (not excluded, seen in training: the ones re-ranked)
    drawn at random with that seed. A customer's features are built once for the items
    of every draw."""
    draws = [np.random.default_rng(seed) for seed in seeds]
    rows: list[list[np.ndarray]] = [[] for _ in seeds]
    labels: list[list[np.ndarray]] = [[] for _ in seeds]
    for c in customers:
        eligible = np.flatnonzero((data.blended[c] >= 0) & ~data.unseen[c])
        relevant = eligible[data.relevant[c, eligible]]
        picked = []
        for rng in draws:
            drawn = rng.choice(eligible, size=min(len(eligible), negatives), replace=False)
            picked.append(np.concatenate([relevant, drawn[~data.relevant[c, drawn]]]))
        union = np.unique(np.concatenate(picked))
        features = design(
            meta,
            data.normalised[c],
            data.blended[c],
            union,
            data.states[c],
            int(data.groups[c]),
            data.launch_age_days[c],
        )
        for b, items in enumerate(picked):
            rows[b].append(features[np.searchsorted(union, items)])
            labels[b].append(data.relevant[c, items])
    return [(np.vstack(x), np.concatenate(y)) for x, y in zip(rows, labels, strict=True)]


def _bag(depth: int, bags: list[tuple[np.ndarray, np.ndarray]], seed: int) -> dict[str, np.ndarray]:
    """The averaged trees (at most ``depth`` levels) of one re-ranker per draw of
    negatives (seeds ``seed + b``)."""
    return average_trees(
        [
            Reranker(max_depth=depth, max_leaf_nodes=2**depth, random_state=seed + b)
            .fit(x, y)
            .trees_
            for b, (x, y) in enumerate(bags)
        ]
    )


def _candidates(meta: dict[str, np.ndarray], data: RerankData, customers: np.ndarray) -> Candidates:
    return candidates(
        meta,
        data.normalised[customers],
        data.blended[customers],
        [data.states[c] for c in customers],
        data.groups[customers].tolist(),
        [data.launch_age_days[c] for c in customers],
        [data.unseen[c] for c in customers],
    )


def gate_groups(
    reranked: np.ndarray,
    blend: np.ndarray,
    groups: np.ndarray,
    *,
    confidence: float,
    cold_start: bool,
    seed: int,
) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """The blend groups to re-rank, and why, from each customer's out-of-fold NDCG@k
    re-ranked and by the blend alone: every group but those where the re-ranker's
    paired bootstrap interval of the difference lies wholly below 0 (at ``confidence``,
    seeded) and, unless ``cold_start``, :data:`segrec.blend.COLD_START`.

    >>> groups = np.repeat([1, 2, COLD_START], 50)
    >>> blend = np.tile([0.2, 0.4], 75)
    >>> reranked = blend + np.repeat([0.05, -0.05, 0.0], 50)
    >>> kept, why = gate_groups(reranked, blend, groups, confidence=0.95,
    ...                         cold_start=False, seed=0)
    >>> kept.tolist(), why["2"]["reason"], why[str(COLD_START)]["reason"]
    ([1], 'loses beyond the interval', 'SEGREC_RERANK_COLD_START is off')
    """
    kept, why = [], {}
    for group in np.unique(groups).tolist():
        mine = groups == group
        difference = paired_bootstrap(
            reranked[mine], blend[mine], confidence=confidence, random_state=seed
        )
        entry: dict[str, Any] = {
            "customers": int(mine.sum()),
            "blend": round(float(blend[mine].mean()), 5),
            "reranked": round(float(reranked[mine].mean()), 5),
            "difference": [
                round(v, 5) for v in (difference.estimate, difference.low, difference.high)
            ],
        }
        if group == COLD_START and not cold_start:
            entry.update(is_reranked=False, reason="SEGREC_RERANK_COLD_START is off")
        elif difference.high < 0:
            entry.update(is_reranked=False, reason="loses beyond the interval")
        else:
            entry.update(is_reranked=True)
            kept.append(group)
        why[str(group)] = entry
    return np.asarray(kept, dtype=np.int64), why


def fit_reranker(
    data: RerankData,
    meta: dict[str, np.ndarray],
    *,
    refit_blend: Callable[[np.ndarray], np.ndarray],
    k: int,
    negatives: int,
    seed: int,
    bags: int = BAGS,
    depths: Sequence[int] = DEPTHS,
    group_confidence: float = 0.95,
    cold_start: bool = False,
) -> RerankFit:
    """Choose the tree depth by 2-fold cross-validation over customers and the groups to
    re-rank on the same folds (:func:`gate_groups`), fit on all customers, and keep the
    re-ranker only if it beats the blend (module docstring). ``meta`` holds the
    :mod:`segrec.rerank` arrays other than the trees and ``reranked_groups`` (groups,
    depth, ...); ``refit_blend(rows)`` returns the blend's scores of every customer
    (customers, items) with weights fitted on the customers ``rows`` (bool) marks. Each
    re-ranker is the average of ``bags`` fits, each on its own seeded draw of
    negatives."""
    started = time.perf_counter()
    # The cross-validation re-ranks every group: the gate is chosen from what it measures.
    meta = {**meta, "reranked_groups": np.union1d(meta["groups"], data.groups)}
    n = len(data.blended)
    with_relevant = data.n_relevant > 0
    fold = np.random.default_rng(seed).permutation(n) % 2
    seeds = [seed + b for b in range(bags)]
    summary: dict[str, Any] = {
        "customers": int(with_relevant.sum()),
        "negatives": negatives,
        "bags": bags,
        "seed": seed,
        "blend_ndcg_fitted_on_them": round(
            float(ndcg_at_k(data.blended, data.relevant, data.n_relevant, k).mean()), 5
        ),
        "cv_ndcg": {},
    }
    if min(int((with_relevant & (fold == f)).sum()) for f in (0, 1)) < 2:
        summary.update(chosen=False, reason="too few validation customers with purchases")
        return RerankFit(None, summary=summary)
    folds = [replace(data, blended=refit_blend(fold != f)) for f in (0, 1)]
    # Out-of-fold NDCG@k of every customer: the blend's, and the trees' of each depth.
    # Rows do not depend on the trees: built once per fold, scored by every depth.
    blend_per = np.zeros(n)
    fold_rows, fold_held = [], []
    for f, fold_data in enumerate(folds):
        held = np.flatnonzero(fold == f)
        blend_per[held] = ndcg_at_k(
            fold_data.blended[held], data.relevant[held], data.n_relevant[held], k
        )
        train = np.flatnonzero(with_relevant & (fold != f))
        fold_rows.append(bagged_rows(meta, fold_data, train, negatives, seeds))
        fold_held.append(_candidates(meta, fold_data, held))
    blend_cv = float(blend_per.mean())
    summary["blend_cv_ndcg"] = round(blend_cv, 5)
    per_depth: dict[int, np.ndarray] = {}
    for depth in depths:
        per_depth[depth] = np.zeros(n)
        for f, fold_data in enumerate(folds):
            held = np.flatnonzero(fold == f)
            trees = _bag(depth, fold_rows[f], seed)
            scores = reorder(
                fold_data.blended[held], fold_held[f], tree_scores(trees, fold_held[f].rows)
            )
            per_depth[depth][held] = ndcg_at_k(
                scores, data.relevant[held], data.n_relevant[held], k
            )
        summary["cv_ndcg"][str(depth)] = round(float(per_depth[depth].mean()), 5)
    cv = {depth: float(values.mean()) for depth, values in per_depth.items()}
    best = max(cv, key=lambda depth: (cv[depth], -depth))
    # Groups by the interval, not by their means: choosing groups by these noisy means
    # lost test NDCG when tried (see the README).
    reranked_groups, summary["cv_by_group"] = gate_groups(
        per_depth[best],
        blend_per,
        data.groups,
        confidence=group_confidence,
        cold_start=cold_start,
        seed=seed,
    )
    gated = np.where(np.isin(data.groups, reranked_groups), per_depth[best], blend_per)
    chosen = float(gated.mean()) > blend_cv
    summary.update(
        group_confidence=group_confidence,
        reranked_groups=reranked_groups.tolist(),
        cv_ndcg_gated=round(float(gated.mean()), 5),
        chosen=chosen,
        max_depth=best,
        max_leaf_nodes=2**best,
    )
    meta["reranked_groups"] = reranked_groups
    if not chosen:
        summary.update(reason="the blend's cross-validated NDCG is as high or higher", n_trees=0)
        summary["seconds"] = round(time.perf_counter() - started, 1)
        return RerankFit(None, summary=summary)
    everyone = bagged_rows(meta, data, np.flatnonzero(with_relevant), negatives, seeds)
    summary.update(rows=len(everyone[0][1]), relevant_rows=int(everyone[0][1].sum()))
    trees = _bag(best, everyone, seed)
    summary["n_trees"] = int(trees["tree_feature"].shape[0])
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return RerankFit(trees, {**meta, **trees}, summary)
