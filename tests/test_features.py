"""Feature computation on a hand-written shop whose answers are worked out by hand."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from segrec.event_log import EventLog
from segrec.feature_store import load_definitions
from segrec.live_session import (
    SESSION_FIELDS,
    SESSION_VIEW,
    LiveEvent,
    LiveSessionWriter,
    stored_values,
)
from segrec.settings import Settings
from segrec.suppression import SuppressionList
from tests.conftest import Dataset, feast_workspace
from training.data.tables import write_table
from training.features.build import build_features
from training.features.customer import customer_features
from training.features.inputs import load_inputs
from training.features.materialize import apply_definitions
from training.features.product import product_features
from training.features.sessions import SESSION_FILE

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
                "launch_ts": [pd.NaT] * 3,
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
                "launch_ts": [pd.NaT] * 2,
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


# ---- the live sessions' offline copy ----------------------------------------------------
@dataclass
class SessionStore:
    settings: Settings
    store: Any
    categories: dict[str, str]


@pytest.fixture(scope="module")
def session_store(tiny: Dataset, tmp_path_factory: pytest.TempPathFactory) -> SessionStore:
    """The tiny storefront's features built with no live events yet, Feast applied."""
    settings = feast_workspace(tmp_path_factory.mktemp("sessions"), tiny)
    build_features(settings, progress=False)
    store, _ = apply_definitions(settings)
    products = pd.read_parquet(settings.clean_dir / "products.parquet")
    categories = dict(zip(products["product_id"], products["category"], strict=True))
    return SessionStore(settings, store, categories)


def _offline_sessions(store: Any, rows: list[tuple[str, pd.Timestamp]]) -> pd.DataFrame:
    """The customer_session view as of each (customer, time), through Feast's offline store."""
    entity_df = pd.DataFrame(
        {"customer_id": [c for c, _ in rows], "event_timestamp": [t for _, t in rows]}
    )
    features = [f"{SESSION_VIEW}:{name}" for name in SESSION_FIELDS]
    found = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    return entity_df.merge(found, on=["customer_id", "event_timestamp"], how="left")


def _plain(value: Any) -> Any:
    """A value as Python compares it: arrays and lists as lists, missing as None."""
    if isinstance(value, np.ndarray | list | tuple):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


@pytest.mark.integration
def test_an_empty_event_log_gives_an_empty_session_file_feast_reads(
    session_store: SessionStore,
) -> None:
    import pyarrow.parquet as pq

    settings = session_store.settings
    path = settings.features_dir / SESSION_FILE
    assert pq.read_metadata(path).num_rows == 0
    schema = pq.read_schema(path)
    view = load_definitions(settings)[SESSION_VIEW]
    assert schema.names == ["customer_id", *(f.name for f in view.features), "event_timestamp"]
    # Arrow types the view's Feast types stand for.
    kinds = {"String": "string", "Int64": "int64", "Float64": "double"}
    for field in view.features:
        name = str(field.dtype).removeprefix("Array(").removesuffix(")")
        expected = kinds[name]
        arrow = str(schema.field(field.name).type)
        assert arrow == (f"list<element: {expected}>" if "Array" in str(field.dtype) else expected)
    found = _offline_sessions(session_store.store, [("c_000000000000000a", _ts("2026-11-01"))])
    assert len(found) == 1 and found["session_id"].isna().all()


@pytest.mark.integration
def test_offline_sessions_equal_what_post_events_pushed_online(
    session_store: SessionStore,
) -> None:
    """Batches as ``POST /events`` handles them (logged durably, then folded into the
    online sessions); ``make features`` replays the log, and Feast's offline read of the
    view at each batch's time equals the online session right after that batch."""
    settings, store = session_store.settings, session_store.store
    products = sorted(session_store.categories)
    p1, p2, p3, p4 = products[:4]
    a, b, erased = "c_00000000000000a1", "c_00000000000000b2", "c_00000000000000e3"
    SuppressionList(settings.suppression_file).add(erased)
    start = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)

    def at(minutes: float) -> dt.datetime:
        return start + dt.timedelta(minutes=minutes)

    ids = itertools.count()

    def event(customer: str, product: str, kind: str, minutes: float, **extra: Any) -> LiveEvent:
        return LiveEvent(customer, product, kind, at(minutes), event_id=f"e{next(ids)}", **extra)

    batches = [
        [
            event(a, p1, "view", 0, session_id="s1"),
            event(a, p2, "add_to_cart", 1, quantity=2, price=3.5, session_id="s1"),
            event(a, p3, "add_to_cart", 1.5, price=10.0, session_id="s1"),
            event(b, p3, "view", 0.5),
            event(erased, p1, "view", 0.5),
        ],
        # The online store keeps the cart's value, not its lines: the next batch spreads
        # 17.0 over p2 and p3, so removing p2 leaves 8.5 (not p3's 10.0). The offline copy
        # must say what serving said.
        [
            event(a, p2, "remove_from_cart", 5, session_id="s1"),
            event(b, p3, "purchase", 3, quantity=1, price=7.25),
            event(b, p4, "rating", 2, value=4.0),  # logged out of time order
        ],
        [event(b, p1, "view", 7, session_id="s-new")],
        # Past the 30-minute timeout: a new session.
        [event(a, p4, "view", 50), event(a, p1, "add_to_cart", 51, price=2.0)],
    ]
    writer = LiveSessionWriter(store, session_store.categories, dt.timedelta(minutes=30))
    log = EventLog(settings.event_log_dir, writer_id="pod-a")
    online: list[tuple[str, pd.Timestamp, dict[str, Any]]] = []
    for batch in batches:
        received = max(e.ts for e in batch) + dt.timedelta(seconds=1)
        log.append(batch, received)  # the service logs first, then folds
        pushed = writer.apply(batch)
        now = writer.current(sorted(pushed))
        for customer, state in now.items():
            assert state is not None
            online.append((customer, pd.Timestamp(received), stored_values(state)))
    log.close()

    built = build_features(settings, progress=False)

    assert built.sessions.batches == 4 and built.sessions.events == 11
    assert built.sessions.withheld_events == 1
    rows = pd.read_parquet(built.sessions.path)
    assert erased not in set(rows["customer_id"])
    kept = [(c, t, v) for c, t, v in online if c != erased]
    assert len(rows) == len(kept)  # one row per customer per batch
    found = _offline_sessions(store, [(c, t) for c, t, _ in kept])
    for (customer, when, expected), (_, row) in zip(kept, found.iterrows(), strict=True):
        got = {name: _plain(row[name]) for name in SESSION_FIELDS}
        want = {name: _plain(value) for name, value in expected.items()}
        assert got == want, (customer, when)
    # Across batches as the online store does it; the timeout started a new session
    # (which keeps its id: the events name none).
    a_rows = rows[rows["customer_id"] == a]
    assert a_rows["cart_value"].tolist() == [17.0, 8.5, 2.0]
    assert a_rows["session_carts"].tolist() == [2, 2, 1]
    assert a_rows["session_views"].tolist() == [1, 1, 1]
    assert set(a_rows["session_id"]) == {"s1"}
    # Before the first event nothing; past the 2-hour ttl nothing either.
    early = _offline_sessions(store, [(a, pd.Timestamp(at(-1))), (a, pd.Timestamp(at(200)))])
    assert early["session_id"].isna().all()


def test_the_log_replays_batch_by_batch_in_the_order_received(tmp_path: Path) -> None:
    """Two writers' files interleave by ``received_at``; bad lines are counted, not fatal;
    a batch's events fold in time order, and the next batch starts from the session as
    the online store gives it back (cart value spread over the carted items)."""
    from segrec.event_log import read_event_log
    from training.features.sessions import logged_batches, replay_sessions

    t = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)
    c = "c_000000000000000a"
    first, second = EventLog(tmp_path, "pod-b"), EventLog(tmp_path, "pod-a")
    first.append(
        [
            LiveEvent(c, "p2", "add_to_cart", t + dt.timedelta(seconds=5), 2, 3.0, event_id="2"),
            LiveEvent(c, "p1", "view", t, event_id="1"),
            LiveEvent(c, "p3", "add_to_cart", t + dt.timedelta(seconds=6), 1, 1.0, event_id="3"),
        ],
        t + dt.timedelta(seconds=7),
    )
    second.append(
        [LiveEvent(c, "p2", "remove_from_cart", t + dt.timedelta(seconds=70), event_id="4")],
        t + dt.timedelta(seconds=71),
    )
    first.close()
    second.close()
    (tmp_path / "events-20261101-pod-c.jsonl").write_text('{"bad": 1}\nnot json\n{"cut')
    batches, bad = logged_batches(read_event_log(tmp_path))
    assert bad == 3
    assert [[e.event_id for e in b.events] for b in batches] == [["2", "1", "3"], ["4"]]
    rows = replay_sessions([b.events for b in batches], {"p1": "tea"}, dt.timedelta(minutes=30))
    assert rows["carted_items"].map(list).tolist() == [["p3", "p2"], ["p3"]]
    # 7.0 over two items is 3.5 each once stored: removing p2 leaves 3.5, not p3's 1.0.
    assert rows["cart_value"].tolist() == [7.0, 3.5]
    assert rows["session_views"].tolist() == [1, 1]
    assert rows["event_timestamp"].tolist() == [
        pd.Timestamp(t + dt.timedelta(seconds=6)),
        pd.Timestamp(t + dt.timedelta(seconds=70)),
    ]
    assert replay_sessions([b.events for b in batches], {}, dt.timedelta(minutes=30), {c}).empty
