"""The request path on a real exported bundle and the real SQLite online store."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segrec.blend import COLD_START, NO_SEGMENT
from segrec.bundle import read_bundle
from segrec.feature_store import open_store
from segrec.live_session import LiveEvent, LiveSessionWriter
from segrec.online_features import OnlineFeatureReader
from segrec.settings import Settings
from serving.engine import RecommendationEngine
from tests.hand_trees import own_views_stump
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine(trained_small: tuple[Settings, TrainingRun]) -> RecommendationEngine:
    settings, run = trained_small
    assert run.export is not None
    store = open_store(settings)
    # The synthetic data ends on 2026-11-01: judge ttl against the data, not the wall clock.
    reader = OnlineFeatureReader(
        store,
        "customer_serving_v2",
        "customer_id",
        clock=lambda: dt.datetime(2026, 11, 5, tzinfo=dt.UTC),
    )
    return RecommendationEngine(
        read_bundle(Path(run.export.bundle_dir)), reader, clock=reader.clock
    )


def _segments(settings: Settings) -> pd.DataFrame:
    return pd.read_parquet(settings.features_dir / "customer_segments.parquet")


def test_a_known_customer_gets_a_personal_explained_carousel(
    engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    settings, _ = trained_small
    row = _segments(settings).iloc[0]
    answer = engine.recommend(row["customer_id"], k=10)
    assert answer.fallback is None, answer.missing_features
    assert answer.segment is not None and answer.segment["id"] == row["segment_id"]
    assert answer.segment["name"] == row["segment_name"]
    assert answer.lifecycle_stage == row["lifecycle_stage"]
    assert len(answer.items) == 10
    scores = [item["score"] for item in answer.items]
    assert scores == sorted(scores, reverse=True)
    for item in answer.items:
        assert sum(item["contributions"].values()) == pytest.approx(item["score"], abs=1e-5)
    categories = pd.Series(
        [engine.category[engine.index_of[i["product_id"]]] for i in answer.items]
    )
    assert categories.value_counts().max() <= engine.rules.max_per_category
    in_stock = engine.rules.in_stock[[engine.index_of[i["product_id"]] for i in answer.items]]
    assert in_stock.all()


def test_unknown_and_refusing_customers_fall_back_to_popularity(
    engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    unknown = engine.recommend("c_never_seen_before", k=5)
    assert unknown.fallback == "unknown_customer" and unknown.segment is None
    assert len(unknown.items) == 5
    assert all(set(i["contributions"]) <= {"popularity"} for i in unknown.items)
    settings, _ = trained_small
    features = pd.read_parquet(settings.features_dir / "customer_features.parquet")
    refused = features.loc[~features["consent_personalisation"], "customer_id"].iloc[0]
    answer = engine.recommend(refused, k=5)
    assert answer.fallback == "no_consent" and answer.segment is None


def test_exclusions_product_page_and_category(engine: RecommendationEngine) -> None:
    first = engine.recommend("c_never_seen_before", k=5)
    top = first.items[0]["product_id"]
    again = engine.recommend("c_never_seen_before", k=5, exclude=[top])
    assert top not in [i["product_id"] for i in again.items]
    page = engine.recommend("c_never_seen_before", k=5, placement="product", product_id=top)
    assert top not in [i["product_id"] for i in page.items]
    name = str(engine.category_names[0])
    only = engine.recommend("c_never_seen_before", k=5, category=name)
    assert {engine.category[engine.index_of[i["product_id"]]] for i in only.items} == {0}


def test_the_live_session_changes_the_next_answer(
    engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    settings, _ = trained_small
    row = _segments(settings).iloc[1]
    before = engine.recommend(row["customer_id"], k=10, placement="cart")
    carted = before.items[0]["product_id"]
    categories = {
        str(p): str(engine.category_names[c])
        for p, c in zip(engine.product_ids, engine.category, strict=True)
    }
    writer = LiveSessionWriter(open_store(settings), categories, dt.timedelta(minutes=30))
    writer.apply(
        [
            LiveEvent(
                customer_id=row["customer_id"],
                product_id=carted,
                type="add_to_cart",
                # Ten minutes before the reader's clock: inside the session view's 2 h ttl.
                ts=dt.datetime(2026, 11, 4, 23, 50, tzinfo=dt.UTC),
                price=10.0,
                session_id="S-live-1",
            )
        ]
    )
    after = engine.recommend(row["customer_id"], k=10, placement="cart")
    # The top item went into the cart: the cart carousel must not offer it again.
    assert carted not in [i["product_id"] for i in after.items]
    # And the session's category shifts the rest, rather than just closing the gap.
    shifted = [i["product_id"] for i in before.items][1:]
    assert [i["product_id"] for i in after.items][:9] != shifted


def test_similar_items_share_the_product_s_category_mostly(engine: RecommendationEngine) -> None:
    product = str(engine.product_ids[0])
    similar = engine.similar(product, k=10)
    assert len(similar) == 10 and product not in [s["product_id"] for s in similar]
    same = [
        engine.category[engine.index_of[s["product_id"]]] == engine.category[0] for s in similar
    ]
    assert np.mean(same) >= 0.5
    with pytest.raises(KeyError, match="unknown product_id"):
        engine.similar("P-nope")


def test_serving_imports_no_training_library() -> None:
    code = (
        "import sys, serving.engine; "
        "bad = [m for m in ('sklearn', 'surprise', 'implicit', 'training', 'pandera') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    importlib.import_module("serving.engine")


def test_history_is_online_and_purchases_are_filtered(
    engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    settings, _ = trained_small
    embeddings = pd.read_parquet(settings.features_dir / "customer_embeddings.parquet")
    row = embeddings[embeddings["history_purchases"].map(len) > 0].iloc[0]
    assert 0 < len(row["history_items"]) <= settings.online_history_events
    assert len(row["history_items"]) == len(row["history_types"]) == len(row["history_unix"])
    assert list(row["history_unix"]) == sorted(row["history_unix"], reverse=True)
    answer = engine.recommend(row["customer_id"], k=50)
    shown = {i["product_id"] for i in answer.items}
    bought = {
        p
        for p in row["history_purchases"]
        if not engine.rules.repeat_category[engine.category[engine.index_of[p]]]
    }
    assert bought and not shown & bought, "bought items outside repeat categories stay out"


def test_session_events_fold_the_customer_into_als_again(
    engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    settings, _ = trained_small
    customer_id = _segments(settings).iloc[40]["customer_id"]
    now = engine.clock().timestamp()
    stored = engine._customer(engine.features.read_many([customer_id])[0], now)
    assert not stored.live
    als = engine.models.index("als")
    before = engine._scores(stored)[als]
    # The stored factors reproduce training; the same history folded in agrees closely.
    refolded = engine._customer(engine.features.read_many([customer_id])[0], now)
    refolded.live = True
    assert np.corrcoef(before, engine._scores(refolded)[als])[0, 1] > 0.8
    # A session of views on one category moves the ALS scores towards it.
    category = int(np.bincount(engine.category).argmin())
    items = np.flatnonzero(engine.category == category)[:5]
    writer = LiveSessionWriter(
        open_store(settings), engine.categories_by_product(), dt.timedelta(minutes=30)
    )
    writer.apply(
        [
            LiveEvent(customer_id, str(engine.product_ids[i]), "add_to_cart", engine.clock())
            for i in items
        ]
    )
    live = engine._customer(engine.features.read_many([customer_id])[0], now)
    assert live.live and set(live.session_items["carted"]) == set(items)
    after = engine._scores(live)[als]
    in_category = engine.category == category
    gain = (after - before)[in_category].mean() - (after - before)[~in_category].mean()
    assert gain > 0


def test_a_customer_known_only_by_profile_is_personal_with_defaults(
    engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    settings, _ = trained_small
    newcomer = "c_00000000000000aa"  # signed up after the last feature build
    profile = pd.DataFrame(
        {
            "customer_id": [newcomer],
            "age": [31.0],
            "gender": ["F"],
            "country": ["IE"],
            "city": ["Cork"],
            "tenure_days": [3.0],
            "consent_personalisation": [True],
            "interactions": pd.array([0], dtype="int64"),
            "event_timestamp": [pd.Timestamp("2026-11-04", tz="UTC")],
        }
    )
    open_store(settings).write_to_online_store("customer_profile", profile)
    answer = engine.recommend(newcomer, k=5)
    assert answer.fallback == "missing_features"
    assert "customer_behaviour:frequency" in answer.missing_features
    assert answer.lifecycle_stage == "New" and len(answer.items) == 5
    # Personal as far as it goes: a segment from what is known (age, tenure), filled in
    # with the training medians.
    assert answer.segment is not None and answer.segment["assigned"] == "live"


def test_the_new_arrivals_model_is_scored_and_blended(
    engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    settings, run = trained_small
    assert "new_arrivals" in engine.models
    row = engine.models.index("new_arrivals")
    arrays = engine.model_arrays["new_arrivals"]
    # Launch ages as of the bundle's data end, from the catalogue's launch dates.
    ages = arrays["launch_age_days"]
    assert ages.shape == (len(engine.product_ids),) and ages.min() >= 0.0
    products = pd.read_parquet(settings.clean_dir / "products.parquet").set_index("product_id")
    end = pd.read_parquet(settings.clean_dir / "events.parquet")["ts"].max()
    launch = products["launch_ts"].reindex(list(engine.product_ids))
    dated = launch.notna().to_numpy()
    assert dated.mean() > 0.9
    expected = ((end - launch[dated]) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    assert np.allclose(ages[dated], expected, atol=1e-6)
    customer_id = _segments(settings).iloc[7]["customer_id"]
    now = engine.clock().timestamp()
    customer = engine._customer(engine.features.read_many([customer_id])[0], now)
    scores = engine._scores(customer)[row]
    fresh = np.exp2(-ages / float(arrays["freshness_half_life_days"]))
    # Freshness re-weighted by the customer's taste: mostly freshness, not constant.
    assert scores.max() > scores.min()
    assert np.corrcoef(scores, fresh)[0, 1] > 0.3
    # The blend carries the model with at least the validated new-product floor.
    weights = engine._weights(customer)
    assert weights.shape == (len(engine.models),)
    assert weights[row] >= run.blender.new_product_floor_ - 1e-9
    assert weights.sum() == pytest.approx(1.0)


def test_the_reranker_in_the_bundle_reorders_the_served_blend(
    engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    """A hand-made re-ranker (one stump: items the customer viewed score +3 log-odds,
    others -3) put in the real bundle: viewed items of the blend's top 50 come first,
    with the re-ranker's change of score in the explanation; one model alone is never
    re-ranked."""
    settings, _ = trained_small
    groups = [COLD_START, NO_SEGMENT, *engine.bundle.segment_model.segment_ids.tolist()]
    meta = {
        "depth": np.asarray(50),
        "history_events": np.asarray(settings.online_history_events),
        "trend_days": np.asarray(42.0),
        "reference_unix": np.asarray(engine.clock().timestamp()),
        "unseen": np.zeros(len(engine.product_ids), bool),
    }
    stump = own_views_stump(meta, engine.models, groups)
    bundle = dataclasses.replace(engine.bundle, arrays={**engine.bundle.arrays, "rerank": stump})
    reranking = RecommendationEngine(bundle, engine.features, clock=engine.clock)
    now = engine.clock().timestamp()
    led, lifts = 0, []
    for customer_id in _segments(settings)["customer_id"].iloc[:40]:
        customer = reranking._customer(reranking.features.read_many([customer_id])[0], now)
        viewed = set(customer.items[customer.types == 0].tolist())
        answer = reranking.recommend(customer_id, k=10)
        flags = [reranking.index_of[i["product_id"]] in viewed for i in answer.items]
        assert flags == sorted(flags, reverse=True), customer_id  # viewed items first
        for item in answer.items:
            assert sum(item["contributions"].values()) == pytest.approx(item["score"], abs=1e-5)
        led += bool(flags and flags[0])
        lifts.extend(i["contributions"].get("reranker", 0.0) for i in answer.items)
    assert led >= 5
    # Scores stay on the blend's scale: moved up, an item takes a higher rank's score.
    assert max(lifts) > 0 > min(lifts)
    # The bundle's own re-ranker is there exactly when training kept one; without any,
    # nothing is re-ranked.
    _, run = trained_small
    assert ("rerank" in engine.bundle.arrays) == bool(run.rerank["chosen"])
    arrays = {k: v for k, v in engine.bundle.arrays.items() if k != "rerank"}
    plain = RecommendationEngine(
        dataclasses.replace(engine.bundle, arrays=arrays), engine.features, clock=engine.clock
    )
    answers = [plain.recommend(c, k=10) for c in _segments(settings)["customer_id"].iloc[:40]]
    assert all("reranker" not in i["contributions"] for a in answers for i in a.items)
    # One model alone (an experiment's or a rule's choice) keeps that model's order.
    customer = reranking._customer(reranking.features.read_many([customer_id])[0], now)
    assert (
        reranking._rerank_lifts([customer], [False], np.zeros((1, 1, 1)), np.zeros((1, 1)), now)
        is None
    )


def test_blend_groups_the_reranker_leaves_out_are_served_the_blends_order(
    engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    """The bundle's ``reranked_groups`` decides who is re-ranked when served, as in the
    evaluation: customers of a group left out get the plain blend's answer, exactly."""
    settings, _ = trained_small
    groups = [COLD_START, NO_SEGMENT, *engine.bundle.segment_model.segment_ids.tolist()]
    now = engine.clock().timestamp()
    customer_ids = _segments(settings)["customer_id"].iloc[:40].tolist()
    group_of = {
        c: engine._group(engine._customer(engine.features.read_many([c])[0], now))
        for c in customer_ids
    }
    left_out = collections.Counter(group_of.values()).most_common(1)[0][0]
    meta = {
        "depth": np.asarray(50),
        "history_events": np.asarray(settings.online_history_events),
        "trend_days": np.asarray(42.0),
        "reference_unix": np.asarray(now),
        "unseen": np.zeros(len(engine.product_ids), bool),
    }
    stump = own_views_stump(
        meta, engine.models, groups, reranked_groups=[g for g in groups if g != left_out]
    )
    arrays = {k: v for k, v in engine.bundle.arrays.items() if k != "rerank"}
    plain, gated = (
        RecommendationEngine(
            dataclasses.replace(engine.bundle, arrays=extra), engine.features, clock=engine.clock
        )
        for extra in (arrays, {**arrays, "rerank": stump})
    )
    moved = 0
    for customer_id in customer_ids:
        served = gated.recommend(customer_id, k=10)
        baseline = plain.recommend(customer_id, k=10)
        ids = [i["product_id"] for i in served.items]
        if group_of[customer_id] == left_out:
            assert ids == [i["product_id"] for i in baseline.items], customer_id
            assert all(i["contributions"].get("reranker", 0.0) == 0.0 for i in served.items)
        else:
            moved += ids != [i["product_id"] for i in baseline.items]
    assert moved >= 3  # the others are re-ranked
