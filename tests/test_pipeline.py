"""The whole data layer on the tiny and small storefronts: nothing lost, no PII out."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from segrec.pseudonym import pseudonymise
from tests.conftest import Dataset
from training.data.quality import read_set_aside
from training.data.schema import CUSTOMER_ID_PATTERN
from training.data.tables import read_table


def test_every_raw_row_is_kept_or_set_aside_with_a_reason(tiny: Dataset) -> None:
    report = json.loads((tiny.settings.reports_dir / "data_quality.json").read_text())
    for table in ("events", "products"):
        counts = report["tables"][table]
        raw_rows = tiny.raw.count(table)
        assert counts["rows_in"] == raw_rows
        assert counts["rows_out"] + counts["rows_set_aside"] == raw_rows, table
        aside = read_set_aside(tiny.settings.set_aside_dir, table)
        assert len(aside) == counts["rows_set_aside"]
        assert aside["reason"].value_counts().to_dict() == counts["set_aside"]
    customers = report["tables"]["customers"]
    merged = customers["notes"]["dedup"]["records_merged_into_another"]
    assert customers["rows_out"] + merged + customers["rows_set_aside"] == customers["rows_in"]


def test_set_aside_rows_point_back_at_their_source_row(tiny: Dataset) -> None:
    raw = tiny.raw.read("events").set_index("_row")
    aside = read_set_aside(tiny.settings.set_aside_dir, "events")
    bad_ts = aside[aside["reason"] == "unparseable_timestamp"]
    assert len(bad_ts) > 0
    for _, row in bad_ts.iterrows():
        assert raw.loc[row["row"], "ts"] == row["detail"] == "31/02/2026 25:61:00"
        assert row["source"] == "events.parquet"
    unknown = aside[aside["reason"] == "unknown_event_type"]
    assert set(unknown["detail"]) == {"clickk"}


def test_events_of_merged_duplicates_move_to_the_survivor(tiny: Dataset) -> None:
    secret = tiny.settings.pseudonymisation_secret.get_secret_value()
    truth = pd.read_parquet(tiny.raw.directory / "ground_truth.parquet")
    dupes = truth[truth["duplicate_of"].notna()]
    id_map = pd.read_parquet(tiny.settings.clean_dir / "customer_id_map.parquet")
    id_map = id_map.set_index("source_customer_id")["customer_id"]
    raw_events = tiny.raw.read("events")
    clean_events = tiny.clean("events")
    moved = 0
    for raw_id, original in zip(dupes["raw_customer_id"], dupes["duplicate_of"], strict=True):
        survivor = id_map[pseudonymise(raw_id, secret)]
        assert survivor == id_map[pseudonymise(original, secret)]
        dup_event_ids = raw_events.loc[
            raw_events["customer_id"].str.replace(".0", "", regex=False) == raw_id, "event_id"
        ]
        landed = clean_events[clean_events["event_id"].isin(dup_event_ids)]
        assert (landed["customer_id"] == survivor).all()
        moved += len(landed)
    assert moved > 0


def test_no_raw_pii_in_any_output_file(tiny: Dataset) -> None:
    raw = tiny.raw.read("customers")
    needles = set(raw["email"].dropna()) | set(raw["name"].dropna())
    needles |= set(raw["address"].dropna()) | set(raw["phone"].dropna())
    needles |= set(raw["customer_id"])  # raw ids are pseudonymised too
    outputs = [tiny.settings.clean_dir, tiny.settings.set_aside_dir, tiny.settings.reports_dir]
    files = [p for d in outputs for p in d.rglob("*") if p.is_file()]
    assert len(files) >= 6
    for path in files:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            text = frame.astype(str).to_csv(index=False)
        else:
            text = path.read_bytes().decode("utf-8", errors="ignore")
        cells = set(text.replace(",", "\n").replace('"', "\n").splitlines())
        leaked = {n for n in needles if len(n) > 6 and n in text} | (needles & cells)
        assert not leaked, f"{path} contains raw PII such as {sorted(leaked)[:3]}"


def test_clean_tables_pass_their_schema_on_read(tiny: Dataset) -> None:
    customers = read_table(tiny.settings.clean_dir, "customers")
    assert customers["customer_id"].str.fullmatch(CUSTOMER_ID_PATTERN).all()
    assert set(customers["gender"]) <= {"F", "M", "X", "U"}
    events = read_table(tiny.settings.clean_dir, "events")
    assert events["event_id"].is_unique
    assert set(events["customer_id"]) <= set(customers["customer_id"])
    products = read_table(tiny.settings.clean_dir, "products")
    assert set(events["product_id"]) <= set(products["product_id"])
    assert products["category"].nunique() == 12


def test_consent_is_kept_as_a_flag(tiny: Dataset) -> None:
    customers = tiny.clean("customers")
    report = json.loads((tiny.settings.reports_dir / "data_quality.json").read_text())
    no_consent = int((~customers["consent_personalisation"]).sum())
    assert 0 < no_consent < len(customers) / 4
    assert report["tables"]["customers"]["notes"]["without_personalisation_consent"] == no_consent
    # Customers without consent stay in the tables for aggregate statistics.
    events = tiny.clean("events")
    refused = set(customers.loc[~customers["consent_personalisation"], "customer_id"])
    assert events["customer_id"].isin(refused).any()


def test_imputed_values_are_marked_per_row(tiny: Dataset) -> None:
    customers = tiny.clean("customers")
    report = json.loads((tiny.settings.reports_dir / "data_quality.json").read_text())
    imputed = report["tables"]["customers"]["imputed"]
    marked = customers["imputed_columns"].str.split(",").explode().value_counts()
    assert marked["birth_year"] == imputed["birth_year"]["count"] > 0
    assert marked["gender"] == imputed["gender"]["count"] > 0
    assert (
        customers.loc[customers["imputed_columns"].str.contains("gender"), "gender"].eq("U").all()
    )


def test_planted_outliers_are_flagged_not_removed(small: Dataset) -> None:
    events = small.clean("events")
    bulk = events[events["quantity"] >= 200]
    assert len(bulk) > 0 and bulk["quantity_outlier"].all()
    assert not events.loc[events["quantity"] <= 5, "quantity_outlier"].any()
    products = small.clean("products").set_index("product_id")
    ratio = events["price"] / events["product_id"].map(products["price"])
    wild = (ratio > 20) | (ratio < 0.05)
    assert wild.sum() > 0
    assert events.loc[wild, "price_outlier"].all()
    assert not events.loc[ratio.between(0.5, 1.5), "price_outlier"].any()


@pytest.mark.slow
def test_dedup_precision_and_recall_on_planted_duplicates(small: Dataset) -> None:
    secret = small.settings.pseudonymisation_secret.get_secret_value()
    truth = pd.read_parquet(small.raw.directory / "ground_truth.parquet")
    id_map = pd.read_parquet(small.settings.clean_dir / "customer_id_map.parquet")
    id_map = id_map.set_index("source_customer_id")["customer_id"]
    truth["clean"] = [id_map[pseudonymise(r, secret)] for r in truth["raw_customer_id"]]
    truth["person"] = truth["duplicate_of"].fillna(truth["raw_customer_id"])

    def same_pairs(column: str) -> set[tuple[str, str]]:
        pairs: set[tuple[str, str]] = set()
        for _, group in truth.groupby(column):
            pairs.update(itertools.combinations(sorted(group["raw_customer_id"]), 2))
        return pairs

    predicted, actual = same_pairs("clean"), same_pairs("person")
    hits = len(predicted & actual)
    precision, recall = hits / len(predicted), hits / len(actual)
    print(
        f"dedup on {len(actual)} planted duplicate pairs: precision {precision:.3f}, "
        f"recall {recall:.3f}"
    )
    assert len(actual) > 100
    assert precision >= 0.95
    assert recall >= 0.95
    households = truth[truth["household_of"].notna()]
    assert len(households) > 20
    heads = truth.set_index("raw_customer_id").loc[households["household_of"], "clean"]
    assert (households["clean"].to_numpy() != heads.to_numpy()).all(), "households kept apart"


def test_same_input_gives_the_same_data_version(tiny: Dataset, tmp_path: Path) -> None:
    from tests.conftest import make_settings
    from training.data.pipeline import clean_dataset

    again = clean_dataset(tiny.raw, make_settings(tmp_path, size="tiny"))
    assert again.data_version == tiny.summary.data_version
    manifest = json.loads((tiny.settings.clean_dir / "manifest.json").read_text())
    assert manifest["data_version"] == tiny.summary.data_version
    assert manifest["source"]["seed"] == 42 and manifest["source"]["size"] == "tiny"
