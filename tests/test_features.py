"""Feature computation on a hand-written shop whose answers are worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import Dataset
from training.data.tables import write_table
from training.features.customer import customer_features
from training.features.inputs import load_inputs
from training.features.product import product_features

UTC = "UTC"


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """Two customers, three products; customer A buys on Jan 10, Feb 9 and Mar 11."""
    write_table(
        tmp_path,
        "customers",
        pd.DataFrame(
            {
                "customer_id": ["c_000000000000000a", "c_000000000000000b"],
                "signup_ts": [_ts("2025-12-01"), _ts("2026-02-20")],
                "birth_year": pd.array([1980, None], dtype="Int64"),
                "gender": ["F", "U"],
                "country": ["GB", "GB"],
                "city": ["Leeds", "Leeds"],
                "postcode_area": ["LS1", None],
                "occupation": [None, None],
                "consent_personalisation": [True, False],
                "consent_marketing": [True, False],
                "merged_records": [1, 1],
                "imputed_columns": ["", "birth_year"],
            }
        ),
    )
    write_table(
        tmp_path,
        "products",
        pd.DataFrame(
            {
                "product_id": ["p1", "p2", "p3"],
                "title": ["Tea", "Mug", "Kettle"],
                "description": ["", "", ""],
                "category": ["groceries", "kitchen", "kitchen"],
                "brand": ["x", "y", "y"],
                "price": [5.0, 10.0, 40.0],
                "price_outlier": [False] * 3,
                "in_stock": [True, True, False],
                "tags": [None] * 3,
                "imputed_columns": [""] * 3,
            }
        ),
    )
    rows = [
        # customer, product, ts, type, qty, price, value, session
        ("a", "p1", "2026-01-10 10:00", "view", 1, None, None, "s1"),
        ("a", "p1", "2026-01-10 10:01", "add_to_cart", 1, 5.0, None, "s1"),
        ("a", "p1", "2026-01-10 10:02", "purchase", 2, 5.0, 10.0, "s1"),
        ("a", "p2", "2026-02-09 10:00", "add_to_cart", 1, 10.0, None, "s2"),
        ("a", "p2", "2026-02-09 10:05", "purchase", 1, 8.0, 8.0, "s2"),
        ("a", "p3", "2026-03-01 09:00", "add_to_cart", 1, 40.0, None, "s3"),
        ("a", "p1", "2026-03-11 10:00", "purchase", 3, 5.0, 15.0, "s4"),
        ("b", "p2", "2026-03-05 12:00", "view", 1, None, None, "s5"),
        ("b", "p2", "2026-03-06 12:00", "rating", 1, None, 4.0, None),
    ]
    write_table(
        tmp_path,
        "events",
        pd.DataFrame(
            {
                "event_id": [f"e{i}" for i in range(len(rows))],
                "customer_id": [f"c_000000000000000{r[0]}" for r in rows],
                "product_id": [r[1] for r in rows],
                "ts": [_ts(r[2]) for r in rows],
                "type": [r[3] for r in rows],
                "quantity": [r[4] for r in rows],
                "price": [r[5] for r in rows],
                "value": [r[6] for r in rows],
                "session_id": [r[7] for r in rows],
                "price_outlier": [False] * len(rows),
                "quantity_outlier": [False] * len(rows),
            }
        ),
    )
    return tmp_path


def test_customer_features_only_see_the_past(shop: Path) -> None:
    inputs = load_inputs(shop)
    feb = customer_features(inputs, _ts("2026-02-15")).set_index("customer_id")
    assert list(feb.index) == ["c_000000000000000a"], "b had not signed up yet"
    a = feb.loc["c_000000000000000a"]
    assert a["frequency"] == 2
    assert a["monetary_total"] == pytest.approx(18.0)
    assert a["avg_order_value"] == pytest.approx(9.0)
    assert a["recency_days"] == pytest.approx(
        (_ts("2026-02-15") - _ts("2026-02-09 10:05")) / pd.Timedelta(days=1)
    )
    # Gap Jan 10 10:02 -> Feb 9 10:05 in days.
    assert a["purchase_gap_mean_days"] == pytest.approx(30 + 3 / 1440)
    assert a["discount_affinity"] == pytest.approx(0.5), "8.0 paid for a 10.0 mug"
    assert a["tenure_days"] == pytest.approx(76.0)
    assert a["age"] == 46


def test_customer_features_at_the_end(shop: Path) -> None:
    inputs = load_inputs(shop)
    end = customer_features(inputs, _ts("2026-04-01")).set_index("customer_id")
    a, b = end.loc["c_000000000000000a"], end.loc["c_000000000000000b"]
    assert a["frequency"] == 3 and a["monetary_total"] == pytest.approx(33.0)
    assert a["carts_90d"] == 3 and a["purchases_90d"] == 3 and a["sessions_90d"] == 4
    # Sessions with a cart: s1, s2 (bought) and s3 (abandoned).
    assert a["abandonment_rate_90d"] == pytest.approx(1 / 3)
    # Interaction weights: groceries = 1 + 2 + 4 + 4 = 11, kitchen = 2 + 4 + 2 = 8.
    shares = dict(zip(sorted(["groceries", "kitchen"]), a["category_shares"], strict=True))
    assert shares["groceries"] == pytest.approx(11 / 19)
    assert a["top_category"] == "groceries"
    assert b["frequency"] == 0 and np.isnan(b["recency_days"])
    assert b["rfm_cell"] == "000" and b["ratings"] == 1 and b["mean_rating"] == 4.0
    assert not b["consent_personalisation"]


def test_missed_visits_tell_an_occasional_shopper_from_one_who_stopped(
    tmp_path: Path,
) -> None:
    """Data from Jan 1; as of May 1 that is 120 days. ``a`` and ``b`` signed up before it.

    - a (occasional): 3 visits (Jan 1, Feb 10, Mar 22), the last 40 days ago: 40 * 3 / 120 = 1.0.
    - b (lapsed): 12 visits every 5 days from Jan 1 to Feb 25, the last 65 days ago: 65 * 12 / 120
      = 6.5. Similar recency to a, very different pace.
    - c (new): signed up Apr 21 (10 days), two events on Apr 26 (one visit day), the last at
      noon, 4.5 days ago: 4.5 * 1 / 10 = 0.45.
    - d: signed up, never seen: NaN, like days_since_last_event.
    """
    people = ["a", "b", "c", "d"]
    signup = [_ts("2025-06-01"), _ts("2025-06-01"), _ts("2026-04-21"), _ts("2026-02-01")]
    write_table(
        tmp_path,
        "customers",
        pd.DataFrame(
            {
                "customer_id": [f"c_000000000000000{c}" for c in people],
                "signup_ts": signup,
                "birth_year": pd.array([1980] * 4, dtype="Int64"),
                "gender": ["F"] * 4,
                "country": ["GB"] * 4,
                "city": ["Leeds"] * 4,
                "postcode_area": ["LS1"] * 4,
                "occupation": [None] * 4,
                "consent_personalisation": [True] * 4,
                "consent_marketing": [True] * 4,
                "merged_records": [1] * 4,
                "imputed_columns": [""] * 4,
            }
        ),
    )
    write_table(
        tmp_path,
        "products",
        pd.DataFrame(
            {
                "product_id": ["p1", "p2"],
                "title": ["Tea", "Mug"],
                "description": ["", ""],
                "category": ["groceries", "kitchen"],
                "brand": ["x", "y"],
                "price": [5.0, 10.0],
                "price_outlier": [False] * 2,
                "in_stock": [True] * 2,
                "tags": [None] * 2,
                "imputed_columns": [""] * 2,
            }
        ),
    )
    start = _ts("2026-01-01")
    visits = [("a", start + pd.Timedelta(days=d)) for d in (0, 40, 80)]
    visits += [("b", start + pd.Timedelta(days=d)) for d in range(0, 60, 5)]
    visits += [("c", _ts("2026-04-26 08:00")), ("c", _ts("2026-04-26 12:00"))]
    visits.sort(key=lambda v: v[1])
    write_table(
        tmp_path,
        "events",
        pd.DataFrame(
            {
                "event_id": [f"e{i}" for i in range(len(visits))],
                "customer_id": [f"c_000000000000000{c}" for c, _ in visits],
                "product_id": ["p1"] * len(visits),
                "ts": [t for _, t in visits],
                "type": ["view"] * len(visits),
                "quantity": [1] * len(visits),
                "price": [np.nan] * len(visits),
                "value": [np.nan] * len(visits),
                "session_id": [f"s{i}" for i in range(len(visits))],
                "price_outlier": [False] * len(visits),
                "quantity_outlier": [False] * len(visits),
            }
        ),
    )
    features = customer_features(load_inputs(tmp_path), _ts("2026-05-01"))
    missed = features.set_index("customer_id")["missed_visits"]
    assert missed["c_000000000000000a"] == pytest.approx(1.0)
    assert missed["c_000000000000000b"] == pytest.approx(6.5)
    assert missed["c_000000000000000c"] == pytest.approx(0.45)
    assert np.isnan(missed["c_000000000000000d"])


def test_product_features_windows(shop: Path) -> None:
    inputs = load_inputs(shop)
    p = product_features(inputs, _ts("2026-03-12")).set_index("product_id")
    assert p.loc["p1", "purchases_7d"] == 1 and p.loc["p1", "purchases_90d"] == 2
    assert p.loc["p2", "views_30d"] == 1 and p.loc["p2", "carts_90d"] == 1
    assert p.loc["p3", "purchases_90d"] == 0 and not p.loc["p3", "in_stock"]
    assert p.loc["p1", "distinct_buyers"] == 1
    assert p.loc["p1", "price_band"] == "low" and p.loc["p3", "price_band"] == "high"
    assert p.loc["p1", "trend_score"] > p.loc["p3", "trend_score"]


@pytest.mark.slow
def test_features_on_the_small_storefront_separate_personas(small: Dataset) -> None:
    inputs = load_inputs(small.settings.clean_dir)
    features = customer_features(inputs, inputs.end).set_index("customer_id")
    persona = small.personas()
    medians = features.groupby(persona.reindex(features.index)).median(numeric_only=True)
    assert medians["rfm_score"].idxmax() == "loyal_high_value"
    assert medians["discount_affinity"].idxmax() == "bargain_hunter"
    assert medians["price_band_high_share"].idxmax() == "loyal_high_value"
    assert medians.loc["lapsed", "days_since_last_event"] > 150
    # Lapsed customers missed many visits at their own pace; everyone else about one.
    assert medians.loc["lapsed", "missed_visits"] > 3
    assert medians.drop(index="lapsed")["missed_visits"].max() < 1.5
    assert medians["novelty_share"].idxmax() == "trend_follower"


@pytest.mark.parametrize(
    ("fmt", "source"),
    [
        ("online-retail", "online_retail.csv"),
        ("movielens", "ml-100k"),
        ("canonical", "canonical_full"),
    ],
)
def test_features_build_on_imported_exports(tmp_path: Path, fmt: str, source: str) -> None:
    from segrec.settings import DEVELOPMENT_SECRET
    from tests.conftest import make_settings
    from training.data.importers import import_export
    from training.data.pipeline import clean_dataset
    from training.data.quality import QualityReport
    from training.features.build import build_features

    settings = make_settings(tmp_path, feature_snapshots=3)
    report = QualityReport(settings.set_aside_dir, DEVELOPMENT_SECRET)
    fixtures = Path(__file__).parent / "fixtures" / "importers"
    raw = import_export(fmt, fixtures / source, settings.raw_dir / fmt, report, settings)
    clean_dataset(raw, settings, report)
    built = build_features(settings, progress=False)
    customers = pd.read_parquet(built.directory / "customer_features.parquet")
    products = pd.read_parquet(built.directory / "product_features.parquet")
    assert len(built.snapshots) == 3
    assert customers["customer_id"].nunique() == len(
        pd.read_parquet(settings.clean_dir / "customers.parquet")
    )
    assert len(products) == 3 * len(pd.read_parquet(settings.clean_dir / "products.parquet"))
    newest = customers[customers["event_timestamp"] == customers["event_timestamp"].max()]
    if fmt == "online-retail":
        assert (newest["frequency"] > 0).all(), "every imported customer bought something"
    if fmt == "movielens":
        assert (newest["ratings"] > 0).all()
