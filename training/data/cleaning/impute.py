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
) -> dict[str, Any]:
    """Fill missing ``frame[column]`` in place and return the record for the quality report.

    ``method`` is ``median``, ``mode`` or ``constant``; with ``by`` the median or mode is
    taken within groups first and then over all rows. ``trail`` (one string per row)
    gets the column name appended where a value was filled.
    """
    missing = frame[column].isna()
    record: dict[str, Any] = {"method": method, "count": int(missing.sum())}
    if by:
        record["by"] = by
    if not missing.any():
        return record
    if method == "constant":
        fill: Any = constant
        frame.loc[missing, column] = constant
    else:
        overall = _statistic(frame[column], method)
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
