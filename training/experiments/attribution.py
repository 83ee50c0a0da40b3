"""Join experiment exposures with storefront outcomes: which carousel earned which click.

The rule (``SEGREC_EXPERIMENT_ATTRIBUTION_HOURS``, default 24): an outcome event — a
``view`` (a click on the carousel), an ``add_to_cart`` or a ``purchase`` — of product
``p`` by customer ``c`` at time ``t`` counts for the *newest* exposure of ``c`` that
showed ``p`` at a time in ``[t - window, t]``. Outcomes of products no exposure showed,
or shown longer ago than the window, are not attributed. Exposures of every experiment
compete for an outcome, so two experiments on different placements never both claim it.

Per exposure, ``clicks``, ``carts`` and ``purchases`` count *distinct* shown products
with such an outcome (a product viewed twice is one click); ``revenue`` adds
``price * quantity`` of every attributed purchase. ``clicked``, ``carted`` and
``converted`` say whether the count is above 0: the report's click-through,
add-to-cart and conversion rates are their means over exposures.

Inputs are the two JSON-lines logs (``segrec.experiments.read_exposures`` and
``segrec.event_log.read_event_log``). A line that is not JSON, lacks a field or has a bad
value is counted with its reason and left out; it never stops the report. Lines repeated
with the same ``exposure_id`` or ``event_id`` (a retried write) count once.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segrec.event_log import LogLine, read_event_log
from segrec.experiments import read_exposures

OUTCOMES = {"view": "clicks", "add_to_cart": "carts", "purchase": "purchases"}
FLAGS = {"clicks": "clicked", "carts": "carted", "purchases": "converted"}
EXPOSURE_FIELDS = (
    "exposure_id",
    "ts",
    "customer_id",
    "experiment",
    "variant",
    "placement",
    "segment_id",
    "segment_name",
    "items",
    "config_version",
    "churn_risk",
    "clv_band",
)
EVENT_FIELDS = ("event_id", "customer_id", "product_id", "type", "ts", "quantity", "price")
NOT_SCORED = "(not scored)"  # churn or CLV band of an exposure without customer value
_ZONE = r"(?:Z|[+-]\d{2}:?\d{2})$"  # an ISO 8601 time must end in its zone
_REQUIRED_TEXT = {
    "exposures": ("exposure_id", "customer_id", "experiment", "variant"),
    "events": ("event_id", "customer_id", "product_id", "type"),
}


@dataclass
class LogReading:
    """A log read into a table, with what was left out and why."""

    frame: pd.DataFrame
    lines: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)  # a few bad lines

    def summary(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "used": len(self.frame),
            "bad": sum(self.bad.values()),
            "bad_by_reason": dict(self.bad.most_common()),
            "duplicates": self.duplicates,
            "bad_examples": self.examples,
        }


def _collect(lines: Iterable[LogLine]) -> tuple[list[dict[str, Any]], LogReading]:
    records: list[dict[str, Any]] = []
    reading = LogReading(pd.DataFrame())
    for line in lines:
        reading.lines += 1
        if line.record is None:
            reading.bad[line.error or "unreadable"] += 1
            if len(reading.examples) < 5:
                reading.examples.append(
                    {"file": line.path.name, "line": line.line, "error": line.error}
                )
            continue
        record = dict(line.record)
        record["_where"] = f"{line.path.name}:{line.line}"
        records.append(record)
    return records, reading


Records = Iterable[Mapping[str, Any]] | pd.DataFrame


def _frame(rows: list[dict[str, Any]] | pd.DataFrame, fields: tuple[str, ...]) -> pd.DataFrame:
    """The records as a table of ``fields`` (missing ones NA) and ``_where`` (the file and
    line, or the record's position, for reporting bad rows)."""
    columns = [*fields, "_where"]
    if isinstance(rows, pd.DataFrame):
        frame = rows.reset_index(drop=True).reindex(columns=columns).astype(object)
    else:
        frame = pd.DataFrame.from_records(rows, columns=columns)
    where = pd.Series([f"record {i}" for i in frame.index], index=frame.index)
    frame["_where"] = frame["_where"].fillna(where)
    return frame


def _is_text(values: pd.Series) -> np.ndarray:
    # A comprehension over the raw objects: Series.map boxes every value (10x slower).
    return np.array([isinstance(v, str) and v != "" for v in values.to_numpy()], dtype=bool)


def _text(column: pd.Series) -> pd.Series:
    """Non-empty strings stay; anything else (missing, numbers, lists) becomes NA."""
    return column.where(_is_text(column))


def _validate(
    frame: pd.DataFrame, reading: LogReading, problems: Mapping[str, pd.Series]
) -> pd.DataFrame:
    """Drop rows any problem mask flags; count each row under its first problem."""
    bad = pd.Series(False, index=frame.index)
    for reason, mask in problems.items():
        new = mask & ~bad
        count = int(new.sum())
        if count:
            reading.bad[reason] += count
            if len(reading.examples) < 5:
                for where in frame.loc[new, "_where"].head(5 - len(reading.examples)):
                    reading.examples.append({"where": where, "error": reason})
        bad |= mask
    return frame[~bad]


def _times(column: pd.Series) -> pd.Series:
    """ISO 8601 strings and aware datetimes as UTC datetimes; anything else (unparseable
    text, naive datetimes, numbers) NaT: a time without a zone has no defined instant."""
    values = column.to_numpy()
    text = _is_text(column)
    zoned = column.where(text).str.contains(_ZONE, regex=True, na=False).to_numpy(dtype=bool)
    ok = (text & zoned) | np.array(
        [isinstance(v, dt.datetime) and v.tzinfo is not None for v in values], dtype=bool
    )
    parsed = pd.to_datetime(column.where(ok), utc=True, errors="coerce", format="ISO8601")
    return parsed.astype("datetime64[ns, UTC]")


def exposure_table(records: Records) -> LogReading:
    """Exposure records (dicts in the log's format, or a table with those columns) as a
    validated, deduplicated table.

    Columns: ``EXPOSURE_FIELDS`` (``ts`` as UTC datetimes, ``items`` as tuples of
    product ids, ``segment_name`` filled from the id when missing).
    """
    rows = records if isinstance(records, pd.DataFrame) else [dict(r) for r in records]
    return _exposures(rows, LogReading(pd.DataFrame(), lines=len(rows)))


def _exposures(rows: list[dict[str, Any]] | pd.DataFrame, reading: LogReading) -> LogReading:
    frame = _frame(rows, EXPOSURE_FIELDS)
    problems: dict[str, pd.Series] = {}
    for name in _REQUIRED_TEXT["exposures"]:
        frame[name] = _text(frame[name])
        problems[f"exposure without a {name}"] = frame[name].isna()
    frame["ts"] = _times(frame["ts"])
    problems["exposure ts missing or not ISO 8601"] = frame["ts"].isna()
    good_items = [
        isinstance(v, list | tuple) and all(isinstance(i, str) for i in v)
        for v in frame["items"].to_numpy()
    ]
    problems["exposure items not a list of product ids"] = ~pd.Series(good_items, frame.index)
    frame = _validate(frame, reading, problems)
    items = pd.Series([tuple(v) for v in frame["items"].to_numpy()], frame.index, dtype=object)
    frame = frame.assign(items=items)
    names = _text(frame["segment_name"])
    ids = pd.Series(
        [None if v is None or v != v else f"segment {v}" for v in frame["segment_id"].to_numpy()],
        index=frame.index,
        dtype=object,
    )
    # Older logs and customers the value models did not score have no churn risk or CLV
    # band: their own group in the breakdowns, not dropped.
    frame = frame.assign(
        segment_name=names.fillna(ids).fillna("(no segment)"),
        placement=_text(frame["placement"]).fillna("(unknown)"),
        churn_risk=pd.to_numeric(frame["churn_risk"], errors="coerce"),
        clv_band=_text(frame["clv_band"]).fillna(NOT_SCORED),
    )
    before = len(frame)
    frame = frame.drop_duplicates("exposure_id", keep="first")
    reading.duplicates = before - len(frame)
    reading.frame = frame.drop(columns="_where").reset_index(drop=True)
    return reading


def event_table(records: Records) -> LogReading:
    """Event records (dicts in the event log's format, or a table with those columns) as
    a validated, deduplicated table with ``EVENT_FIELDS`` (``ts`` as UTC datetimes,
    ``price`` NaN when not given)."""
    rows = records if isinstance(records, pd.DataFrame) else [dict(r) for r in records]
    return _events(rows, LogReading(pd.DataFrame(), lines=len(rows)))


def _events(rows: list[dict[str, Any]] | pd.DataFrame, reading: LogReading) -> LogReading:
    frame = _frame(rows, EVENT_FIELDS)
    problems: dict[str, pd.Series] = {}
    for name in _REQUIRED_TEXT["events"]:
        frame[name] = _text(frame[name])
        problems[f"event without a {name}"] = frame[name].isna()
    frame["ts"] = _times(frame["ts"])
    problems["event ts missing or not ISO 8601"] = frame["ts"].isna()
    quantity_given = frame["quantity"].notna()
    quantity = pd.to_numeric(frame["quantity"], errors="coerce").where(quantity_given, 1.0)
    problems["event quantity not a positive number"] = ~(quantity > 0)
    price_given = frame["price"].notna()
    price = pd.to_numeric(frame["price"], errors="coerce")
    problems["event price not a non-negative number"] = price_given & ~(price >= 0)
    frame = frame.assign(quantity=quantity, price=price.astype(float))
    frame = _validate(frame, reading, problems)
    before = len(frame)
    frame = frame.drop_duplicates("event_id", keep="first")
    reading.duplicates = before - len(frame)
    reading.frame = frame.drop(columns="_where").reset_index(drop=True)
    return reading


def load_exposures(directory: Path) -> LogReading:
    """Every exposure under ``directory`` (none if it is missing), bad lines counted."""
    rows, reading = _collect(read_exposures(directory))
    return _exposures(rows, reading)


def load_events(directory: Path) -> LogReading:
    """Every live event under ``directory`` (none if it is missing), bad lines counted."""
    rows, reading = _collect(read_event_log(directory))
    return _events(rows, reading)


@dataclass
class Attribution:
    """The joined tables.

    Attributes
    ----------
    per_exposure : DataFrame
        One row per exposure: the exposure's fields (without ``items``), ``n_items``,
        ``clicks``, ``carts``, ``purchases``, ``revenue``, ``clicked``, ``carted``,
        ``converted``.
    attributed : DataFrame
        Each attributed outcome event with the ``exposure_id`` it counts for.
    counts : dict
        Outcome events seen, attributed and not, by type; purchases without a price.
    """

    per_exposure: pd.DataFrame
    attributed: pd.DataFrame
    counts: dict[str, Any]

    def per_customer(self) -> pd.DataFrame:
        """:func:`customer_table` of every exposure."""
        return customer_table(self.per_exposure)


def attribute(
    exposures: pd.DataFrame, events: pd.DataFrame, window: pd.Timedelta | float
) -> Attribution:
    """Attribute outcome ``events`` to ``exposures`` (tables from :func:`exposure_table`
    and :func:`event_table`); ``window`` in hours or as a Timedelta."""
    if not isinstance(window, pd.Timedelta):
        window = pd.Timedelta(hours=float(window))
    if window <= pd.Timedelta(0):
        raise ValueError(f"the attribution window must be positive, got {window}")
    outcomes = events[events["type"].isin(list(OUTCOMES))]
    shown = (
        exposures[["exposure_id", "customer_id", "ts", "items"]]
        .explode("items")
        .rename(columns={"items": "product_id", "ts": "exposure_ts"})
        .dropna(subset=["product_id"])
    )
    # The same product twice in one carousel is one showing.
    shown = shown.drop_duplicates(["exposure_id", "product_id"])
    shown = shown.assign(ts=shown["exposure_ts"]).sort_values("ts", kind="stable")
    left = outcomes[["event_id", "customer_id", "product_id", "type", "ts", "quantity", "price"]]
    left = left.sort_values("ts", kind="stable")
    # Ids as objects on both sides: an empty log's columns come out as floats, and
    # merge_asof refuses keys of different types.
    left = left.astype({"customer_id": object, "product_id": object})
    shown = shown.astype({"customer_id": object, "product_id": object})
    # merge_asof backward: for each outcome the latest showing at or before it, of the
    # same customer and product, no older than the window: "newest exposure wins".
    joined = pd.merge_asof(
        left,
        shown[["ts", "customer_id", "product_id", "exposure_id", "exposure_ts"]],
        on="ts",
        by=["customer_id", "product_id"],
        direction="backward",
        tolerance=window,
        allow_exact_matches=True,
    )
    attributed = joined[joined["exposure_id"].notna()].reset_index(drop=True)
    purchases = attributed["type"] == "purchase"
    no_price = purchases & attributed["price"].isna()
    attributed = attributed.assign(
        revenue=np.where(purchases, attributed["price"].fillna(0.0) * attributed["quantity"], 0.0)
    )

    per_type = (
        attributed.groupby(["exposure_id", "type"])["product_id"].nunique().unstack(fill_value=0)
    )
    table = exposures.drop(columns=["items"]).assign(
        n_items=exposures["items"].map(len).astype(int)
    )
    table = table.set_index("exposure_id")
    for kind, column in OUTCOMES.items():
        per_kind = per_type[kind] if kind in per_type else pd.Series(dtype=int)
        table[column] = per_kind.reindex(table.index, fill_value=0).astype(int)
    revenue = attributed.groupby("exposure_id")["revenue"].sum()
    table["revenue"] = revenue.reindex(table.index, fill_value=0.0).astype(float)
    for count, flag in FLAGS.items():
        table[flag] = (table[count] > 0).astype(int)
    table = table.reset_index()

    seen = outcomes["type"].value_counts()
    got = attributed["type"].value_counts()
    counts = {
        "outcome_events": len(outcomes),
        "attributed": len(attributed),
        "not_attributed": len(outcomes) - len(attributed),
        "by_type": {
            kind: {"events": int(seen.get(kind, 0)), "attributed": int(got.get(kind, 0))}
            for kind in OUTCOMES
        },
        "attributed_purchases_without_price": int(no_price.sum()),
        "other_events": len(events) - len(outcomes),
        "window_hours": window.total_seconds() / 3600,
    }
    return Attribution(table, attributed, counts)


def customer_table(per_exposure: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, variant, customer): ``exposures``; ``clicked``,
    ``carted``, ``converted`` (how many of their exposures had the outcome); ``clicks``,
    ``carts``, ``purchases``, ``revenue`` (sums); ``any_click``, ``any_cart``,
    ``any_purchase`` (0/1). The unit of every significance test."""
    sums = ["clicked", "carted", "converted", "clicks", "carts", "purchases", "revenue"]
    grouped = per_exposure.groupby(["experiment", "variant", "customer_id"], sort=False)
    table = grouped[sums].sum()
    table.insert(0, "exposures", grouped.size())
    table["any_click"] = (table["clicked"] > 0).astype(int)
    table["any_cart"] = (table["carted"] > 0).astype(int)
    table["any_purchase"] = (table["converted"] > 0).astype(int)
    return table.reset_index()
