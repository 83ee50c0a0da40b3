"""Parsing raw strings into typed values; what cannot be parsed comes back as a mask.

Nothing here drops rows: callers decide whether an unparseable value is imputed or the
row is set aside, and count it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from segrec.pseudonym import FLOAT_ID

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "granted", "opt-in", "on"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "denied", "opt-out", "off"})
# An ISO 8601 string that ends in its offset: Z, +01:00, -0500, or +01 after a time.
ISO_OFFSET = r"(?:[zZ]|[+-]\d{2}:?\d{2}|:\d{2}(?:\.\d+)?[+-]\d{2})$"


def _arrow_text(values: pd.Series) -> pd.Series:
    """Stripped Arrow-backed strings, empty as missing: Arrow's string kernels run in C++,
    ten times faster than pandas' per-element Python string methods."""
    text = values.astype("string[pyarrow]").str.strip()
    return text.mask(text == "")


def _to_object(text: pd.Series) -> pd.Series:
    return text.astype(object).where(text.notna(), None)


def clean_text(values: pd.Series) -> pd.Series:
    """Strip whitespace; empty strings become missing."""
    return _to_object(_arrow_text(values))


def normalise_ids(values: pd.Series) -> tuple[pd.Series, int]:
    """Strip ids and undo float round-trips (``17850.0`` -> ``17850``); returns fixes made."""
    ids = _arrow_text(values)
    is_float = ids.str.match(FLOAT_ID).fillna(False).astype(bool)
    if not is_float.any():
        return _to_object(ids), 0
    fixed = ids.where(~is_float, ids.str.replace(r"\.0+$", "", regex=True))
    return _to_object(fixed), int(is_float.sum())


def map_distinct(values: pd.Series, function: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """Apply a vectorised string ``function`` to each distinct value once, then map back:
    event types, genders and yes/no columns have a handful of spellings in millions of rows."""
    distinct = pd.Series(values.dropna().unique())
    mapping = dict(zip(distinct, function(distinct), strict=True))
    return values.map(mapping)


def parse_timestamps(values: pd.Series, *, dayfirst: bool) -> tuple[pd.Series, pd.Series]:
    """Parse mixed timestamp formats to UTC; returns (timestamps, unparseable mask).

    Tried in order: ISO 8601 (offsets honoured, naive read as UTC), epoch seconds or
    milliseconds, then slash dates day-first or month-first as configured, then
    ``01 Mar 2026 12:00`` and ``2026/03/01 12:00:00``. Missing values are not counted
    as unparseable.
    """
    arrow = _arrow_text(values)
    text = _to_object(arrow)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    todo = text.notna()

    def attempt(mask: pd.Series, parsed: pd.Series) -> None:
        ok = parsed.notna()
        out.loc[ok.index[ok]] = parsed[ok]
        todo.loc[ok.index[ok]] = False

    # One ISO8601 call over both kinds would read a naive string that follows one with an
    # offset at that offset (pandas 2.3: "...+01:00" then "2026-03-01 12:00:00" gives
    # 11:00 UTC), so strings with an offset and naive ones are parsed apart.
    with_offset = todo & arrow.str.contains(ISO_OFFSET, regex=True).fillna(False).astype(bool)
    for part in (with_offset, todo & ~with_offset):
        attempt(part, pd.to_datetime(text[part], format="ISO8601", utc=True, errors="coerce"))
    epoch = todo & text.str.fullmatch(r"\d{9,13}", na=False)
    if epoch.any():
        numbers = text[epoch].astype(np.int64)
        unit_ms = numbers > 10**11
        # Past 2262 (e.g. 99999999999 seconds) is out of range: unparseable, not a crash.
        seconds = pd.to_datetime(numbers[~unit_ms], unit="s", utc=True, errors="coerce")
        millis = pd.to_datetime(numbers[unit_ms], unit="ms", utc=True, errors="coerce")
        attempt(epoch, pd.concat([seconds, millis]))
    slash = ("%d/%m/%Y", "%m/%d/%Y") if dayfirst else ("%m/%d/%Y", "%d/%m/%Y")
    formats = [f"{d} {t}" for d in slash for t in ("%H:%M:%S", "%H:%M")] + list(slash)
    formats += ["%d %b %Y %H:%M", "%d %b %Y", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d"]
    for fmt in formats:
        if not todo.any():
            break
        attempt(todo, pd.to_datetime(text[todo], format=fmt, utc=True, errors="coerce"))
    return out, todo


def parse_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse prices and quantities: currency symbols, thousands separators, decimal commas.

    Returns (floats, unparseable mask); missing values are not unparseable.
    """
    text = clean_text(values)
    # Most values are plain numbers: parse them in C, and only clean up the rest.
    numbers = pd.to_numeric(text, errors="coerce")
    odd = text.notna() & numbers.isna()
    if not odd.any():
        return numbers.astype(float), odd
    text = text[odd]
    stripped = text.str.replace(r"[£$€\s]", "", regex=True)
    # "1.234,50" and "12,50" use a decimal comma; "1,234.50" uses a thousands comma.
    decimal_comma = stripped.str.fullmatch(r"-?[\d.]*,\d{1,2}", na=False)
    stripped = stripped.where(
        ~decimal_comma, stripped.str.replace(".", "", regex=False).str.replace(",", ".")
    )
    stripped = stripped.str.replace(",", "", regex=False)
    repaired = pd.to_numeric(stripped, errors="coerce")
    numbers = numbers.astype(float)
    numbers[odd] = repaired.astype(float)
    return numbers, odd & numbers.isna()


def parse_booleans(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse yes/no spellings; returns (nullable booleans, unparseable mask)."""
    text = map_distinct(clean_text(values), lambda s: s.str.lower())
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    out[text.isin(TRUE_WORDS)] = True
    out[text.isin(FALSE_WORDS)] = False
    return out, text.notna() & out.isna()
