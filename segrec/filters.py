"""Business filters, applied identically offline (evaluation) and online (serving).

Numpy only. Three rules, in order:

1. Out of stock: never recommend an item whose ``in_stock`` flag is false.
2. Already bought: exclude items the customer bought, except in categories where buying
   again is normal (``repeat_categories``: groceries, pet food...), where the buy-again
   signal is the point. Evaluated both ways in the evaluation report.
3. Diversity: at most ``max_per_category`` items of one category in a list; lower-ranked
   items of a full category make way for the next best of another.

Examples
--------
>>> rules = FilterRules(in_stock=np.array([True, False, True, True]),
...                     category=np.array([0, 0, 1, 1]), repeat_category=np.array([True, False]),
...                     max_per_category=1)
>>> rules.allowed(bought=np.array([2])).tolist()
[True, False, False, True]
>>> rules.diversify(np.array([3, 2, 0]), k=2).tolist()
[3, 0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FilterRules:
    in_stock: np.ndarray  # bool per item
    category: np.ndarray  # category code per item
    repeat_category: np.ndarray  # bool per category code: buying again is normal there
    max_per_category: int = 0  # 0 = no cap

    def allowed(self, bought: np.ndarray | None = None, exclude_bought: bool = True) -> np.ndarray:
        """Mask over all items of what may be recommended to a customer."""
        mask = np.asarray(self.in_stock, dtype=bool).copy()
        if exclude_bought and bought is not None and len(bought):
            bought = np.asarray(bought, dtype=np.int64)
            bought = bought[(bought >= 0) & (bought < len(mask))]
            repeatable = self.repeat_category[self.category[bought]]
            mask[bought[~repeatable]] = False
        return mask

    def diversify(self, ranked: np.ndarray, k: int) -> np.ndarray:
        """The first ``k`` of ``ranked`` items (best first) with at most
        ``max_per_category`` per category."""
        ranked = np.asarray(ranked, dtype=np.int64)
        if self.max_per_category <= 0:
            return ranked[:k]
        categories = self.category[ranked]
        # Position of each item among the items of its category so far (0-based).
        order = np.argsort(categories, kind="stable")
        sorted_categories = categories[order]
        starts = np.flatnonzero(np.r_[True, sorted_categories[1:] != sorted_categories[:-1]])
        counts = np.diff(np.r_[starts, len(order)])
        seen = np.empty(len(ranked), dtype=np.int64)
        seen[order] = np.arange(len(order)) - np.repeat(starts, counts)
        return ranked[seen < self.max_per_category][:k]
