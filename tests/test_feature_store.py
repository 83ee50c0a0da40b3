"""Feast for real: a temporary repo copy applied and materialised into SQLite and Redis."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from segrec.feature_store import open_store
from segrec.live_session import LiveEvent, LiveSessionWriter
from segrec.online_features import OnlineFeatureReader
from segrec.settings import Settings
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
