"""Rank with every model, the per-segment blend and the baselines, and measure them all
on the same customers, overall and per group (segment, lifecycle stage, cold start)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from segrec.blend import weights_for
from segrec.filters import FilterRules
from training.evaluation.metrics import RunMetrics, evaluate_run
from training.evaluation.oracle import ORACLE, ORACLE_LABEL
from training.models.blend_fit import SegmentBlender
from training.train.stacks import EXCLUDED

BLEND = "blend"
RANDOM = "random"
SCORE_BINS = np.linspace(0.0, 1.0, 21)
OTHER_SAMPLE = 200  # non-relevant items sampled per customer for the score histograms
METHOD_LABELS = {ORACLE: ORACLE_LABEL}  # how tables name methods whose key says too little


def score_histograms(
    rankings: dict[str, np.ndarray], relevant: np.ndarray, seed: int
) -> dict[str, dict[str, list[int]]]:
    """How each method scores the held-out relevant items against a sample of the rest
    (excluded items left out): a model that separates them ranks well at any k."""
    rng = np.random.default_rng(seed)
    n_customers, n_items = relevant.shape
    sample = rng.integers(0, n_items, size=(n_customers, min(OTHER_SAMPLE, n_items)))
    rows = np.arange(n_customers)[:, None]
    other = ~relevant[rows, sample]
    histograms = {}
    for name, scores in rankings.items():
        kept = scores > EXCLUDED
        relevant_scores = scores[relevant & kept]
        sampled = scores[rows, sample]
        other_scores = sampled[other & (sampled > EXCLUDED)]
        histograms[name] = {
            part: np.histogram(np.clip(values, 0.0, 1.0), SCORE_BINS)[0].tolist()
            for part, values in (("relevant", relevant_scores), ("other", other_scores))
        }
    return histograms


@dataclass
class RankingResult:
    runs: dict[str, RunMetrics]  # method -> metrics
    groups: pd.DataFrame  # per test customer: segment, lifecycle, cold_start
    k: int
    # method -> {"relevant": counts, "other": counts} over SCORE_BINS of the ranking score
    score_histograms: dict[str, dict[str, list[int]]] | None = None

    def summary(self) -> dict[str, Any]:
        return {name: run.summary() for name, run in self.runs.items()}

    def by_group(self, column: str, metric: str = "ndcg") -> pd.DataFrame:
        """Mean ``metric`` per method (columns) and group value (rows), with counts."""
        labels = self.groups.set_index("customer_id")[column]
        table = pd.DataFrame(
            {name: run.means_by(labels)[metric] for name, run in self.runs.items()}
        )
        counts = self.runs[BLEND].means_by(labels)["n_customers"]
        table.insert(0, "n_customers", counts)
        return table


def _top_k(
    scores: np.ndarray,
    k: int,
    rules: FilterRules | None = None,
    bought: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Per customer the k best items, best first; excluded items never appear. With
    ``rules``, the business filters apply as in serving: stock, already bought (per
    category), and the diversity cap."""
    if rules is not None:
        histories = bought if bought is not None else [np.zeros(0, np.int64)] * len(scores)
        allowed = np.vstack([rules.allowed(b) for b in histories])
        scores = np.where(allowed, scores, EXCLUDED)
    depth = k if rules is None or rules.max_per_category <= 0 else min(scores.shape[1], 4 * k)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    kept = np.take_along_axis(scores, order, axis=1) > EXCLUDED
    lists = [row[mask] for row, mask in zip(order, kept, strict=True)]
    if rules is None:
        return [row[:k] for row in lists]
    return [rules.diversify(row, k) for row in lists]


def blended_scores(stack: np.ndarray, blender: SegmentBlender, segments: np.ndarray) -> np.ndarray:
    weights = np.vstack(
        [
            weights_for(s, blender.segment_ids_, blender.segment_weights_, blender.global_weights_)
            for s in segments
        ]
    )
    total = np.einsum("cm,cmi->ci", weights, stack)
    # Excluded items are EXCLUDED in every model, so the weighted sum (weights sum to 1)
    # is EXCLUDED too; keep it exact so they never rank.
    return np.where((stack <= EXCLUDED).all(axis=1), EXCLUDED, total)


def evaluate_rankings(
    *,
    stack: np.ndarray,
    relevant: np.ndarray,
    model_names: list[str],
    blender: SegmentBlender,
    segments: np.ndarray,
    groups: pd.DataFrame,
    k: int,
    seed: int,
    popularity: np.ndarray | None = None,
    rules: FilterRules | None = None,
    bought: list[np.ndarray] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> RankingResult:
    """Every model, the blend, the random baseline and the ``extra`` (customers, items)
    scores (such as the generator's oracle), ranked over the same candidates: items
    excluded for every model are excluded for the random and extra rankings too."""
    ids = groups["customer_id"].astype(str).tolist()
    held = {c: np.flatnonzero(row) for c, row in zip(ids, relevant, strict=True)}
    rankings: dict[str, np.ndarray] = {name: stack[:, m] for m, name in enumerate(model_names)}
    rankings[BLEND] = blended_scores(stack, blender, segments)
    rng = np.random.default_rng(seed)
    noise = rng.random(stack.shape[::2])
    excluded = (stack <= EXCLUDED).all(axis=1)
    rankings[RANDOM] = np.where(excluded, EXCLUDED, noise)
    for name, scores in (extra or {}).items():
        rankings[name] = np.where(excluded, EXCLUDED, scores)
    runs = {
        name: evaluate_run(
            dict(zip(ids, _top_k(scores, k, rules, bought), strict=True)),
            held,
            k,
            n_items=stack.shape[2],
            popularity=popularity,
        )
        for name, scores in rankings.items()
    }
    return RankingResult(
        runs=runs,
        groups=groups,
        k=k,
        score_histograms=score_histograms(
            {n: s for n, s in rankings.items() if n != RANDOM}, relevant, seed
        ),
    )
