"""Feast for real: a temporary repo copy applied and materialised into SQLite and Redis."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from feast import FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from segrec.feature_store import load_definitions, open_store
from segrec.live_session import (
    SESSION_FIELDS,
    SESSION_PUSH_SOURCE,
    SESSION_VIEW,
    LiveEvent,
    LiveSessionWriter,
    SessionState,
    from_stored,
    session_frame,
)
from segrec.online_features import FeatureVector, OnlineFeatureReader
from segrec.settings import Settings
from serving.feature_budget import BudgetedFeatureSource
from tests.conftest import Dataset, feast_workspace, make_settings
from training.features.build import build_features
from training.features.history import historical_features
from training.features.local_redis import free_port, redis_server
from training.features.materialize import apply_and_materialise

pytestmark = pytest.mark.integration


@dataclass
class FeastSetup:
    settings: Settings
    store: Any
    customers: pd.DataFrame  # the customer feature snapshots
    newest: pd.Timestamp

    def reader(self, clock: dt.datetime | None = None) -> OnlineFeatureReader:
        now = clock or self.newest.to_pydatetime()
        return OnlineFeatureReader(
            self.store, "customer_serving_v1", "customer_id", clock=lambda: now
        )


def _setup(root: Path, tiny: Dataset, **overrides: Any) -> FeastSetup:
    settings = feast_workspace(root, tiny, **overrides)
    build_features(settings, progress=False)
    result = apply_and_materialise(settings)
    assert result.materialised["customer_profile"] == 400
    assert result.skipped["customer_session"].startswith("live")
    customers = pd.read_parquet(settings.features_dir / "customer_features.parquet")
    return FeastSetup(settings, open_store(settings), customers, customers["event_timestamp"].max())


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def feast(
    request: pytest.FixtureRequest, tiny: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FeastSetup]:
    root = tmp_path_factory.mktemp(f"feast-{request.param}")
    if request.param == "sqlite":
        yield _setup(root, tiny)
        return
    with redis_server(root) as address:
        yield _setup(root, tiny, online_store="redis", redis_url=address)


def _newest_row(feast: FeastSetup, customer_id: str) -> pd.Series:
    rows = feast.customers[feast.customers["customer_id"] == customer_id]
    return rows.sort_values("event_timestamp").iloc[-1]


def test_online_read_is_the_newest_snapshot(feast: FeastSetup) -> None:
    reader = feast.reader()
    sample = feast.customers["customer_id"].drop_duplicates().sample(5, random_state=1)
    for customer_id, vector in zip(sample, reader.read_many(list(sample)), strict=True):
        expected = _newest_row(feast, customer_id)
        assert vector.complete or vector.missing == [
            m for m in vector.missing if m.startswith("customer_session:")
        ]
        for name in ("frequency", "rfm_cell", "views_90d", "gender", "country"):
            assert vector.values[name] == expected[name], name
        assert vector.values["tenure_days"] == pytest.approx(expected["tenure_days"])
        np.testing.assert_allclose(
            vector.values["category_shares"], expected["category_shares"], rtol=1e-6
        )


def test_the_reader_returns_what_feast_get_online_features_returns(feast: FeastSetup) -> None:
    reader = feast.reader()
    sample = [*feast.customers["customer_id"].drop_duplicates().iloc[:4], "c_ffffffffffffffff"]
    expected = feast.store.get_online_features(
        features=reader.service, entity_rows=[{"customer_id": c} for c in sample]
    ).to_dict()
    for i, vector in enumerate(reader.read_many(sample)):
        defaulted = {m.split(":", 1)[1] for m in vector.missing}
        for name, value in vector.values.items():
            if name in defaulted:
                assert expected[name][i] is None, name
            elif value == value:  # NaN: a null Feast value read as "unknown"
                assert value == pytest.approx(expected[name][i]), name


def test_unknown_customer_gets_defaults_and_a_flag(feast: FeastSetup) -> None:
    vector = feast.reader().read("c_ffffffffffffffff")
    assert not vector.complete and vector.error is None
    assert "customer_behaviour:frequency" in vector.missing
    assert vector.values["frequency"] == 0
    assert np.isnan(vector.values["recency_days"])
    assert vector.values["gender"] == "unknown"
    assert vector.values["consent_personalisation"] is False
    assert vector.values["category_shares"] == []


def test_features_older_than_their_ttl_count_as_missing(feast: FeastSetup) -> None:
    customer_id = feast.customers["customer_id"].iloc[0]
    later = feast.newest.to_pydatetime() + dt.timedelta(days=91)
    vector = feast.reader(clock=later).read(customer_id)
    assert vector.stale_views == ["customer_behaviour"], "behaviour ttl 90d, profile 730d"
    assert vector.values["frequency"] == 0 and "customer_behaviour:frequency" in vector.missing
    assert vector.values["country"] == _newest_row(feast, customer_id)["country"]


def test_the_session_push_source_feeds_exactly_the_view_events_are_written_to(
    feast: FeastSetup,
) -> None:
    # LiveSessionWriter writes to SESSION_VIEW directly rather than through Feast's push();
    # a second view on the push source would silently miss the live sessions.
    fed = [
        name
        for name, obj in load_definitions(feast.settings).items()
        if isinstance(obj, FeatureView)
        and obj.stream_source is not None
        and obj.stream_source.name == SESSION_PUSH_SOURCE
    ]
    assert fed == [SESSION_VIEW]


def test_the_session_writer_stores_what_feasts_own_write_stores(feast: FeastSetup) -> None:
    view = feast.store.get_feature_view(SESSION_VIEW)
    provider = feast.store._get_provider()
    # Customers the other tests of this module leave alone (their store is shared).
    ids = feast.customers["customer_id"].drop_duplicates().iloc[-6:-2].tolist()

    def stored(customers: list[str]) -> list[tuple[Any, dict[str, bytes]]]:
        keys = [
            EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=c)])
            for c in customers
        ]
        rows = provider.online_read(feast.store.config, view, keys)
        return [(ts, {k: v.SerializeToString() for k, v in (vs or {}).items()}) for ts, vs in rows]

    sessions = [
        SessionState(
            "s-1",
            session_views=3,
            session_carts=1,
            cart_value=12.5,
            last_event_unix=1_700_000_123,
            viewed_items=("P1", "P2"),
            carted_items=("P2",),
            categories_touched=("shoes", "bags"),
        ),
        SessionState("s-2", session_views=1, last_event_unix=1_700_000_456),  # empty lists
    ]
    # The same sessions for two customers through Feast's write, two through ours.
    by_feast = dict(zip(ids[:2], sessions, strict=True))
    by_writer = dict(zip(ids[2:], sessions, strict=True))
    feast.store.write_to_online_store(SESSION_VIEW, session_frame(by_feast.items()))
    LiveSessionWriter(feast.store, {}, dt.timedelta(minutes=30)).push(by_writer)
    assert stored(ids[2:]) == stored(ids[:2])
    assert [len(values) for _, values in stored(ids[2:])] == [len(SESSION_FIELDS)] * 2
    # Read back as Feast's get_online_features returns them, a customer without a session
    # included.
    customers = [*ids, "c_never_seen"]
    writer = LiveSessionWriter(feast.store, {}, dt.timedelta(minutes=30))
    feasts = feast.store.get_online_features(
        features=[f"{SESSION_VIEW}:{name}" for name in SESSION_FIELDS],
        entity_rows=[{"customer_id": c} for c in customers],
    ).to_dict()
    expected = {
        c: from_stored({name: feasts[name][i] for name in SESSION_FIELDS})
        for i, c in enumerate(customers)
    }
    assert writer.current(customers) == expected
    assert expected[ids[0]] == expected[ids[2]] == sessions[0]
    assert expected["c_never_seen"] is None


def test_batches_within_one_second_or_late_all_reach_the_session(feast: FeastSetup) -> None:
    # Redis keeps a write only when it is newer than the stored row, and sessions are
    # stamped with whole-second event times.
    customer = feast.customers["customer_id"].drop_duplicates().iloc[-1]
    writer = LiveSessionWriter(feast.store, {}, dt.timedelta(minutes=30))
    now = feast.newest.to_pydatetime().replace(microsecond=100_000)
    for offset, product in ((0.0, "P1"), (0.3, "P2"), (-4.0, "P3")):  # the last one late
        when = now + dt.timedelta(seconds=offset)
        writer.apply([LiveEvent(customer, product, "view", when, session_id="s-fast")])
    session = writer.current([customer])[customer]
    assert session is not None and session.session_views == 3
    assert set(session.viewed_items) == {"P1", "P2", "P3"}


def test_pushed_events_show_in_the_next_read(feast: FeastSetup) -> None:
    products = pd.read_parquet(feast.settings.clean_dir / "products.parquet")
    categories = dict(zip(products["product_id"], products["category"], strict=True))
    first, second = products["product_id"].iloc[0], products["product_id"].iloc[1]
    customer_id = feast.customers["customer_id"].iloc[3]
    now = feast.newest.to_pydatetime()
    writer = LiveSessionWriter(feast.store, categories, dt.timedelta(minutes=30))
    writer.apply(
        [
            LiveEvent(customer_id, first, "view", now, session_id="s-live"),
            LiveEvent(
                customer_id, second, "view", now + dt.timedelta(seconds=5), session_id="s-live"
            ),
            LiveEvent(
                customer_id,
                second,
                "add_to_cart",
                now + dt.timedelta(seconds=9),
                quantity=2,
                price=4.5,
                session_id="s-live",
            ),
        ]
    )
    vector = feast.reader(clock=now + dt.timedelta(minutes=1)).read(customer_id)
    assert vector.complete, vector.missing
    assert vector.values["session_views"] == 2 and vector.values["session_carts"] == 1
    assert vector.values["viewed_items"] == [second, first]
    assert vector.values["carted_items"] == [second]
    assert vector.values["cart_value"] == pytest.approx(9.0)
    assert vector.values["categories_touched"][0] == categories[second]
    # A later event in the same session builds on what the store holds.
    writer.apply(
        [
            LiveEvent(
                customer_id,
                second,
                "purchase",
                now + dt.timedelta(seconds=30),
                quantity=2,
                price=4.5,
                session_id="s-live",
            )
        ]
    )
    vector = feast.reader(clock=now + dt.timedelta(minutes=1)).read(customer_id)
    assert vector.values["carted_items"] == [] and vector.values["cart_value"] == 0.0
    assert vector.values["session_views"] == 2
    # Two hours later the session has expired (view ttl) and reads as missing.
    expired = feast.reader(clock=now + dt.timedelta(hours=3)).read(customer_id)
    assert "customer_session" in expired.stale_views
    assert expired.values["session_views"] == 0


def test_historical_features_are_point_in_time(feast: FeastSetup) -> None:
    snapshots = sorted(feast.customers["event_timestamp"].unique())
    counts = feast.customers.groupby("customer_id")["frequency"].nunique()
    customer_id = counts.idxmax()
    assert counts.max() > 1, "someone's features changed between snapshots"
    asked = [snapshots[0] - pd.Timedelta(days=1)] + [s + pd.Timedelta(hours=1) for s in snapshots]
    entity_df = pd.DataFrame({"customer_id": customer_id, "event_timestamp": asked})
    result = historical_features(feast.store, entity_df)
    assert len(result) == len(asked), "no row may be dropped"
    assert np.isnan(result["frequency"].iloc[0]), "before the first snapshot nothing is known"
    history = feast.customers[feast.customers["customer_id"] == customer_id].set_index(
        "event_timestamp"
    )["frequency"]
    expected = [history.loc[s] for s in snapshots]
    assert result["frequency"].iloc[1:].astype(int).tolist() == expected
    assert len(set(expected)) > 1


def test_unreachable_store_is_a_flag_not_an_exception(tmp_path: Path, tiny: Dataset) -> None:
    feast = _setup(tmp_path, tiny)
    broken = make_settings(
        tmp_path,
        feast_repo=feast.settings.feast_repo,
        online_store="redis",
        redis_url=f"127.0.0.1:{free_port()}",
    )
    reader = OnlineFeatureReader(open_store(broken), "customer_serving_v1", "customer_id")
    vector = reader.read(feast.customers["customer_id"].iloc[0])
    assert vector.error is not None and "Connection" in vector.error
    assert vector.values["frequency"] == 0 and not vector.complete


# ---- the direct SQLite read: the same vectors as the provider and as Feast ------------


def _provider_reader(reader: OnlineFeatureReader) -> OnlineFeatureReader:
    """The same reader through the provider's ``online_read``, one call per view."""
    slow = copy.copy(reader)
    slow._sqlite = slow._redis = None
    return slow


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type, NaN equal to NaN (also inside lists)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _assert_same_vectors(got: Sequence[FeatureVector], expected: Sequence[FeatureVector]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a.entity_id, a.missing, a.stale_views, a.error) == (
            b.entity_id,
            b.missing,
            b.stale_views,
            b.error,
        )
        assert list(a.values) == list(b.values), a.entity_id
        for name, value in a.values.items():
            assert _same(value, b.values[name]), (a.entity_id, name, value, b.values[name])


def _assert_as_feast_says(
    store: Any, reader: OnlineFeatureReader, ids: list[str], vectors: list[FeatureVector]
) -> None:
    """Every value is Feast's own (get_online_features), a null read as the default, or
    defaulted and named in ``missing`` (absent, or stale: Feast ignores ttl)."""
    expected = store.get_online_features(
        features=reader.service, entity_rows=[{"customer_id": c} for c in ids]
    ).to_dict()
    views = {short: (view, default) for view, short, default, _ in reader.features.values()}
    for i, vector in enumerate(vectors):
        assert vector.error is None
        for name, value in vector.values.items():
            view, default = views[name]
            feast_value = expected[name][i]
            if f"{view}:{name}" in vector.missing:
                assert feast_value is None or view in vector.stale_views, (name, feast_value)
                assert _same(value, default)
            elif feast_value is None:  # present but null
                assert _same(value, default), name
            else:
                assert _same(value, feast_value), (vector.entity_id, name)


def test_the_one_call_read_is_chosen_by_the_online_store_type(feast: FeastSetup) -> None:
    reader = feast.reader()
    assert (reader._sqlite is not None) == (feast.settings.online_store == "sqlite")
    assert (reader._redis is not None) == (feast.settings.online_store == "redis")


def test_the_reader_returns_exactly_what_feast_returns(feast: FeastSetup) -> None:
    ids = [*feast.customers["customer_id"].drop_duplicates().iloc[:40], "c_ffffffffffffffff"]
    for later in (dt.timedelta(0), dt.timedelta(days=91)):
        reader = feast.reader(clock=feast.newest.to_pydatetime() + later)
        vectors = reader.read_many(ids)
        assert any(v.stale_views for v in vectors) == bool(later)
        _assert_as_feast_says(feast.store, reader, ids, vectors)
        _assert_same_vectors(vectors, _provider_reader(reader).read_many(ids))


def _entity_key(customer_id: str) -> EntityKey:
    return EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)])


@pytest.fixture
def sqlite_copy(feast: FeastSetup, tmp_path: Path) -> FeastSetup:
    """A private copy of the SQLite registry and online store, to write to."""
    if feast.settings.online_store != "sqlite":
        pytest.skip("the direct read is SQLite's")
    state = tmp_path / "feast"
    shutil.copytree(feast.settings.feast_dir, state)
    settings = feast.settings.model_copy(update={"feast_state_dir": state})
    return FeastSetup(settings, open_store(settings), feast.customers, feast.newest)


def test_the_direct_sqlite_read_equals_the_provider_and_feast(sqlite_copy: FeastSetup) -> None:
    feast = sqlite_copy
    ids = feast.customers["customer_id"].drop_duplicates().tolist()
    now = feast.newest.to_pydatetime()
    products = pd.read_parquet(feast.settings.clean_dir / "products.parquet")
    categories = dict(zip(products["product_id"], products["category"], strict=True))
    # A live session (string lists, a view only some customers have).
    writer = LiveSessionWriter(feast.store, categories, dt.timedelta(minutes=30))
    product = products["product_id"].iloc[0]
    writer.apply([LiveEvent(ids[3], product, "add_to_cart", now, quantity=1, price=2.0)])
    provider, config = feast.store._get_provider(), feast.store.config
    behaviour = feast.store.get_feature_view("customer_behaviour")
    profile = feast.store.get_feature_view("customer_profile")
    # A customer only in customer_behaviour, with a null and an empty list.
    provider.online_write_batch(
        config,
        behaviour,
        [
            (
                _entity_key("c_0000000000000001"),
                {
                    "frequency": Value(int64_val=3),
                    "recency_days": Value(),
                    "category_shares": Value(),
                },
                now,
                None,
            )
        ],
        None,
    )
    # Rows of one customer written at different times: an existing feature rewritten
    # later, and (last, so the newest-written row) a feature the view no longer has, two
    # years old -- Feast dates the customer's profile by that row, so it reads as stale.
    provider.online_write_batch(
        config,
        profile,
        [(_entity_key(ids[5]), {"country": Value(string_val="XX")}, now, None)],
        None,
    )
    provider.online_write_batch(
        config,
        profile,
        [
            (
                _entity_key(ids[6]),
                {"retired": Value(int64_val=1)},
                now - dt.timedelta(days=800),
                None,
            )
        ],
        None,
    )
    edges = ["c_ffffffffffffffff", "c_0000000000000001", ids[3], ids[5], ids[6], ids[3]]
    for later in (dt.timedelta(minutes=1), dt.timedelta(hours=3), dt.timedelta(days=91)):
        reader = feast.reader(clock=now + later)
        assert reader._sqlite is not None
        slow = _provider_reader(reader)
        every = [*ids, *edges]
        _assert_same_vectors(reader.read_many(every), slow.read_many(every))
        for size in (1, 7):
            for start in range(0, 30, size):
                batch = [*ids[start : start + size], *edges[: size - 1]]
                _assert_same_vectors(reader.read_many(batch), slow.read_many(batch))
        _assert_as_feast_says(feast.store, reader, edges, reader.read_many(edges))
    vectors = dict(zip(edges, feast.reader(clock=now).read_many(edges), strict=False))
    assert vectors[ids[3]].values["carted_items"] == [product]
    assert vectors[ids[3]].values["cart_value"] == pytest.approx(2.0)
    only_behaviour = vectors["c_0000000000000001"]
    assert only_behaviour.values["frequency"] == 3 and np.isnan(
        only_behaviour.values["recency_days"]
    )
    assert "customer_behaviour:recency_days" not in only_behaviour.missing
    assert "customer_profile:country" in only_behaviour.missing
    assert vectors[ids[5]].values["country"] == "XX"
    assert vectors[ids[6]].stale_views == ["customer_profile"]


def test_reads_while_a_materialisation_rewrites_the_store(sqlite_copy: FeastSetup) -> None:
    reader = sqlite_copy.reader()
    sample = sqlite_copy.customers["customer_id"].drop_duplicates().iloc[:20].tolist()
    expected = reader.read_many(sample)
    assert all(v.error is None for v in expected)
    results: list[list[FeatureVector]] = []
    raised: list[BaseException] = []
    stop = threading.Event()

    def keep_reading() -> None:
        while not stop.is_set():
            try:
                results.append(reader.read_many(sample))
            except BaseException as error:  # the point: nothing may escape
                raised.append(error)

    thread = threading.Thread(target=keep_reading)
    thread.start()
    try:
        apply_and_materialise(sqlite_copy.settings)  # the same snapshot, written again
    finally:
        stop.set()
        thread.join()
    assert not raised and results
    for vectors in results:
        for got, want in zip(vectors, expected, strict=True):
            if got.error is None:
                _assert_same_vectors([got], [want])
            else:
                assert "locked" in got.error and not got.complete
    _assert_same_vectors(reader.read_many(sample), expected)


def test_a_replaced_or_removed_store_file_is_noticed(
    sqlite_copy: FeastSetup, tmp_path: Path
) -> None:
    reader = sqlite_copy.reader()
    customer_id = sqlite_copy.customers["customer_id"].iloc[0]
    assert reader.read(customer_id).values["country"] != "XX"
    # A new store file with another country, moved over the one being read.
    other_state = tmp_path / "other"
    shutil.copytree(sqlite_copy.settings.feast_dir, other_state)
    other = open_store(sqlite_copy.settings.model_copy(update={"feast_state_dir": other_state}))
    other._get_provider().online_write_batch(
        other.config,
        other.get_feature_view("customer_profile"),
        [
            (
                _entity_key(customer_id),
                {"country": Value(string_val="XX")},
                sqlite_copy.newest.to_pydatetime(),
                None,
            )
        ],
        None,
    )
    online = sqlite_copy.settings.feast_dir / "online.db"
    os.replace(other_state / "online.db", online)
    vector = reader.read(customer_id)
    assert vector.error is None and vector.values["country"] == "XX"
    online.unlink()
    gone = reader.read(customer_id)
    assert gone.error is not None and not gone.complete
    assert gone.values["frequency"] == 0


def test_a_locked_store_gives_an_error_vector_at_once(sqlite_copy: FeastSetup) -> None:
    reader = sqlite_copy.reader()
    customer_id = sqlite_copy.customers["customer_id"].iloc[0]
    assert reader.read(customer_id).error is None
    holder = sqlite3.connect(sqlite_copy.settings.feast_dir / "online.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what a writer holds while it commits
    try:
        started = time.perf_counter()
        vector = reader.read(customer_id)
        seconds = time.perf_counter() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert vector.error is not None and "locked" in vector.error
    assert not vector.complete and vector.values == reader.defaults()
    assert seconds < 1.0, "a lock costs the busy timeout, not Feast's 5 s"
    assert reader.read(customer_id).error is None


def test_a_read_that_must_not_wait_is_inline_and_steps_aside_for_a_lock(
    sqlite_copy: FeastSetup,
) -> None:
    """The event loop reads a free SQLite store itself (the hop to the reader pool cost
    more than the read); a locked store makes it step aside at once, to the pool's
    budgeted read, without changing what comes back."""
    reader = sqlite_copy.reader()
    ids = [*sqlite_copy.customers["customer_id"].drop_duplicates().tolist()[:3], "c_nobody"]
    now = reader.read_many_now(ids)
    assert now is not None
    assert [(v.values, v.missing, v.error) for v in now] == [
        (v.values, v.missing, v.error) for v in reader.read_many(ids)
    ]
    budgeted = BudgetedFeatureSource(reader, timeout_ms=1000)
    try:
        assert [v.values for v in asyncio.run(budgeted.read_many_async(ids))] == [
            v.values for v in now
        ]
        assert not budgeted._pool._threads, "a free store is read without the pool"
        holder = sqlite3.connect(sqlite_copy.settings.feast_dir / "online.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            started = time.perf_counter()
            assert reader.read_many_now(ids) is None
            stepped_aside = time.perf_counter() - started
            locked = asyncio.run(budgeted.read_many_async(ids))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert stepped_aside < reader._sqlite.busy_timeout, "no wait for the lock"
        assert budgeted._pool._threads, "a locked store is read off the loop"
        assert all(v.error is not None and "locked" in v.error for v in locked)
        again = reader.read_many_now(ids)
        assert again is not None and [v.values for v in again] == [v.values for v in now]
    finally:
        budgeted.close()
