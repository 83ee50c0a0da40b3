"""make train for real on the tiny storefront: Feast features, segments, models, blend,
evaluation report, the bundle on disk and in BentoML's store, customer factors online."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segrec.blend import COLD_START
from segrec.bundle import load_from_bentoml, read_bundle
from segrec.feature_store import open_store
from segrec.settings import Settings
from training.models.blend_fit import FLOORS
from training.models.reranker import DEPTHS
from training.train.evaluate import BLEND, LINEAR_BLEND, RANDOM
from training.train.pipeline import (
    TrainingRun,
    _interactions,
    _split,
    blend_groups,
    earlier_windows,
    fit_blend,
    held_out,
    segments_at,
    window_oracle,
)
from training.train.report import report_dict, write_reports
from training.train.search import GRIDS
from training.train.stacks import fit_models, make_models

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
    # "Twice popularity" is read off a paired ratio: the blend's mean over the model's.
    summary = new_items["summary"]
    ratio = new_items["intervals"]["popularity"]["blend_over_model"]
    assert ratio["estimate"] == pytest.approx(
        summary[BLEND]["means"]["ndcg"] / summary["popularity"]["means"]["ndcg"], rel=1e-9
    )
    assert ratio["low"] < ratio["estimate"] < ratio["high"]
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
    # Fewer validation customers than the cap: every one of them, and the report says so.
    sample = report["blend"]["sample"]
    assert sample["seed"] == settings.seed
    assert sample["max_customers"] == settings.blend_max_customers
    assert sample["customers"] == sample["of_customers"] < settings.blend_max_customers
    assert sample["new_item_customers"] == sample["of_new_item_customers"]
    # The validation window's customers, and those of the earlier windows pooled with it.
    assert sample["of_new_item_customers"] >= run.customers["validation"]
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
    # Fewer test customers than the cap: every one evaluated, and the report says so.
    evaluated = report["evaluation_sample"]
    assert evaluated["max_customers"] == settings.eval_max_customers
    for protocol, body in report["protocols"].items():
        view = evaluated["views"][protocol]
        assert view["customers"] == view["of_customers"] == body["summary"]["blend"]["n_customers"]
    # Per segment, the blend against the best single model overall (chosen on validation)
    # and against that segment's best single model (picked on test), with intervals.
    overall = run.model_names[int(np.argmax(run.blender.single_ndcg_))]
    for protocol, body in report["protocols"].items():
        comparison = body["segments_vs_best_single"]
        assert comparison["overall_best_single_model"] == overall
        table = body["by_group"]["segment_name"]
        assert set(comparison["segments"]) == set(table)
        for segment, entry in comparison["segments"].items():
            row = table[segment]
            best = max(run.model_names, key=lambda name: row[name])
            assert entry["best_single"] == pytest.approx(row[best], abs=1e-5), protocol
            assert entry["overall_best_single"] == pytest.approx(row[overall], abs=1e-5)
            assert entry["blend"] == pytest.approx(row["blend"], abs=1e-5)
            assert entry["n_customers"] == row["n_customers"]
            for key, single in (("blend_minus_best", best), ("blend_minus_overall_best", overall)):
                interval = entry[key]
                assert interval["low"] <= interval["estimate"] <= interval["high"]
                assert interval["estimate"] == pytest.approx(row["blend"] - row[single], abs=1e-4)
        for tally, key in (
            ("vs_segment_best", "blend_minus_best"),
            ("vs_overall_best", "blend_minus_overall_best"),
        ):
            entries = comparison["segments"].values()
            assert comparison[tally] == {
                "blend_ahead": sum(e[key]["estimate"] > 0 for e in entries),
                "blend_ahead_beyond_interval": sum(e[key]["low"] > 0 for e in entries),
                "blend_behind_beyond_interval": sum(e[key]["high"] < 0 for e in entries),
            }
        assert comparison["of"] == len(table)
    assert html_path.read_text().count("data:image/png;base64,") >= 17
    assert report["rating_errors"]["ratings"] > 0


def test_the_reranker_is_chosen_on_validation_evaluated_and_exported(
    trained: tuple[Settings, TrainingRun],
) -> None:
    settings, run = trained
    summary = run.rerank
    # On this seeded storefront the trees beat the blend out of sample (both cross-
    # validated on the same folds); a change that loses that shows here first.
    assert summary["chosen"] is True, summary
    assert summary["cv_ndcg"][str(summary["max_depth"])] > summary["blend_cv_ndcg"]
    assert set(summary["cv_ndcg"]) == {str(depth) for depth in DEPTHS}
    assert summary["seed"] == settings.seed and summary["bags"] == settings.rerank_bags
    # The blend's figure on the customers its weights were fitted on flatters it.
    assert summary["blend_ndcg_fitted_on_them"] > summary["blend_cv_ndcg"]
    for view, result in run.results.items():
        assert LINEAR_BLEND in result.runs, view
        counts = {r.n_customers for r in result.runs.values()}
        assert len(counts) == 1, view
    # Products nobody touched keep the blend's slots: the new-products view (only such
    # products count) scores the same with and without the trees.
    new_products = run.results["new_products"].runs
    assert new_products[BLEND].means["ndcg"] == pytest.approx(
        new_products[LINEAR_BLEND].means["ndcg"], abs=1e-12
    )
    assert run.export is not None
    rerank = read_bundle(Path(run.export.bundle_dir)).group("rerank")
    n_items = len(read_bundle(Path(run.export.bundle_dir)).group("items")["product_ids"])
    assert rerank["unseen"].shape == (n_items,) and rerank["unseen"].dtype == bool
    assert int(rerank["depth"]) == settings.rerank_depth
    assert int(rerank["history_events"]) == settings.online_history_events
    assert rerank["tree_feature"].shape[0] == summary["n_trees"]
    end = pd.read_parquet(settings.clean_dir / "events.parquet")["ts"].max()
    assert float(rerank["reference_unix"]) == pytest.approx(end.timestamp())
    json_path, _ = write_reports(run, settings)
    report = json.loads(json_path.read_text())
    assert report["rerank"] == summary
    # Who is re-ranked: cold start is left in the blend's order (SEGREC_RERANK_COLD_START
    # is off), every group is named, and the bundle holds what the summary says.
    by_group = summary["cv_by_group"]
    assert (
        by_group[str(COLD_START)] | {"is_reranked": False, "name": "cold start"}
        == (by_group[str(COLD_START)])
    )
    assert all(entry["name"] and "difference" in entry for entry in by_group.values())
    kept = sorted(int(g) for g, entry in by_group.items() if entry["is_reranked"])
    assert rerank["reranked_groups"].tolist() == kept == summary["reranked_groups"]
    # ... and the evaluation agrees: test cold-start customers score as the weights alone.
    for view in ("filtered", "repeats_allowed", "new_items"):
        cold = report["protocols"][view]["by_group"]["cold_start"]["True"]
        assert cold["n_customers"] > 0
        assert cold[BLEND] == pytest.approx(cold[LINEAR_BLEND], abs=1e-12), view


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


def test_the_oracle_rows_can_be_switched_off(trained: tuple[Settings, TrainingRun]) -> None:
    """SEGREC_EVAL_ORACLE=false (for large storefronts, where they cost minutes a
    view): no oracle, and the report says why."""
    from training.evaluation.oracle import describe

    settings, _ = trained
    split = _split(settings, pd.read_parquet(settings.clean_dir / "events.parquet"))
    found, info = window_oracle(settings, split)
    assert found is not None and info["available"]
    off, info = window_oracle(settings.model_copy(update={"eval_oracle": False}), split)
    assert off is None and not info["available"]
    assert describe(info) == "No oracle row: switched off (SEGREC_EVAL_ORACLE=false)."


def test_customers_without_consent_are_neither_scored_nor_profiled(
    trained: tuple[Settings, TrainingRun],
) -> None:
    """Serving answers customers without personalisation consent with global popularity
    whatever the models say: no evaluation window scores them (test, validation, the
    blend's and the re-ranker's), and training writes no profile of them (factors,
    history) offline or online. Their training events still count for everyone."""
    from training.features.inputs import personalisation_consent

    settings, run = trained
    consent = personalisation_consent(settings.clean_dir)
    refused = set(consent.index[~consent.to_numpy()])
    events = pd.read_parquet(settings.clean_dir / "events.parquet")
    assert refused & set(events["customer_id"].astype(str))
    assert run.customers["test_no_consent"] > 0 and run.customers["validation_no_consent"] > 0
    assert run.split["test"]["unscored_customers"] == run.customers["test_no_consent"]
    for view, result in run.results.items():
        assert not refused & set(result.groups["customer_id"].astype(str)), view
    # Had they been scored, the test side would hold them too: the split saw them.
    split = _split(settings, events)
    everyone = set(split.test.relevant_pairs()["customer_id"].astype(str))
    assert len(everyone & refused) == run.customers["test_no_consent"]
    assert len(everyone) == run.customers["test"] + run.customers["test_no_consent"]

    offline = pd.read_parquet(settings.features_dir / "customer_embeddings.parquet")
    assert not refused & set(offline["customer_id"])
    active = set(events["customer_id"].astype(str))
    # Missing consent counts as none: only customers the table says consent get a row.
    assert set(offline["customer_id"]) == active & set(consent.index[consent.to_numpy()])
    assert run.export is not None and run.export.customers_written == len(offline)
    some = sorted(refused & active)[:3]
    online = (
        open_store(settings)
        .get_online_features(
            features=["customer_embedding:model_version"],
            entity_rows=[{"customer_id": c} for c in some],
        )
        .to_dict()
    )
    assert online["model_version"] == [None] * len(some)


def test_the_blend_fit_scores_a_capped_sample_stratified_by_segment(
    trained: tuple[Settings, TrainingRun],
) -> None:
    settings, _ = trained
    capped = settings.model_copy(
        update={"blend_max_customers": 400, "blend_max_seconds": 2.0, "rerank": False}
    )
    events = pd.read_parquet(settings.clean_dir / "events.parquet")
    products = pd.read_parquet(settings.clean_dir / "products.parquet")
    split = _split(settings, events)
    segment_of = segments_at(settings, split.validation)["segment_id"]
    train = _interactions(split.validation, products, segment_of)
    models = fit_models(make_models(settings), train)
    main = held_out(split.validation, train, new_items_only=True, known_only=False)
    rep = held_out(split.validation, train, new_items_only=False, known_only=False)
    fitted = fit_blend(capped, models, train, main, rep)
    sample = fitted.sample
    assert sample["customers"] == 400 < sample["of_customers"]
    assert sample["seed"] == settings.seed and sample["max_customers"] == 400
    assert fitted.blender.single_ndcg_  # fitted on the sample
    assert fitted.rerank.trees is None and "SEGREC_RERANK" in fitted.rerank.summary["reason"]
    # Each blend group keeps min(its new-item customers, the minimum) in the main view.
    counted = fitted.blender.validation_customers_
    groups, everyone = np.unique(blend_groups(train, main[1]), return_counts=True)
    for group, n in zip(groups.tolist(), everyone.tolist(), strict=True):
        assert counted[group] >= min(n, settings.blend_min_customers), (group, counted, n)
    # The main view keeps its share of the sample (the rest only fits buy-again's share).
    main_share = round(400 * sample["of_new_item_customers"] / sample["of_customers"])
    assert sum(counted.values()) == sample["new_item_customers"] == main_share


def test_earlier_validation_windows_are_pooled_for_the_blend(
    trained: tuple[Settings, TrainingRun],
) -> None:
    """A second window ends where the validation window begins; its models never see it."""
    settings, _ = trained
    one = settings.model_copy(
        update={"blend_validation_windows": 1, "blend_max_seconds": 2.0, "rerank": False}
    )
    two = one.model_copy(update={"blend_validation_windows": 2})
    events = pd.read_parquet(settings.clean_dir / "events.parquet")
    products = pd.read_parquet(settings.clean_dir / "products.parquet")
    split = _split(settings, events)
    segment_of = segments_at(settings, split.validation)["segment_id"]
    assert earlier_windows(one, split, products, {}) == []
    (window,) = earlier_windows(two, split, products, {})
    cut = split.validation.reference_time - pd.Timedelta(days=settings.eval_validation_days)
    assert window.train.reference_time == cut
    assert window.rep[0] and set(window.main[0]) <= set(window.rep[0])
    train = _interactions(split.validation, products, segment_of)
    models = fit_models(make_models(settings), train)
    main = held_out(split.validation, train, new_items_only=True, known_only=False)
    rep = held_out(split.validation, train, new_items_only=False, known_only=False)
    alone = fit_blend(one, models, train, main, rep).sample
    pooled = fit_blend(two, models, train, main, rep, [window]).sample
    assert alone["windows"] == 1 and pooled["windows"] == 2
    assert pooled["of_customers"] == alone["of_customers"] + len(window.rep[0])
    assert pooled["new_item_customers"] == alone["new_item_customers"] + len(window.main[0])


def test_the_generators_oracle_is_the_ceiling_row(trained: tuple[Settings, TrainingRun]) -> None:
    """Synthetic data with a known seed: every view has the oracle row (the generator's
    true preferences) and the observed-tastes row, measured on the same customers, and
    the report says where they came from and sets the blend beside them."""
    from training.evaluation.oracle import OBSERVED_ORACLE, ORACLE

    settings, run = trained
    assert run.oracle["available"] and run.oracle["seed"] == settings.seed
    assert run.oracle["data_version"] and run.oracle["generator_version"]
    for view in ("new_items", "repeats_allowed", "filtered"):
        runs = run.results[view].runs
        assert runs[ORACLE].n_customers == runs[BLEND].n_customers
        assert runs[OBSERVED_ORACLE].n_customers == runs[BLEND].n_customers
        assert runs[ORACLE].means["ndcg"] > runs["popularity"].means["ndcg"]
        assert runs[ORACLE].means["ndcg"] > runs[RANDOM].means["ndcg"]
    assert run.oracle["observed"]["customers_with_views"] > 0
    # The blend beside both oracles by the same yardsticks; the blend's own figures are
    # the ones the rest of the report gives.
    report = report_dict(run, settings)
    for view, body in report["protocols"].items():
        ceilings = body["ceilings"]
        assert set(ceilings["methods"]) == {BLEND, ORACLE, OBSERVED_ORACLE}, view
        blend = ceilings["methods"][BLEND]
        assert blend["over_popularity"] == body["intervals"]["popularity"]["blend_over_model"]
        tally = body["segments_vs_best_single"]["vs_overall_best"]
        assert blend["vs_overall_best"] == {
            "ahead": tally["blend_ahead"],
            "ahead_beyond_interval": tally["blend_ahead_beyond_interval"],
            "behind_beyond_interval": tally["blend_behind_beyond_interval"],
            "of": body["segments_vs_best_single"]["of"],
        }
        popularity = body["summary"]["popularity"]["means"]["ndcg"]
        for name in (ORACLE, OBSERVED_ORACLE):
            ratio = ceilings["methods"][name]["over_popularity"]["estimate"]
            if popularity:
                mean = body["summary"][name]["means"]["ndcg"]
                assert ratio == pytest.approx(mean / popularity, rel=1e-9)
            else:  # new products: popularity never finds one, so no ratio
                assert math.isnan(ratio), view
