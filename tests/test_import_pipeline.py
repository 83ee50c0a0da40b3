"""Real-export fixtures through import and cleaning: each stage balances, output is clean."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from segrec.pseudonym import pseudonymise
from segrec.settings import DEVELOPMENT_SECRET
from tests.conftest import make_settings
from training.data.importers import import_export
from training.data.pipeline import clean_dataset
from training.data.quality import QualityReport, read_set_aside
from training.data.tables import read_table

FIXTURES = Path(__file__).parent / "fixtures" / "importers"


def _run(tmp_path: Path, fmt: str, source: str | Path) -> tuple[dict, Path]:
    settings = make_settings(tmp_path)
    report = QualityReport(settings.set_aside_dir, DEVELOPMENT_SECRET)
    raw = import_export(fmt, FIXTURES / source, settings.raw_dir / fmt, report, settings)
    summary = clean_dataset(raw, settings, report)
    return summary.report, settings.clean_dir


@pytest.mark.parametrize(
    ("fmt", "source"),
    [
        ("online-retail", "online_retail.csv"),
        ("movielens", "ml-100k"),
        ("movielens", "ml-latest"),
        ("canonical", "canonical_full"),
    ],
)
def test_every_stage_balances_and_tables_validate(tmp_path: Path, fmt: str, source: str) -> None:
    report, clean_dir = _run(tmp_path, fmt, source)
    tables = report["tables"]
    for name, counts in tables.items():
        merged = counts.get("notes", {}).get("dedup", {}).get("records_merged_into_another", 0)
        assert counts["rows_out"] + counts["rows_set_aside"] + merged == counts["rows_in"], name
    for name in ("customers", "products", "events"):
        assert tables[f"import.{name}"]["rows_out"] == tables[name]["rows_in"]
        assert len(read_table(clean_dir, name)) == tables[name]["rows_out"] > 0
    # No fixture has launch dates: the optional column is there, all missing.
    launch = read_table(clean_dir, "products")["launch_ts"]
    assert str(launch.dtype) == "datetime64[ns, UTC]" and launch.isna().all()


def test_online_retail_end_to_end(tmp_path: Path) -> None:
    report, clean_dir = _run(tmp_path, "online-retail", "online_retail.csv")
    imported = report["tables"]["import.events"]
    assert imported["rows_in"] == 32
    assert sum(imported["set_aside"].values()) == 17
    events = read_table(clean_dir, "events")
    first = events.loc[events["event_id"] == "536365-1"].iloc[0]
    # Month-first source dates: 12/1/2010 is 1 December.
    assert first["ts"] == pd.Timestamp("2010-12-01 08:26", tz="UTC")
    assert first["customer_id"] == pseudonymise("17850", DEVELOPMENT_SECRET)
    assert first["quantity"] == 6 and first["value"] == pytest.approx(15.3)
    products = read_table(clean_dir, "products").set_index("product_id")
    assert products.loc["85123A", "title"] == "SET OF 3 CAKE TINS, PANTRY DESIGN"
    assert (events["type"] == "purchase").all()
    aside = read_set_aside(clean_dir.parent / "set_aside", "import.events")
    assert set(aside["reason"]) == set(imported["set_aside"])


def test_movielens_ratings_and_demographics(tmp_path: Path) -> None:
    _, clean_dir = _run(tmp_path, "movielens", "ml-100k")
    events = read_table(clean_dir, "events")
    assert (events["type"] == "rating").all()
    assert events["value"].between(1, 5).all()
    customers = read_table(clean_dir, "customers").set_index("customer_id")
    user_1 = customers.loc[pseudonymise("1", DEVELOPMENT_SECRET)]
    assert user_1["gender"] == "M" and user_1["occupation"] == "technician"
    products = read_table(clean_dir, "products")
    assert products["title"].str.contains("Café").any()
    assert products["tags"].notna().all()


def test_canonical_export_with_pii_is_pseudonymised(tmp_path: Path) -> None:
    report, clean_dir = _run(tmp_path, "canonical", "canonical_full")
    customers = read_table(clean_dir, "customers")
    assert (
        not customers.astype(str).apply(lambda c: c.str.contains("Smith|example.com")).any().any()
    )
    text = json.dumps(report)
    assert "Ann Smith" not in text and "ann@example.com" not in text
    # "no" consent and missing consent both mean no personalisation.
    refused = customers.set_index("customer_id")["consent_personalisation"]
    assert not refused[pseudonymise("c2", DEVELOPMENT_SECRET)]
    assert not refused[pseudonymise("c3", DEVELOPMENT_SECRET)]
    assert refused[pseudonymise("c1", DEVELOPMENT_SECRET)]


def test_canonical_products_may_carry_launch_dates(tmp_path: Path) -> None:
    source = tmp_path / "export"
    shutil.copytree(FIXTURES / "canonical_full", source)
    products = pd.read_csv(source / "products.csv", dtype=str, keep_default_na=False)
    products["launch_ts"] = ["2024-01-15T09:00:00Z", "15/01/2024 09:00", "not yet"]
    products.to_csv(source / "products.csv", index=False)
    report, clean_dir = _run(tmp_path, "canonical", source)
    assert "ignored_columns" not in report["tables"]["import.products"].get("notes", {})
    launch = read_table(clean_dir, "products").set_index("product_id")["launch_ts"]
    assert launch["p1"] == launch["p2"] == pd.Timestamp("2024-01-15 09:00", tz="UTC")
    assert pd.isna(launch["p3"])
    assert report["tables"]["products"]["fixes"]["launch_ts_unparseable_to_missing"] == 1
