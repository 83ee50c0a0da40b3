"""Imputation with the method recorded per column, and a per-row trail of what was filled."""

from __future__ import annotations

from typing import Any

import pandas as pd


def impute(
    frame: pd.DataFrame,
    column: str,
    method: str,
    trail: pd.Series,
    *,
    by: str | None = None,
    constant: Any = None,
    fallback: Any = None,
) -> dict[str, Any]:
    """Fill missing ``frame[column]`` in place and return the record for the quality report.

    ``method`` is ``median``, ``mode`` or ``constant``; with ``by`` the median or mode is
    taken within groups first and then over all rows. When the column has no values at
    all (a source without that field) ``fallback`` is filled in if given, else the values
    stay missing and the record says so. ``trail`` (one string per row) gets the column
    name appended where a value was filled.
    """
    missing = frame[column].isna()
    record: dict[str, Any] = {"method": method, "count": int(missing.sum())}
    if by:
        record["by"] = by
    if not missing.any():
        return record
    if method == "constant":
        fill: Any = constant
        if isinstance(constant, str) and frame[column].dtype != object:
            frame[column] = frame[column].astype(object)  # an all-missing column reads as float
        frame.loc[missing, column] = constant
    else:
        overall = _statistic(frame[column], method)
        if overall is None:
            if fallback is None:
                record["left_missing"] = record.pop("count")
                record["count"] = 0
                record["why"] = "no values to take a statistic from"
                return record
            overall = fallback
            record["fallback"] = fallback
            if isinstance(fallback, str) and frame[column].dtype != object:
                frame[column] = frame[column].astype(object)
        if by:
            per_group = frame.groupby(by)[column].agg(lambda s: _statistic(s, method))
            filled = frame.loc[missing, by].map(per_group).fillna(overall)
            frame.loc[missing, column] = filled.to_numpy()
        else:
            frame.loc[missing, column] = overall
        fill = overall
    record["value"] = fill.item() if hasattr(fill, "item") else fill
    trail.loc[missing] = trail.loc[missing].map(lambda t: f"{t},{column}" if t else column)
    return record


def _statistic(values: pd.Series, method: str) -> Any:
    present = values.dropna()
    if present.empty:
        return None
    if method == "median":
        return present.median()
    if method == "mode":
        return present.mode().sort_values().iloc[0]
    raise ValueError(f"unknown imputation method {method!r}: use median, mode or constant")
