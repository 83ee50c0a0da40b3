"""Pseudonymisation and consent: what leaves cleaning carries no direct identifier."""

from __future__ import annotations

import pandas as pd

from segrec.pseudonym import pseudonymise_many
from training.data.raw import PII_COLUMNS


def pseudonymise_ids(raw_ids: pd.Series, secret: str) -> pd.Series:
    """Keyed hashes of raw customer ids, aligned with ``raw_ids``."""
    return pd.Series(
        pseudonymise_many(raw_ids.astype(str), secret), index=raw_ids.index, dtype=object
    )


def postcode_area(postcodes: pd.Series) -> pd.Series:
    """Keep only the outward part of a postcode (``LN42 7AB`` -> ``LN42``): a full postcode
    with a birth year narrows a person down to a handful of people."""
    text = postcodes.astype("string").str.strip().str.upper()
    area = text.str.split().str[0].str[:4]
    return area.astype(object).where(area.notna(), None)


def drop_direct_identifiers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in PII_COLUMNS if c in frame], errors="ignore")
