"""Standard spellings for categories, event types and genders."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

from training.data.cleaning.parse import map_distinct

EVENT_TYPE_SYNONYMS = {
    "view": "view",
    "page_view": "view",
    "pageview": "view",
    "product_view": "view",
    "add_to_cart": "add_to_cart",
    "addtocart": "add_to_cart",
    "cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "removefromcart": "remove_from_cart",
    "purchase": "purchase",
    "order": "purchase",
    "buy": "purchase",
    "transaction": "purchase",
    "rating": "rating",
    "rate": "rating",
    "review": "rating",
}
GENDER_SYNONYMS = {
    "f": "F",
    "female": "F",
    "woman": "F",
    "w": "F",
    "m": "M",
    "male": "M",
    "man": "M",
    "x": "X",
    "other": "X",
    "non-binary": "X",
    "nonbinary": "X",
    "diverse": "X",
    "u": "U",
    "unknown": "U",
    "prefer not to say": "U",
}
STOPWORDS = frozenset({"and", "the", "of"})


def slug(text: str) -> str:
    """``"Home & Kitchen"`` -> ``"home_and_kitchen"``: lowercase ASCII words joined by ``_``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    ascii_text = ascii_text.replace("&", " and ")
    return "_".join(re.findall(r"[a-z0-9]+", ascii_text.lower()))


def _spelling_key(text: str) -> str:
    words = [w for w in slug(text).split("_") if w and w not in STOPWORDS]
    return " ".join(sorted(words))


def standardise_categories(values: pd.Series) -> tuple[pd.Series, dict[str, str]]:
    """Map spelling variants of a category onto one slug.

    Variants share a key (their words without stopwords, sorted), so ``Home & Kitchen``,
    ``home and kitchen`` and ``HOME_KITCHEN`` fall together; each group takes the slug
    of its most frequent spelling. Returns the slugs and the variant -> slug mapping.
    """
    present = values.dropna().astype(str)
    counts = present.value_counts()
    keys = {spelling: _spelling_key(spelling) for spelling in counts.index}
    best: dict[str, str] = {}
    for spelling in counts.index:  # most frequent first
        best.setdefault(keys[spelling], slug(spelling))
    mapping = {spelling: best[keys[spelling]] for spelling in counts.index}
    return values.map(mapping), mapping


def standardise_event_types(values: pd.Series) -> pd.Series:
    """Canonical event type names; unknown types come back missing."""
    return map_distinct(values, _event_type).astype(object)


def _event_type(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    # Split camelCase ("AddToCart") before lowercasing so it reads like add_to_cart.
    text = text.str.replace(r"(?<=[a-z])(?=[A-Z])", "_", regex=True).str.lower()
    text = text.str.replace(r"[\s\-]+", "_", regex=True)
    return text.map(EVENT_TYPE_SYNONYMS).astype(object)


def standardise_genders(values: pd.Series) -> pd.Series:
    """F, M, X or missing."""
    return map_distinct(
        values, lambda v: v.astype("string").str.strip().str.lower().map(GENDER_SYNONYMS)
    ).astype(object)
