"""Numpy evaluation of a boosted tree ensemble shipped as arrays.

Serving has no scikit-learn, so the re-ranker's trees travel in the bundle as padded
arrays, one row per tree and one column per node, and are walked here: every tree and
every sample move down one level per step, so a request costs ``depth`` vectorised steps
however many trees there are. The arrays come from
:func:`training.models.reranker.export_trees` (a fitted ``HistGradientBoostingClassifier``).

Arrays:

- ``tree_feature`` (trees, nodes) int: the feature a split node tests;
- ``tree_threshold`` (trees, nodes) float: go left when ``x <= threshold``;
- ``tree_missing_left`` (trees, nodes) bool: where a NaN goes;
- ``tree_left``, ``tree_right`` (trees, nodes) int: children; a leaf points to itself;
- ``tree_value`` (trees, nodes) float: a leaf's contribution (0 elsewhere);
- ``tree_baseline`` scalar and ``tree_depth`` scalar (the deepest leaf's depth).

Examples
--------
A single stump: ``x0 <= 0.5`` goes to a leaf worth -1, else to one worth +1.

>>> stump = {
...     "tree_feature": np.array([[0, 0, 0]]), "tree_threshold": np.array([[0.5, 0, 0]]),
...     "tree_missing_left": np.array([[True, False, False]]),
...     "tree_left": np.array([[1, 1, 2]]), "tree_right": np.array([[2, 1, 2]]),
...     "tree_value": np.array([[0.0, -1.0, 1.0]]),
...     "tree_baseline": np.array(0.25), "tree_depth": np.array(1)}
>>> tree_scores(stump, np.array([[0.2], [0.9], [np.nan]])).tolist()
[-0.75, 1.25, -0.75]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TREE_ARRAYS = (
    "tree_feature",
    "tree_threshold",
    "tree_missing_left",
    "tree_left",
    "tree_right",
    "tree_value",
    "tree_baseline",
    "tree_depth",
)
# Trees x samples walked at once: the walk's position arrays (8 bytes each) then stay in
# a core's cache; at 666 trees, 50-sample blocks walked 100 samples in half the time
# of one 100-sample block.
WALK_ELEMENTS = 32_768


def walk_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tree arrays laid out for the walk: flat and doubled, entries ``2p`` and
    ``2p + 1`` both describing node ``p`` (trees one after another), so a step reads a
    node's feature, threshold and child (left at ``2p``, right at ``2p + 1``) with one
    1-D take each and no arithmetic on positions. Serving derives them once per bundle
    (``{**arrays, **walk_arrays(arrays)}``); :func:`tree_scores` derives them when
    missing."""
    feature = np.asarray(arrays["tree_feature"])
    n_trees, n_nodes = feature.shape
    base = (np.arange(n_trees) * n_nodes)[:, None]
    left, right = np.asarray(arrays["tree_left"]), np.asarray(arrays["tree_right"])
    return {
        "walk_feature": np.repeat(feature.ravel(), 2),
        "walk_threshold": np.repeat(np.asarray(arrays["tree_threshold"], np.float64).ravel(), 2),
        "walk_missing_right": np.repeat(~np.asarray(arrays["tree_missing_left"]).ravel(), 2),
        "walk_children": 2 * np.stack([left + base, right + base], axis=-1).ravel(),
        "walk_value": np.repeat(np.asarray(arrays["tree_value"]).ravel(), 2),
    }


def tree_scores(arrays: Mapping[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """The ensemble's raw score (log-odds for a classifier) of each row of ``features``
    (samples, features): the baseline plus the leaf value each tree reaches."""
    x = np.ascontiguousarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (samples, features), got shape {x.shape}")
    n_samples, n_features = x.shape
    n_trees, n_nodes = np.shape(arrays["tree_feature"])
    if n_samples == 0 or n_trees == 0:
        return np.full(n_samples, float(arrays["tree_baseline"]))
    walk = arrays if "walk_value" in arrays else {**arrays, **walk_arrays(arrays)}
    block = max(1, WALK_ELEMENTS // n_trees)
    if n_samples > block:
        return np.concatenate(
            [tree_scores(walk, x[lo : lo + block]) for lo in range(0, n_samples, block)]
        )
    feature, threshold = walk["walk_feature"], walk["walk_threshold"]
    children, missing_right = walk["walk_children"], walk["walk_missing_right"]
    has_nan = bool(np.isnan(x).any())
    flat = x.ravel()
    row_start = (np.arange(n_samples) * n_features)[None, :]
    roots = (np.arange(n_trees) * 2 * n_nodes)[:, None]
    node = np.broadcast_to(roots, (n_trees, n_samples)).copy()
    for _ in range(int(arrays["tree_depth"])):
        value = flat.take(feature.take(node) + row_start)
        go_right = value > threshold.take(node)
        if has_nan:
            go_right = np.where(np.isnan(value), missing_right.take(node), go_right)
        # Leaves point to themselves, so finished trees stay put.
        node = children.take(node + go_right)
    return float(arrays["tree_baseline"]) + walk["walk_value"].take(node).sum(axis=0)
