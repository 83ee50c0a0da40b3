"""make train for real on the tiny storefront: Feast features, segments, models, blend,
evaluation report, the bundle on disk and in BentoML's store, customer factors online."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from segrec.bundle import load_from_bentoml, read_bundle
from segrec.feature_store import open_store
from segrec.settings import Settings
from training.models.blend_fit import FLOORS
from training.train.evaluate import BLEND, RANDOM
from training.train.pipeline import TrainingRun
from training.train.report import write_reports
from training.train.search import GRIDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(trained_small: tuple[Settings, TrainingRun]) -> tuple[Settings, TrainingRun]:
    return trained_small


def test_every_model_and_the_blend_are_measured_on_the_same_customers(
    trained: tuple[Settings, TrainingRun],
) -> None:
    _, run = trained
    assert set(run.results) == {"new_items", "repeats_allowed", "filtered", "new_products"}
    new_products = run.results["new_products"]
    # Products nobody touched in training: popularity-style models cannot find them.
    assert new_products.runs["popularity"].means["hit_rate"] == 0
    # The new-arrivals model ranks them by launch (first seen) and the customer's taste.
    assert new_products.runs["new_arrivals"].means["hit_rate"] > 0
    for view in ("new_items", "repeats_allowed", "filtered"):
        result = run.results[view]
        counts = {run_.n_customers for run_ in result.runs.values()}
        assert len(counts) == 1 and counts.pop() > 100
        blend, random = result.runs[BLEND].means["ndcg"], result.runs[RANDOM].means["ndcg"]
        assert blend > 3 * random
        # The blend is fitted to beat its parts on validation; on test it must at least
        # beat global popularity, the baseline every storefront already has.
        assert blend > result.runs["popularity"].means["ndcg"]


def test_reports_hold_intervals_groups_and_weights(trained: tuple[Settings, TrainingRun]) -> None:
    settings, run = trained
    json_path, html_path = write_reports(run, settings)
    report = json.loads(json_path.read_text())
    new_items = report["protocols"]["new_items"]
    assert set(new_items["intervals"]["als"]["blend_minus_model"]) >= {"estimate", "low", "high"}
    assert {"segment_name", "lifecycle", "cold_start"} == set(new_items["by_group"])
    assert report["blend"]["global"] and report["split"]["protocol"] == "temporal"
    # The blend search starts from the best single model: never worse on validation, and
    # the new-product floor may not take it below that either.
    singles = report["blend"]["validation_single_model_ndcg"]
    assert set(singles) == set(run.model_names)
    assert run.blender.global_ndcg_ >= max(singles.values()) - 1e-5
    floor = report["blend"]["new_product_floor"]
    assert floor in FLOORS
    assert (
        report["blend"]["new_product_floor_validation_ndcg"][str(floor)]
        >= max(singles.values()) - 1e-5
    )
    assert set(report["blend"]["repeat_share"]) >= {"global"}
    search = report["hyperparameter_search"]
    # The defaults are always tried first, so the search never does worse than them.
    for model in ("als", "svd"):
        trials = search["trials"][model]
        assert trials and max(t["ndcg"] for t in trials) >= trials[0]["ndcg"]
        best = max(trials, key=lambda t: t["ndcg"])["params"]
        assert search["best"][model] == best
    # The trial count bounds the search; only the safety cap on time may stop it sooner.
    for model, trials in search["trials"].items():
        grid = math.prod(len(values) for values in GRIDS[model].values())
        full = min(settings.search_max_trials, grid)
        assert len(trials) == full or (model in search["cut_short_by_time"] and trials)
    assert html_path.read_text().count("data:image/png;base64,") >= 13
    assert report["rating_errors"]["ratings"] > 0


def test_the_bundle_round_trips_with_numpy_and_through_bentoml(
    trained: tuple[Settings, TrainingRun],
) -> None:
    _, run = trained
    assert run.export is not None
    bundle = read_bundle(Path(run.export.bundle_dir))
    assert set(bundle.model_names) == set(run.model_names)
    assert len(bundle.group("items")["product_ids"]) == 1000
    np.testing.assert_allclose(bundle.blend_weights(None), run.blender.global_weights_)
    from_store = load_from_bentoml(run.export.bentoml_tag)
    assert from_store.version == bundle.version
    assert from_store.checksums == bundle.checksums


def test_customer_factors_are_online(trained: tuple[Settings, TrainingRun]) -> None:
    settings, run = trained
    assert run.export is not None and run.export.customers_written > 1000
    import pandas as pd

    offline = pd.read_parquet(settings.features_dir / "customer_embeddings.parquet")
    sample = offline.head(3)
    online = (
        open_store(settings)
        .get_online_features(
            features=["customer_embedding:als_factors", "customer_embedding:model_version"],
            entity_rows=[{"customer_id": c} for c in sample["customer_id"]],
        )
        .to_dict()
    )
    for got, expected in zip(online["als_factors"], sample["als_factors"], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert set(online["model_version"]) == {run.export.bundle_version}
