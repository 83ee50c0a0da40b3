"""Schemas of the clean canonical tables, checked on every write and every read.

A violation raises :class:`SchemaViolation`, whose message names the table, the column,
the rule and the offending rows (index and value), e.g.::

    events.quantity: rule greater_than_or_equal_to(1) failed for 2 rows: row 4 (0), row 9 (-3)
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from segrec.pseudonym import CUSTOMER_ID_PATTERN

EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "rating")
GENDERS = ("F", "M", "X", "U")
UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
MAX_SHOWN_ROWS = 5


def _customers() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "customer_id": pa.Column(str, pa.Check.str_matches(CUSTOMER_ID_PATTERN), unique=True),
            "signup_ts": pa.Column(UTC_NS, coerce=True),
            "birth_year": pa.Column("Int64", pa.Check.in_range(1900, 2030), nullable=True),
            "gender": pa.Column(str, pa.Check.isin(GENDERS)),
            "country": pa.Column(str),
            "city": pa.Column(str),
            "postcode_area": pa.Column(str, nullable=True),
            "occupation": pa.Column(str, nullable=True),
            "consent_personalisation": pa.Column(bool),
            "consent_marketing": pa.Column(bool),
            "merged_records": pa.Column("int64", pa.Check.ge(1)),
            "imputed_columns": pa.Column(str),
        },
        strict=True,
        name="customers",
    )


def _products() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "product_id": pa.Column(str, pa.Check.str_length(min_value=1), unique=True),
            "title": pa.Column(str),
            "description": pa.Column(str),
            "category": pa.Column(str, pa.Check.str_matches(r"^[a-z0-9_]+$")),
            "brand": pa.Column(str),
            "price": pa.Column(float, pa.Check.gt(0), nullable=True),
            "price_outlier": pa.Column(bool),
            "in_stock": pa.Column(bool),
            "tags": pa.Column(str, nullable=True),
            "launch_ts": pa.Column(UTC_NS, coerce=True, nullable=True),
            "imputed_columns": pa.Column(str),
        },
        strict=True,
        name="products",
    )


def _events() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "event_id": pa.Column(str, pa.Check.str_length(min_value=1), unique=True),
            "customer_id": pa.Column(str, pa.Check.str_matches(CUSTOMER_ID_PATTERN)),
            "product_id": pa.Column(str, pa.Check.str_length(min_value=1)),
            "ts": pa.Column(UTC_NS, coerce=True),
            "type": pa.Column(str, pa.Check.isin(EVENT_TYPES)),
            "quantity": pa.Column("int64", pa.Check.ge(1)),
            "price": pa.Column(float, pa.Check.ge(0), nullable=True),
            "value": pa.Column(float, nullable=True),
            "session_id": pa.Column(str, nullable=True),
            "price_outlier": pa.Column(bool),
            "quantity_outlier": pa.Column(bool),
        },
        checks=[
            pa.Check(
                lambda df: (df["type"] != "rating") | df["value"].notna(),
                name="rating_events_have_a_value",
                element_wise=False,
            )
        ],
        strict=True,
        name="events",
    )


SCHEMAS: Mapping[str, pa.DataFrameSchema] = {
    "customers": _customers(),
    "products": _products(),
    "events": _events(),
}


class SchemaViolation(ValueError):
    """A clean table broke its contract; ``failures`` has one row per offending value."""

    def __init__(self, table: str, failures: pd.DataFrame, where: str = "") -> None:
        self.table = table
        self.failures = failures
        super().__init__(describe_failures(table, failures, where))


def describe_failures(table: str, failures: pd.DataFrame, where: str = "") -> str:
    lines = [f"table '{table}'{f' ({where})' if where else ''} breaks its schema:"]
    for (column, check), group in failures.groupby(
        [failures["column"].fillna("<table>"), failures["check"].astype(str)], sort=True
    ):
        shown = ", ".join(
            f"row {idx if idx is not None and not pd.isna(idx) else '?'} ({value!r})"
            for idx, value in zip(
                group["index"].head(MAX_SHOWN_ROWS),
                group["failure_case"].head(MAX_SHOWN_ROWS),
                strict=True,
            )
        )
        more = f" and {len(group) - MAX_SHOWN_ROWS} more" if len(group) > MAX_SHOWN_ROWS else ""
        lines.append(
            f"  {table}.{column}: rule {check} failed for {len(group)} rows: {shown}{more}"
        )
    return "\n".join(lines)


def validate(table: str, frame: pd.DataFrame, where: str = "") -> pd.DataFrame:
    """Validate ``frame`` against the schema of ``table``; return it with dtypes coerced."""
    try:
        return SCHEMAS[table].validate(frame, lazy=True)
    except SchemaErrors as error:
        raise SchemaViolation(table, error.failure_cases, where) from None
