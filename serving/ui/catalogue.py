"""What the storefront's product cards and customer picker need, beyond the endpoints.

Cards: category, price and stock come from the serving bundle (always there); titles and
brands from the clean products table when this machine has it (a container holds only the
bundle, so the card says why the title is missing). The picker: customer ids by segment
from the newest segment snapshot in the features directory, when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segrec.settings import Settings
from serving.engine import RecommendationEngine

MAX_SEARCH = 20


@dataclass(frozen=True)
class ProductCards:
    """One card per product of one bundle."""

    bundle_version: str
    cards: dict[str, dict[str, Any]]
    titles_missing: str | None  # why titles are not shown, or None

    @classmethod
    def build(cls, engine: RecommendationEngine, settings: Settings) -> ProductCards:
        items = engine.bundle.group("items")
        names = [str(c) for c in engine.category_names]
        prices = items.get("price")
        in_stock = items["in_stock"]
        cards = {
            product: {
                "product_id": product,
                "title": None,
                "brand": None,
                "category": names[int(engine.category[i])],
                "price": None if prices is None else round(float(prices[i]), 2),
                "in_stock": bool(in_stock[i]),
            }
            for i, product in enumerate(engine.product_names)
        }
        titles_missing = _add_titles(cards, settings.clean_dir / "products.parquet")
        return cls(engine.bundle.version, cards, titles_missing)

    def lookup(self, product_ids: list[str]) -> dict[str, Any]:
        found = {p: self.cards[p] for p in product_ids if p in self.cards}
        return {
            "bundle_version": self.bundle_version,
            "products": found,
            "unknown": [p for p in product_ids if p not in self.cards],
            "titles_missing": self.titles_missing,
        }


def _add_titles(cards: dict[str, dict[str, Any]], path: Path) -> str | None:
    if not path.exists():
        return f"not available: {path} is absent (only the bundle is deployed here)"
    import pandas as pd

    products = pd.read_parquet(path, columns=["product_id", "title", "brand"])
    for product, title, brand in products.itertuples(index=False):
        card = cards.get(str(product))
        if card is not None:
            card["title"] = None if title is None else str(title)
            card["brand"] = None if brand is None else str(brand)
    return None


@dataclass(frozen=True)
class CustomerPool:
    """Customer ids by segment, from the newest segment snapshot."""

    ids: np.ndarray  # sorted
    segment_of: dict[str, int]
    by_segment: dict[int, list[str]]

    @classmethod
    def load(cls, settings: Settings) -> CustomerPool:
        """Raises FileNotFoundError (with the path) when there is no snapshot."""
        path = settings.features_dir / "customer_segments.parquet"
        if not path.exists():
            raise FileNotFoundError(
                f"not available: {path} is absent (make segments writes it; a container "
                "holds only the bundle)"
            )
        import pandas as pd

        frame = pd.read_parquet(path, columns=["customer_id", "segment_id", "event_timestamp"])
        newest = frame[frame["event_timestamp"] == frame["event_timestamp"].max()]
        segment_of = dict(
            zip(newest["customer_id"].astype(str), newest["segment_id"].astype(int), strict=True)
        )
        by_segment: dict[int, list[str]] = {}
        for customer, segment in sorted(segment_of.items()):
            by_segment.setdefault(segment, []).append(customer)
        return cls(np.array(sorted(segment_of)), segment_of, by_segment)

    def search(self, prefix: str) -> list[str]:
        """Up to ``MAX_SEARCH`` ids starting with ``prefix`` (sorted ids: a binary search)."""
        start = int(np.searchsorted(self.ids, prefix))
        found = []
        for customer in self.ids[start : start + MAX_SEARCH]:
            if not str(customer).startswith(prefix):
                break
            found.append(str(customer))
        return found

    def random(self, segment_id: int, rng: np.random.Generator) -> str:
        """Raises KeyError for a segment with no customers."""
        members = self.by_segment[segment_id]
        return members[int(rng.integers(len(members)))]

    def sizes(self) -> dict[int, int]:
        return {segment: len(members) for segment, members in sorted(self.by_segment.items())}
