"""Schema violations say which table, column, rule and rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.data.schema import SchemaViolation, validate
from training.data.tables import read_table, write_table


def _events(**changes: list) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "customer_id": ["c_0123456789abcdef"] * 3,
            "product_id": ["P1", "P2", "P3"],
            "ts": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True),
            "type": ["view", "purchase", "rating"],
            "quantity": [1, 2, 1],
            "price": [None, 9.99, None],
            "value": [None, 19.98, 4.0],
            "session_id": ["s1", "s1", None],
            "price_outlier": [False] * 3,
            "quantity_outlier": [False] * 3,
        }
    )
    for column, values in changes.items():
        frame[column] = values
    return frame


def test_valid_events_pass() -> None:
    assert len(validate("events", _events())) == 3


def test_violation_names_table_column_rule_and_rows() -> None:
    with pytest.raises(SchemaViolation) as caught:
        validate("events", _events(quantity=[1, 0, -3], type=["view", "purchase", "clickk"]))
    message = str(caught.value)
    assert "table 'events' breaks its schema" in message
    assert (
        "events.quantity: rule greater_than_or_equal_to(1) failed for 2 rows: "
        "row 1 (0), row 2 (-3)" in message
    )
    assert "events.type: rule isin(" in message and "row 2 ('clickk')" in message


def test_table_wide_rule_is_reported() -> None:
    with pytest.raises(SchemaViolation, match="rating_events_have_a_value"):
        validate("events", _events(value=[None, 19.98, None]))


def test_unknown_and_missing_columns_are_named() -> None:
    frame = _events().drop(columns=["session_id"]).assign(extra=1)
    with pytest.raises(SchemaViolation) as caught:
        validate("events", frame)
    message = str(caught.value)
    assert "session_id" in message and "extra" in message


def test_write_refuses_bad_rows_and_read_checks_the_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaViolation, match="on write"):
        write_table(tmp_path, "events", _events(customer_id=["raw-1"] * 3))
    assert not (tmp_path / "events.parquet").exists()
    _events().pipe(lambda f: f.assign(quantity=[1, -1, 1])).to_parquet(tmp_path / "events.parquet")
    with pytest.raises(SchemaViolation, match=r"on read of .*events.parquet"):
        read_table(tmp_path, "events")


def test_missing_table_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run `make data` first"):
        read_table(tmp_path, "customers")
