"""The synthetic catalogue: products whose text, brand and price carry their category.

Products are grouped by (category, price band); within a group popularity is Zipf-like,
and about a third of the catalogue launches during the history window so that trending
and cold-start behaviour exist to be found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.data.synthetic.vocabulary import (
    ADJECTIVES,
    BRAND_SYLLABLES,
    CATEGORY_NOUNS,
    CATEGORY_PHRASES,
)

CATEGORIES = tuple(CATEGORY_NOUNS)
N_BANDS = 3
BRANDS_PER_CATEGORY = 8
# Median list price per category, in the storefront's currency.
CATEGORY_BASE_PRICE = {
    "Electronics": 60.0,
    "Home & Kitchen": 30.0,
    "Groceries": 6.0,
    "Beauty": 15.0,
    "Fashion": 35.0,
    "Sports & Outdoors": 40.0,
    "Toys & Games": 22.0,
    "Books": 14.0,
    "Garden": 18.0,
    "Pet Supplies": 16.0,
    "Health": 20.0,
    "Office": 9.0,
}


@dataclass(frozen=True)
class Catalogue:
    """Clean truth of the catalogue, as arrays indexed by product position."""

    product_ids: np.ndarray  # str
    category: np.ndarray  # int index into CATEGORIES
    band: np.ndarray  # 0 low, 1 mid, 2 high
    price: np.ndarray  # float
    popularity: np.ndarray  # float weight within the (category, band) group
    launch: np.ndarray  # datetime64[s]
    in_stock: np.ndarray  # bool
    titles: np.ndarray
    descriptions: np.ndarray
    brands: np.ndarray

    @property
    def n(self) -> int:
        return len(self.product_ids)


def _brand_names(rng: np.random.Generator) -> list[list[str]]:
    brands = []
    for _ in CATEGORIES:
        names: set[str] = set()
        while len(names) < BRANDS_PER_CATEGORY:
            parts = rng.choice(BRAND_SYLLABLES, size=rng.integers(2, 4))
            names.add("".join(parts).capitalize())
        brands.append(sorted(names))
    return brands


def make_catalogue(
    n_products: int, rng: np.random.Generator, start: np.datetime64, end: np.datetime64
) -> Catalogue:
    """Draw ``n_products`` products with category, band, price, popularity and launch."""
    n_cat = len(CATEGORIES)
    category = rng.integers(0, n_cat, n_products)
    band = rng.choice(N_BANDS, size=n_products, p=[0.4, 0.4, 0.2])
    base = np.array([CATEGORY_BASE_PRICE[c] for c in CATEGORIES])[category]
    band_factor = np.array([0.5, 1.0, 2.6])[band]
    price = np.round(base * band_factor * rng.lognormal(0.0, 0.2, n_products), 2)
    price = np.maximum(price, 0.5)

    popularity = rng.pareto(1.2, n_products) + 0.05
    span = (end - start).astype("timedelta64[s]").astype(np.int64)
    launched_in_window = rng.random(n_products) < 0.3
    # The most popular product of every group is old, so a fallback always exists.
    order = np.lexsort((-popularity, band, category))
    group_key = category[order] * N_BANDS + band[order]
    first_of_group = np.r_[True, group_key[1:] != group_key[:-1]]
    launched_in_window[order[first_of_group]] = False
    offset = np.where(
        launched_in_window,
        rng.integers(0, span, n_products),
        -rng.integers(30 * 86400, 3 * 365 * 86400, n_products),
    )
    launch = start + offset.astype("timedelta64[s]")
    in_stock = rng.random(n_products) > 0.08

    brand_names = _brand_names(rng)
    brand_idx = rng.integers(0, BRANDS_PER_CATEGORY, n_products)
    adjectives = rng.choice(ADJECTIVES, n_products)
    titles, descriptions, brands = [], [], []
    for i in range(n_products):
        cat = CATEGORIES[category[i]]
        nouns = CATEGORY_NOUNS[cat]
        noun = nouns[rng.integers(0, len(nouns))]
        brand = brand_names[category[i]][brand_idx[i]]
        title = f"{brand} {adjectives[i]} {noun}"
        if band[i] == 2:
            title += " - premium edition"
        titles.append(title)
        descriptions.append(
            f"{adjectives[i]} {noun} by {brand}. {CATEGORY_PHRASES[cat]}"
            + (" Great value." if band[i] == 0 else "")
        )
        brands.append(brand)
    width = max(6, len(str(n_products)))
    product_ids = np.array([f"P{i:0{width}d}" for i in range(1, n_products + 1)])
    return Catalogue(
        product_ids=product_ids,
        category=category,
        band=band,
        price=price,
        popularity=popularity,
        launch=launch,
        in_stock=in_stock,
        titles=np.array(titles, dtype=object),
        descriptions=np.array(descriptions, dtype=object),
        brands=np.array(brands, dtype=object),
    )


class GroupSampler:
    """Draw products by popularity within (category, band) groups, vectorised.

    Groups are laid end to end on one axis where group ``g`` spans ``[g, g + 1)``, so a
    single ``searchsorted`` samples any mix of groups at once.
    """

    def __init__(self, catalogue: Catalogue) -> None:
        n_groups = len(CATEGORIES) * N_BANDS
        group = catalogue.category * N_BANDS + catalogue.band
        self.order = np.lexsort((np.arange(catalogue.n), group))
        sorted_group = group[self.order]
        weights = catalogue.popularity[self.order]
        cumulative = np.zeros(catalogue.n)
        self.present = np.zeros(n_groups, dtype=bool)
        for g in range(n_groups):
            mask = sorted_group == g
            if mask.any():
                self.present[g] = True
                w = np.cumsum(weights[mask])
                cumulative[mask] = g + w / w[-1]
        self.cumulative = cumulative
        self.n_groups = n_groups

    def sample(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Product positions for each requested group (a missing group maps to a neighbour)."""
        groups = self._nearest_present(groups)
        u = groups + rng.random(len(groups)) * (1 - 1e-12)
        idx = np.searchsorted(self.cumulative, u, side="right")
        return self.order[np.minimum(idx, len(self.order) - 1)]

    def _nearest_present(self, groups: np.ndarray) -> np.ndarray:
        present = np.flatnonzero(self.present)
        pos = np.clip(np.searchsorted(present, groups), 0, len(present) - 1)
        return present[pos]


def catalogue_truth(catalogue: Catalogue) -> pd.DataFrame:
    """Ground truth for products: clean category, band and launch time."""
    return pd.DataFrame(
        {
            "product_id": catalogue.product_ids,
            "category": np.array(CATEGORIES)[catalogue.category],
            "price_band": np.array(["low", "mid", "high"])[catalogue.band],
            "list_price": catalogue.price,
            "launch_ts": pd.to_datetime(catalogue.launch).tz_localize("UTC"),
        }
    )
