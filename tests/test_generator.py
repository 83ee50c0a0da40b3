"""The synthetic storefront: deterministic, messy as promised, with recoverable structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import END, SEED, Dataset
from training.data.cleaning.parse import parse_timestamps
from training.data.raw import RawDataset
from training.data.synthetic.generator import MessRates, generate


def _tables(directory: Path) -> dict[str, pd.DataFrame]:
    raw = RawDataset(directory)
    tables = {t: raw.read(t) for t in ("customers", "products", "events")}
    tables["truth"] = pd.read_parquet(directory / "ground_truth.parquet")
    return tables


def test_same_seed_gives_identical_tables(tmp_path: Path) -> None:
    generate(tmp_path / "a", "tiny", SEED, END, progress=False)
    generate(tmp_path / "b", "tiny", SEED, END, progress=False)
    first, second = _tables(tmp_path / "a"), _tables(tmp_path / "b")
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], obj=name)


def test_another_seed_gives_other_data(tmp_path: Path) -> None:
    generate(tmp_path / "a", "tiny", 1, END, progress=False)
    generate(tmp_path / "b", "tiny", 2, END, progress=False)
    assert not _tables(tmp_path / "a")["events"].equals(_tables(tmp_path / "b")["events"])


def test_unknown_size_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown size 'huge': choose one of tiny"):
        generate(tmp_path, "huge", SEED, END)


def test_a_custom_size_replays_to_its_ground_truth(tmp_path: Path) -> None:
    """``"<customers>x<products>"`` sizes (the benchmarks' and larger storefronts') are
    replayed like named ones, so their evaluations get the oracle rows; a replay with
    another seed is told apart."""
    import datetime as dt
    import json

    from training.data.synthetic.generator import matches_ground_truth, replay, replay_problem

    generate(tmp_path, "600x200", SEED, END, progress=False)
    source = json.loads((tmp_path / "source.json").read_text())
    assert source["size"] == "600x200" and replay_problem(source) is None
    end = dt.date.fromisoformat(str(source["end"]))
    assert matches_ground_truth(tmp_path, replay(source["size"], SEED, end))
    assert not matches_ground_truth(tmp_path, replay(source["size"], SEED + 1, end))


def test_raw_export_carries_every_kind_of_mess(tmp_path: Path) -> None:
    rates = MessRates(invalid_type=0.01, bad_timestamp=0.01, duplicate_event_row=0.02)
    generate(tmp_path, "tiny", SEED, END, rates=rates, progress=False)
    t = _tables(tmp_path)
    events, customers, products = t["events"], t["customers"], t["products"]
    assert events["customer_id"].str.endswith(".0").any()
    assert (events["type"] == "clickk").any()
    assert events["type"].isin(["View", "VIEW", "page_view", "Purchase", "order"]).any()
    assert events.duplicated(subset=["event_id", "ts", "type"]).any()
    formats = events["ts"].str.extract(r"(?P<iso_z>Z$)|(?P<slash>^\d\d/)|(?P<epoch>^\d{10}$)")
    assert formats.notna().any().all(), "ISO, day-first and epoch timestamps all appear"
    assert customers["birth_year"].isna().mean() > 0.05
    assert customers["gender"].isin(["female", "male", "f", "m"]).any()
    assert products["category"].nunique() > 12, "category spelled more than one way"
    assert products["price"].str.startswith("£", na=False).any()
    assert t["truth"]["duplicate_of"].notna().sum() > 0


def test_launch_dates_are_written_and_parse_back_to_the_ground_truth(tiny: Dataset) -> None:
    products = tiny.raw.read("products")
    truth = pd.read_parquet(tiny.raw.directory / "ground_truth_products.parquet")
    launch = products["product_id"].map(truth.set_index("product_id")["launch_ts"])
    parsed, bad = parse_timestamps(products["launch_ts"], dayfirst=True)
    written = products["launch_ts"].notna()
    assert not bad.any() and parsed.notna().equals(written)
    assert 0.9 < written.mean() < 1, "a small share is blanked"
    assert (parsed[written] == launch[written]).all()
    formats = products["launch_ts"].str.extract(
        r"(?P<iso_z>Z$)|(?P<offset>\+01:00$)|(?P<slash>^\d\d/)|(?P<epoch>^\d{10}$)"
    )
    assert formats.notna().any().all(), "launch dates come in mixed formats"
    # A repeated product row is an exact copy, launch date included.
    repeated = products.duplicated("product_id", keep=False)
    assert repeated.any()
    assert products[repeated].drop(columns="_row").duplicated(keep=False).all()

    clean = tiny.clean("products")
    known = clean["launch_ts"].notna()
    expected = clean["product_id"].map(truth.set_index("product_id")["launch_ts"])
    assert (clean.loc[known, "launch_ts"] == expected[known]).all()
    assert len(clean) == len(truth)
    assert known.sum() == products.drop_duplicates("product_id")["launch_ts"].notna().sum()


def test_launch_dates_draw_nothing_from_the_main_stream(tmp_path: Path) -> None:
    generate(tmp_path / "a", "tiny", SEED, END, progress=False)
    generate(tmp_path / "b", "tiny", SEED, END, rates=MessRates(missing_launch=0.0), progress=False)
    first, second = _tables(tmp_path / "a"), _tables(tmp_path / "b")
    for name in ("customers", "events", "truth"):
        pd.testing.assert_frame_equal(first[name], second[name], obj=name)
    pd.testing.assert_frame_equal(
        first["products"].drop(columns="launch_ts"), second["products"].drop(columns="launch_ts")
    )
    every = second["products"]
    truth = pd.read_parquet(tmp_path / "b" / "ground_truth_products.parquet")
    parsed, _ = parse_timestamps(every["launch_ts"], dayfirst=True)
    launch = every["product_id"].map(truth.set_index("product_id")["launch_ts"])
    assert parsed.notna().all() and (parsed == launch).all(), "every product, to the second"


def _persona_stats(ds: Dataset) -> pd.DataFrame:
    """Per planted persona: behaviour measured from the clean tables only."""
    from segrec.pseudonym import pseudonymise

    secret = ds.settings.pseudonymisation_secret.get_secret_value()
    truth = pd.read_parquet(ds.raw.directory / "ground_truth.parquet")
    truth = truth[truth["duplicate_of"].isna()]
    truth["customer_id"] = [pseudonymise(r, secret) for r in truth["raw_customer_id"]]
    events = ds.clean("events")
    customers = ds.clean("customers").set_index("customer_id")
    products = ds.clean("products").set_index("product_id")
    end = events["ts"].max()
    purchases = events[events["type"] == "purchase"].copy()
    purchases["list_price"] = purchases["product_id"].map(products["price"])
    purchases["discounted"] = purchases["price"] < purchases["list_price"] * 0.97
    per_customer = pd.DataFrame(
        {
            "purchases": purchases.groupby("customer_id").size(),
            "mean_price": purchases.groupby("customer_id")["list_price"].mean(),
            "discount_share": purchases.groupby("customer_id")["discounted"].mean(),
            "days_since_last": (end - events.groupby("customer_id")["ts"].max()).dt.days,
        }
    )
    per_customer["tenure_days"] = (end - customers["signup_ts"]).dt.days
    joined = truth.set_index("customer_id").join(per_customer)
    joined["purchases"] = joined["purchases"].fillna(0)
    return joined.groupby("persona").median(numeric_only=True)


@pytest.mark.slow
def test_planted_personas_are_measurable(small: Dataset) -> None:
    stats = _persona_stats(small)
    assert stats["purchases"].idxmax() == "loyal_high_value"
    assert stats["mean_price"].idxmax() == "loyal_high_value"
    assert stats["mean_price"].idxmin() == "bargain_hunter"
    assert stats["discount_share"].idxmax() == "bargain_hunter"
    assert stats.loc["lapsed", "days_since_last"] > 150
    assert stats.drop(index="lapsed")["days_since_last"].max() < 150
    assert stats["tenure_days"].idxmin() == "new"
    assert stats.loc["new", "tenure_days"] < 60


@pytest.mark.slow
def test_trend_followers_buy_new_launches(small: Dataset) -> None:
    from segrec.pseudonym import pseudonymise

    secret = small.settings.pseudonymisation_secret.get_secret_value()
    truth = pd.read_parquet(small.raw.directory / "ground_truth.parquet")
    launches = pd.read_parquet(small.raw.directory / "ground_truth_products.parquet")
    persona = pd.Series(
        truth["persona"].to_numpy(),
        index=[pseudonymise(r, secret) for r in truth["raw_customer_id"]],
    )
    views = small.clean("events").query("type == 'view'")
    launch = views["product_id"].map(launches.set_index("product_id")["launch_ts"])
    fresh = (views["ts"] - launch).dt.days.between(0, 45)
    share = fresh.groupby(views["customer_id"].map(persona)).mean()
    assert share.idxmax() == "trend_follower"
    assert share["trend_follower"] > 2 * np.median(share.to_numpy())


def test_history_spans_more_than_a_year(tiny: Dataset) -> None:
    ts = tiny.clean("events")["ts"]
    assert (ts.max() - ts.min()).days >= 365
