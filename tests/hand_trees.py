"""Re-rankers written by hand, for tests that need to know what the trees will do."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from segrec.rerank import feature_names


def own_views_stump(
    meta: Mapping[str, np.ndarray],
    models: list[str],
    groups: list[int],
    reranked_groups: list[int] | None = None,
) -> dict[str, np.ndarray]:
    """``meta`` plus one stump on the last feature (the customer's views of the item):
    viewed items score +3 log-odds, others -3. It re-ranks ``reranked_groups`` (every
    group when None)."""
    own_views = len(feature_names(models, groups)) - 1
    return {
        **meta,
        "groups": np.asarray(groups),
        "reranked_groups": np.asarray(groups if reranked_groups is None else reranked_groups),
        "tree_feature": np.array([[own_views, 0, 0]]),
        "tree_threshold": np.array([[0.5, 0.0, 0.0]]),
        "tree_missing_left": np.array([[True, False, False]]),
        "tree_left": np.array([[1, 1, 2]]),
        "tree_right": np.array([[2, 1, 2]]),
        "tree_value": np.array([[0.0, -3.0, 3.0]]),
        "tree_baseline": np.asarray(0.0),
        "tree_depth": np.asarray(1),
    }
