"""The live event log: serving's durable append, and its ingestion into the clean events."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from segrec import cli
from segrec.event_log import FIELDS, EventLog, read_event_log
from segrec.live_session import LiveEvent
from segrec.settings import Settings
from tests.conftest import Dataset, make_settings
from training.data.live_events import ingest_event_log
from training.data.quality import read_set_aside
from training.data.tables import read_table
from training.models.interactions import Interactions

UTC = dt.UTC
RECEIVED = dt.datetime(2026, 10, 31, 9, 30, tzinfo=UTC)
TS = dt.datetime(2026, 10, 30, 12, 0, tzinfo=UTC)


def _event(n: int, **fields: object) -> LiveEvent:
    values: dict[str, object] = {
        "customer_id": "c_00000000000000aa",
        "product_id": "P1",
        "type": "view",
        "ts": TS + dt.timedelta(seconds=n),
        "session_id": "s1",
        "event_id": f"live-{n}",
        **fields,
    }
    return LiveEvent(**values)  # type: ignore[arg-type]


def _lines(directory: Path) -> list[dict[str, object]]:
    out = []
    for line in read_event_log(directory):
        assert line.record is not None, line.error
        out.append(line.record)
    return out


# --- the writer and the reader -------------------------------------------------------


def test_appended_events_read_back_with_every_field(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "live", writer_id="pod-a")
    first = _event(1, price=9.5, type="add_to_cart", quantity=2)
    rating = _event(2, type="rating", value=4.0, session_id=None)
    assert log.append([first, rating], RECEIVED) == 2
    assert log.append([], RECEIVED) == 0
    log.close()

    assert [p.name for p in (tmp_path / "live").iterdir()] == ["events-20261031-pod-a.jsonl"]
    records = _lines(tmp_path / "live")
    assert [tuple(r) for r in records] == [FIELDS, FIELDS]
    assert records[0] == {
        "event_id": "live-1",
        "customer_id": "c_00000000000000aa",
        "product_id": "P1",
        "type": "add_to_cart",
        "ts": "2026-10-30T12:00:01+00:00",
        "quantity": 2,
        "price": 9.5,
        "value": None,
        "session_id": "s1",
        "received_at": "2026-10-31T09:30:00+00:00",
    }
    assert records[1]["value"] == 4.0 and records[1]["session_id"] is None


def test_files_per_writer_and_day_times_in_utc(tmp_path: Path) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    late = dt.datetime(2026, 11, 1, 0, 30, tzinfo=paris)  # still 31 October in UTC
    with EventLog(tmp_path, writer_id="pod/b 1:x") as log:
        log.append([_event(1, ts=late)], late)
        log.append([_event(2)], RECEIVED + dt.timedelta(days=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events-20261031-pod_b_1_x.jsonl",
        "events-20261101-pod_b_1_x.jsonl",
    ]
    assert _lines(tmp_path)[0]["ts"] == "2026-10-31T22:30:00+00:00"
    assert EventLog(tmp_path).writer_id.endswith(f"-{os.getpid()}")


@pytest.mark.parametrize(
    ("events", "received", "message"),
    [
        ([_event(1), _event(2, event_id="")], RECEIVED, "has no event_id"),
        ([_event(1)], RECEIVED.replace(tzinfo=None), "must be timezone-aware"),
        ([_event(1, price=float("nan"))], RECEIVED, "Out of range float"),
    ],
)
def test_an_invalid_batch_writes_nothing(
    tmp_path: Path, events: list[LiveEvent], received: dt.datetime, message: str
) -> None:
    log = EventLog(tmp_path, writer_id="w")
    with pytest.raises(ValueError, match=message):
        log.append(events, received)
    assert list(read_event_log(tmp_path)) == []


def test_concurrent_appends_from_threads_keep_every_line_intact(tmp_path: Path) -> None:
    log = EventLog(tmp_path, writer_id="threads")
    threads, batches, per_batch = 8, 15, 4
    # Long values so a line is larger than a pipe buffer's atomic write would cover.
    padding = "x" * 5000

    def work(t: int) -> None:
        for b in range(batches):
            base = (t * batches + b) * per_batch
            log.append([_event(base + i, session_id=padding) for i in range(per_batch)], RECEIVED)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    log.close()
    records = _lines(tmp_path)
    assert len(records) == threads * batches * per_batch
    assert len({r["event_id"] for r in records}) == len(records)
    assert all(r["session_id"] == padding for r in records)


def test_a_truncated_last_line_is_reported_and_the_next_writer_starts_afresh(
    tmp_path: Path,
) -> None:
    with EventLog(tmp_path, writer_id="crashy") as log:
        log.append([_event(1), _event(2)], RECEIVED)
    path = log.path_for(RECEIVED)
    with path.open("ab") as handle:  # a crash in the middle of an append
        handle.write(b'{"event_id":"live-3","customer_')

    lines = list(read_event_log(tmp_path))
    assert [line.ok for line in lines] == [True, True, False]
    assert lines[2].line == 3 and "incomplete last line" in (lines[2].error or "")

    # The restarted container has the same writer id (same hostname, pid 1).
    with EventLog(tmp_path, writer_id="crashy") as log:
        log.append([_event(4)], RECEIVED)
    lines = list(read_event_log(tmp_path))
    assert [line.ok for line in lines] == [True, True, False, True]
    assert lines[2].error is not None and lines[2].error.startswith("not JSON")
    assert lines[3].record is not None and lines[3].record["event_id"] == "live-4"


def test_a_missing_directory_reads_as_empty(tmp_path: Path) -> None:
    assert list(read_event_log(tmp_path / "nowhere")) == []


# --- ingestion into the clean events ---------------------------------------------------


@pytest.fixture
def shop(tmp_path: Path, tiny: Dataset) -> Settings:
    """Settings under tmp_path with a copy of the tiny storefront's clean data."""
    settings = make_settings(tmp_path)
    shutil.copytree(tiny.settings.clean_dir, settings.clean_dir)
    return settings


def _manifest(settings: Settings) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((settings.clean_dir / "manifest.json").read_text())
    return manifest


def test_ingest_adds_valid_lines_sets_bad_ones_aside_and_is_idempotent(shop: Settings) -> None:
    customers = pd.read_parquet(shop.clean_dir / "customers.parquet")
    products = pd.read_parquet(shop.clean_dir / "products.parquet")
    events_before = pd.read_parquet(shop.clean_dir / "events.parquet")
    id_map = pd.read_parquet(shop.clean_dir / "customer_id_map.parquet")
    merged = id_map[id_map["source_customer_id"] != id_map["customer_id"]].iloc[0]
    known, product = customers["customer_id"].iloc[0], products["product_id"].iloc[0]
    newcomer = "c_0123456789abcdef"  # signed up after the data build
    assert newcomer not in set(customers["customer_id"])
    version_before = _manifest(shop)["data_version"]

    pod_a = EventLog(shop.event_log_dir, writer_id="pod-a")
    pod_a.append(
        [
            _event(1, customer_id=known, product_id=product),
            _event(
                2, customer_id=known, product_id=product, type="purchase", price=4.0, quantity=3
            ),
            _event(3, customer_id=newcomer, product_id=product, type="rating", value=5.0),
            _event(4, customer_id=merged["source_customer_id"], product_id=product),
            _event(5, customer_id=known, product_id="no-such-product"),
            _event(6, customer_id="alice@example.com", product_id=product),
            _event(7, customer_id=known, product_id=product, type="rating"),
            _event(8, customer_id=known, product_id=product, quantity=0),
            _event(9, customer_id=known, product_id=product, type="wishlist"),
            # Already in the clean table (e.g. an export that overlaps the log).
            _event(
                10,
                customer_id=known,
                product_id=product,
                event_id=events_before["event_id"].iloc[0],
            ),
        ],
        RECEIVED,
    )
    # A retried request that another pod accepted as well.
    pod_b = EventLog(shop.event_log_dir, writer_id="pod-b")
    pod_b.append([_event(1, customer_id=known, product_id=product)], RECEIVED)
    with pod_b.path_for(RECEIVED).open("ab") as handle:
        handle.write(b'{"event_id": "live-99"')

    summary = ingest_event_log(shop)

    assert (summary.files, summary.lines, summary.ingested) == (2, 12, 4)
    assert summary.duplicates == 2 and summary.set_aside == 6
    assert summary.reasons == {
        "invalid_customer_id": 1,
        "invalid_quantity": 1,
        "rating_without_value": 1,
        "unknown_event_type": 1,
        "unknown_product": 1,
        "unparseable_line": 1,
    }
    assert summary.unknown_customer == 1 and summary.merged_customer == 1
    assert summary.line().startswith("ingested 4 live events (2 duplicates, 6 set aside) from 2")

    events = read_table(shop.clean_dir, "events")  # validates the whole table
    assert len(events) == len(events_before) + 4
    live = events[events["event_id"].str.startswith("live-")].set_index("event_id")
    assert sorted(live.index) == ["live-1", "live-2", "live-3", "live-4"]
    assert live.loc["live-2", "value"] == 12.0  # a purchase's value is its revenue
    assert live.loc["live-3", "value"] == 5.0 and live.loc["live-3", "customer_id"] == newcomer
    assert live.loc["live-4", "customer_id"] == merged["customer_id"]
    assert not live[["price_outlier", "quantity_outlier"]].to_numpy().any()
    assert live.loc["live-1", "ts"] == pd.Timestamp(TS + dt.timedelta(seconds=1))

    manifest = _manifest(shop)
    assert manifest["data_version"] == summary.data_version != version_before
    assert manifest["rows"]["events"] == len(events)
    assert manifest["live_events"] == {
        "log_dir": str(shop.event_log_dir),
        "files": 2,
        "lines": 12,
        "ingested": 4,
        "duplicates": 2,
        "set_aside": 6,
        "unknown_customer": 1,
        "in_table": 5,
        "ingested_through": RECEIVED.isoformat(),
    }

    aside = read_set_aside(shop.set_aside_dir, "live_events")
    assert summary.set_aside_path == shop.set_aside_dir / "live_events.parquet"
    assert sorted(aside["reason"]) == sorted(summary.reasons)
    bad_product = aside[aside["reason"] == "unknown_product"].iloc[0]
    assert bad_product["row"] == 5 and bad_product["source"].endswith("pod-a.jsonl")
    assert bad_product["detail"] == "no-such-product"
    assert "alice@example.com" not in aside.to_string()  # maybe a raw id: stored hashed
    assert aside.loc[aside["reason"] == "unparseable_line", "row"].item() == 2

    # Training builds its customer vocabulary from the events, so a newcomer is kept.
    assert newcomer in Interactions.from_events(events).customers

    again = ingest_event_log(shop)
    assert (again.ingested, again.duplicates, again.set_aside) == (0, 6, 6)
    assert again.data_version == summary.data_version
    assert len(read_table(shop.clean_dir, "events")) == len(events)
    assert len(read_set_aside(shop.set_aside_dir, "live_events")) == 6

    pod_a.append([_event(11, customer_id=known, product_id=product)], RECEIVED)
    third = ingest_event_log(shop)
    assert third.ingested == 1 and third.data_version != summary.data_version
    pod_a.close()
    pod_b.close()


def test_ingest_without_a_log_changes_nothing(shop: Settings) -> None:
    before = _manifest(shop)
    summary = ingest_event_log(shop)
    assert (summary.files, summary.lines, summary.ingested, summary.set_aside) == (0, 0, 0, 0)
    assert summary.data_version == before["data_version"] and summary.set_aside_path is None
    assert _manifest(shop)["sha256"] == before["sha256"]
    assert not (shop.set_aside_dir / "live_events.parquet").exists()


def test_ingest_needs_a_data_build(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run `make data` first"):
        ingest_event_log(make_settings(tmp_path))


# --- the CLI wiring ----------------------------------------------------------------------


def test_train_and_data_commands_ingest_the_log(
    shop: Settings, tiny: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    product = pd.read_parquet(shop.clean_dir / "products.parquet")["product_id"].iloc[0]
    customer = pd.read_parquet(shop.clean_dir / "customers.parquet")["customer_id"].iloc[0]
    with EventLog(shop.event_log_dir, writer_id="pod") as log:
        log.append([_event(1, customer_id=customer, product_id=product)], RECEIVED)
    seen: list[int] = []

    def fake_train(settings: Settings, *, export: bool) -> None:
        seen.append(len(pd.read_parquet(settings.clean_dir / "events.parquet")))

    def fake_clean(settings: Settings, *args: object) -> None:
        # Cleaning rebuilds the events from the raw export, without the live ones.
        shutil.rmtree(settings.clean_dir)
        shutil.copytree(tiny.settings.clean_dir, settings.clean_dir)

    monkeypatch.setattr(cli, "get_settings", lambda: shop)
    monkeypatch.setattr(cli, "run_train", fake_train)
    monkeypatch.setattr(cli, "run_data", fake_clean)
    runner = CliRunner()
    rows = len(tiny.clean("events"))

    result = runner.invoke(cli.app, ["train"])
    assert result.exit_code == 0, result.output
    assert "Live events: ingested 1 live events (0 duplicates, 0 set aside) from 1 log file" in (
        " ".join(result.output.split())
    )
    assert seen == [rows + 1]  # ingested before training

    result = runner.invoke(cli.app, ["data"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(shop.clean_dir / "events.parquet")) == rows + 1
