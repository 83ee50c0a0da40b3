"""Realistic mess applied when the synthetic storefront writes its raw export.

Every kind of mess here is something the cleaning step must find and count: mixed date
formats, float-looking ids, spelling variants, missing demographics, outliers, exact
duplicate rows, and a few rows that are plainly invalid and must be set aside.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORY_SPELLINGS = (
    lambda c: c.lower(),
    lambda c: c.upper().replace(" & ", "_").replace(" ", "_"),
    lambda c: c.replace("&", "and"),
    lambda c: f"  {c} ",
)
TYPE_SPELLINGS = {
    "view": ("View", "VIEW", "page_view"),
    "add_to_cart": ("add-to-cart", "AddToCart", "add to cart"),
    "remove_from_cart": ("remove-from-cart", "RemoveFromCart"),
    "purchase": ("Purchase", "PURCHASE", "order"),
    "rating": ("Rating", "review"),
}
TRUE_SPELLINGS = np.array(["true", "yes", "Y", "1", "TRUE"])
FALSE_SPELLINGS = np.array(["false", "no", "N", "0", "FALSE"])
GENDER_SPELLINGS = {
    "F": ("F", "f", "female", "Female"),
    "M": ("M", "m", "male", "Male"),
    "X": ("X", "other", "non-binary"),
}


def format_timestamps(seconds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Epoch seconds as strings in the formats real exports mix (day-first where ambiguous)."""
    iso = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").astype(object)
    out = iso.copy()
    kind = rng.choice(5, size=len(seconds), p=[0.55, 0.2, 0.1, 0.1, 0.05])
    s = pd.Series(iso)
    out[kind == 0] = (s[kind == 0] + "Z").to_numpy()
    out[kind == 1] = s[kind == 1].str.replace("T", " ", regex=False).to_numpy()
    out[kind == 2] = seconds[kind == 2].astype(np.int64).astype(str).astype(object)
    dayfirst = s[kind == 3]
    out[kind == 3] = (
        dayfirst.str[8:10]
        + "/"
        + dayfirst.str[5:7]
        + "/"
        + dayfirst.str[0:4]
        + " "
        + dayfirst.str[11:19]
    ).to_numpy()
    # The same instant written in Central European time with its offset.
    shifted = np.datetime_as_string((seconds[kind == 4] + 3600).astype("datetime64[s]"), unit="s")
    out[kind == 4] = (pd.Series(shifted) + "+01:00").to_numpy()
    return out


def spell_booleans(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(values)
    return np.where(
        values,
        TRUE_SPELLINGS[rng.integers(0, len(TRUE_SPELLINGS), n)],
        FALSE_SPELLINGS[rng.integers(0, len(FALSE_SPELLINGS), n)],
    ).astype(object)


def blank(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Blank out a share of values (missing data)."""
    out = values.astype(object).copy()
    out[rng.random(len(out)) < rate] = None
    return out


def respell_categories(categories: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = categories.astype(object).copy()
    for i in np.flatnonzero(rng.random(len(out)) < rate):
        out[i] = CATEGORY_SPELLINGS[rng.integers(0, len(CATEGORY_SPELLINGS))](out[i])
    return out


def respell_types(types: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = types.astype(object).copy()
    for i in np.flatnonzero(rng.random(len(out)) < rate):
        variants = TYPE_SPELLINGS[out[i]]
        out[i] = variants[rng.integers(0, len(variants))]
    return out


def respell_genders(genders: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = genders.astype(object).copy()
    for code, variants in GENDER_SPELLINGS.items():
        idx = np.flatnonzero(out == code)
        out[idx] = np.array(variants, dtype=object)[rng.integers(0, len(variants), len(idx))]
    return out


def floatify_ids(ids: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Some exports round-trip numeric ids through floats: ``100123`` becomes ``100123.0``."""
    out = ids.astype(object).copy()
    idx = np.flatnonzero(rng.random(len(out)) < rate)
    out[idx] = pd.Series(out[idx]).astype(str).add(".0").to_numpy()
    return out


def inject_outliers(
    values: np.ndarray, rate: float, rng: np.random.Generator, low: float, high: float
) -> tuple[np.ndarray, np.ndarray]:
    """Multiply a share of values by a wild factor (a typo'd price, a bulk order)."""
    out = values.astype(float).copy()
    hit = (rng.random(len(out)) < rate) & ~np.isnan(out)
    out[hit] = out[hit] * np.exp(rng.uniform(np.log(low), np.log(high), hit.sum()))
    return out, hit
