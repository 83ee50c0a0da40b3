"""Rank with every model, the per-segment blend and the baselines, and measure them all
on the same customers, overall and per group (segment, lifecycle stage, cold start)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from segrec.blend import weights_for
from segrec.filters import FilterRules
from segrec.rerank import rerank
from segrec.scoring import CustomerState
from training.evaluation.metrics import RunMetrics, evaluate_run
from training.evaluation.oracle import (
    OBSERVED_ORACLE,
    OBSERVED_ORACLE_LABEL,
    ORACLE,
    ORACLE_LABEL,
)
from training.models.blend_fit import SegmentBlender
from training.models.validation_ndcg import top_k_rows
from training.train.stacks import EXCLUDED

BLEND = "blend"  # what serving ranks by: the linear blend, re-ranked when a re-ranker fits
LINEAR_BLEND = "linear_blend"  # the per-segment weights alone, when a re-ranker is used
RANDOM = "random"
SCORE_BINS = np.linspace(0.0, 1.0, 21)
OTHER_SAMPLE = 200  # non-relevant items sampled per customer for the score histograms
METHOD_LABELS = {  # how tables name methods whose key says too little
    ORACLE: ORACLE_LABEL,
    OBSERVED_ORACLE: OBSERVED_ORACLE_LABEL,
    LINEAR_BLEND: "blend weights alone (before the re-ranker)",
}


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
    order = top_k_rows(scores, depth)
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


@dataclass(frozen=True)
class ViewChunk:
    """Some of a view's customers, the next rows in its order: every model's normalised
    scores (customers, models, items), their relevant items (customers, items), blend
    groups, purchase histories (for the business filters) and ``extra`` rankings such as
    the oracle's (customers, items); with ``states``, the customers' events before the
    cut-off, the items' launch ages then and which items had no interactions, for the
    re-ranker."""

    stack: np.ndarray
    relevant: np.ndarray
    segments: np.ndarray
    bought: list[np.ndarray] | None = None
    extra: Mapping[str, np.ndarray] | None = None
    states: Sequence[CustomerState] | None = None  # for the re-ranker
    launch_age_days: np.ndarray | None = None  # each item's, at the states' "now"
    unseen: np.ndarray | None = None  # items without training interactions


def evaluate_rankings(
    *,
    chunks: Iterable[ViewChunk],
    model_names: list[str],
    blender: SegmentBlender,
    groups: pd.DataFrame,
    k: int,
    seed: int,
    popularity: np.ndarray | None = None,
    rules: FilterRules | None = None,
    reranker: Mapping[str, np.ndarray] | None = None,
) -> RankingResult:
    """Every model, the blend, the random baseline and the ``extra`` scores (such as the
    generator's oracle), ranked over the same candidates: items excluded for every model
    are excluded for the random and extra rankings too.

    The customers (``groups``' rows) come in ``chunks``, so a view of many customers over
    a large catalogue never holds all their scores at once: only the top-k lists are
    kept. One chunk of every customer gives the same figures as any other split, but for
    the random baseline's and the score histograms' draws.

    With a ``reranker`` (:mod:`segrec.rerank` arrays) and chunks holding ``states``, the
    blend is re-ranked as serving does, and the weights alone are :data:`LINEAR_BLEND`."""
    ids = groups["customer_id"].astype(str).tolist()
    held: dict[str, np.ndarray] = {}
    lists: dict[str, list[np.ndarray]] = {}
    histograms: dict[str, dict[str, list[int]]] = {}
    rng = np.random.default_rng(seed)
    n_items, done = 0, 0
    for number, chunk in enumerate(chunks):
        stack = chunk.stack
        n_items = stack.shape[2]
        chunk_ids = ids[done : done + len(stack)]
        if len(chunk_ids) != len(stack):
            raise ValueError(f"chunks hold more customers than groups ({len(ids)})")
        done += len(stack)
        held.update(
            (c, np.flatnonzero(row)) for c, row in zip(chunk_ids, chunk.relevant, strict=True)
        )
        rankings = {name: stack[:, m] for m, name in enumerate(model_names)}
        rankings[BLEND] = blended_scores(stack, blender, chunk.segments)
        if reranker is not None:
            if chunk.states is None or chunk.launch_age_days is None or chunk.unseen is None:
                raise ValueError("re-ranking needs the chunks' customer states and launch ages")
            rankings[LINEAR_BLEND] = rankings[BLEND]
            rankings[BLEND] = rerank(
                reranker,
                stack,
                rankings[LINEAR_BLEND],
                chunk.states,
                chunk.segments.tolist(),
                chunk.launch_age_days,
                chunk.unseen,
            )
        excluded = (stack <= EXCLUDED).all(axis=1)
        rankings[RANDOM] = np.where(excluded, EXCLUDED, rng.random(stack.shape[::2]))
        for name, scores in (chunk.extra or {}).items():
            rankings[name] = np.where(excluded, EXCLUDED, scores)
        for name, scores in rankings.items():
            lists.setdefault(name, []).extend(_top_k(scores, k, rules, chunk.bought))
        counts = score_histograms(
            {n: v for n, v in rankings.items() if n != RANDOM}, chunk.relevant, seed + number
        )
        for name, parts in counts.items():
            total = histograms.setdefault(name, {part: [0] * len(c) for part, c in parts.items()})
            for part, values in parts.items():
                total[part] = [a + b for a, b in zip(total[part], values, strict=True)]
    if done != len(ids):
        raise ValueError(f"chunks held {done} customers, groups {len(ids)}")
    runs = {
        name: evaluate_run(
            dict(zip(ids, ranked, strict=True)),
            held,
            k,
            n_items=n_items,
            popularity=popularity,
        )
        for name, ranked in lists.items()
    }
    return RankingResult(runs=runs, groups=groups, k=k, score_histograms=histograms)
