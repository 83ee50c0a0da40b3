"""The A/B report: its statistics on hand-computed cases, attribution on a handful of
exposures and events, A/A false positives and power over many seeds, and the whole loop
(assignment, exposure, outcome, report) through a real service driven by the simulator."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from segrec.experiments import ExperimentsConfig, parse_experiments
from segrec.settings import Settings
from training.experiments.attribution import (
    attribute,
    event_table,
    exposure_table,
    load_events,
    load_exposures,
)
from training.experiments.report import ReportOptions, build_report, churn_bands, write_report
from training.experiments.statistics import (
    bootstrap_ratio_difference,
    bootstrap_ratio_interval,
    clustered_rate_test,
    rate_interval,
    sample_ratio_test,
    two_proportion_ztest,
)

ALPHA = 0.05


# ---- statistics on hand-computed examples -----------------------------------------------
def test_two_proportion_ztest_matches_the_hand_computation() -> None:
    # 100/1000 vs 130/1000: pooled p = 0.115, se = sqrt(0.115 * 0.885 * 2 / 1000)
    # = 0.0142671, z = 0.03 / se = 2.10274, p = 2 * (1 - Phi(z)) = 0.035488.
    result = two_proportion_ztest(100, 1000, 130, 1000)
    assert result.difference == pytest.approx(0.03)
    assert result.p_value == pytest.approx(0.035488, abs=1e-5)
    # The interval uses each group's own variance: sqrt(.09/1000 + .1131/1000) = 0.0142513.
    assert result.low == pytest.approx(0.03 - 1.959964 * 0.0142513, abs=1e-6)
    assert result.high == pytest.approx(0.03 + 1.959964 * 0.0142513, abs=1e-6)
    assert result.significant(0.05) and not result.significant(0.01)
    assert result.relative_lift == pytest.approx(0.3)
    # Swapping the groups flips the sign, not the p-value.
    swapped = two_proportion_ztest(130, 1000, 100, 1000)
    assert swapped.difference == pytest.approx(-0.03) and swapped.p_value == result.p_value


def test_two_proportion_ztest_edge_cases() -> None:
    assert two_proportion_ztest(50, 500, 50, 500).p_value == pytest.approx(1.0)
    assert two_proportion_ztest(0, 100, 0, 100).p_value == 1.0  # nobody anywhere: no evidence
    assert two_proportion_ztest(0, 100, 100, 100).p_value == pytest.approx(0.0, abs=1e-12)
    empty = two_proportion_ztest(0, 0, 5, 10)
    assert math.isnan(empty.p_value) and empty.treatment == 0.5
    with pytest.raises(ValueError, match="successes <= trials"):
        two_proportion_ztest(11, 10, 1, 10)


def test_clustered_rate_test_is_the_z_test_with_one_exposure_each_and_wider_with_more() -> None:
    y_c, y_t = np.r_[np.ones(100), np.zeros(900)], np.r_[np.ones(140), np.zeros(860)]
    ones = np.ones(1000)
    clustered = clustered_rate_test(y_c, ones, y_t, ones)
    plain = two_proportion_ztest(100, 1000, 140, 1000)
    assert clustered.difference == pytest.approx(plain.difference)
    # Unpooled variance with k - 1 instead of k: within a fraction of a percent.
    assert clustered.high - clustered.low == pytest.approx(plain.high - plain.low, rel=1e-3)
    # The same rates, but each customer's 5 exposures all alike (perfect clustering): the
    # evidence is 1,000 customers, not 5,000 exposures; the naive test would not know.
    five = np.full(1000, 5.0)
    lumped = clustered_rate_test(5 * y_c, five, 5 * y_t, five)
    assert lumped.difference == pytest.approx(plain.difference)
    assert lumped.p_value == pytest.approx(clustered.p_value, rel=1e-6)
    naive = two_proportion_ztest(500, 5000, 700, 5000)
    assert naive.p_value < lumped.p_value / 1000
    interval = rate_interval(5 * y_c, five)
    assert interval.estimate == pytest.approx(0.1) and interval.n == 1000
    # Binomial standard error of 1,000 customers: sqrt(.1 * .9 / 999).
    assert interval.high - 0.1 == pytest.approx(1.959964 * math.sqrt(0.09 / 999), rel=1e-5)


def test_sample_ratio_check_flags_a_60_40_split_and_passes_50_50() -> None:
    shares = {"blend": 0.5, "popularity": 0.5}
    skewed = sample_ratio_test({"blend": 1200, "popularity": 800}, shares)
    # chi2 = 2 * 200^2 / 1000 = 80 on 1 degree of freedom.
    assert skewed.chi2 == pytest.approx(80.0) and skewed.dof == 1
    assert skewed.p_value == pytest.approx(stats.chi2.sf(80.0, 1)) and skewed.mismatch
    even = sample_ratio_test({"blend": 1000, "popularity": 1000}, shares)
    assert even.p_value == pytest.approx(1.0) and not even.mismatch
    assert not sample_ratio_test({"blend": 1030, "popularity": 970}, shares).mismatch
    # Weights need not sum to 1; a configured variant never seen counts as 0.
    three = sample_ratio_test({"a": 500, "b": 250}, {"a": 2, "b": 1, "c": 1})
    assert three.expected == {"a": 375.0, "b": 187.5, "c": 187.5} and three.mismatch
    with pytest.raises(ValueError, match="no configured share"):
        sample_ratio_test({"a": 1, "zzz": 1}, {"a": 1, "b": 1})


def test_revenue_bootstrap_is_seeded_and_finds_a_clear_difference() -> None:
    rng = np.random.default_rng(3)
    control = rng.lognormal(2.0, 1.0, 800) * (rng.random(800) < 0.1)
    treatment = rng.lognormal(2.0, 1.0, 800) * (rng.random(800) < 0.2)
    exposures = rng.integers(1, 4, 800).astype(float)
    first = bootstrap_ratio_difference(
        control, exposures, treatment, exposures, n_boot=500, random_state=7
    )
    again = bootstrap_ratio_difference(
        control, exposures, treatment, exposures, n_boot=500, random_state=7
    )
    assert first == again
    assert first.difference == pytest.approx(
        treatment.sum() / exposures.sum() - control.sum() / exposures.sum()
    )
    assert first.low > 0 and first.p_value < 0.05
    assert first.p_value >= 2 / 501, "finitely many resamples never prove p = 0"
    same = bootstrap_ratio_difference(
        control, exposures, control, exposures, n_boot=500, random_state=7
    )
    assert same.low < 0 < same.high and same.p_value > 0.5


def test_naive_per_exposure_test_is_overconfident_when_customers_differ() -> None:
    """Why the report tests with customers as the unit: customers who differ (some buy,
    most never do) and see many carousels make exposures correlated."""
    rng = np.random.default_rng(11)
    naive = clustered = 0
    runs = 200
    for _ in range(runs):
        groups = []
        for _ in range(2):
            propensity = rng.beta(0.1, 1.9, 400)  # mean 5%, very uneven between customers
            exposures = 1 + rng.poisson(9, 400)
            groups.append((rng.binomial(exposures, propensity), exposures))
        (y_c, n_c), (y_t, n_t) = groups
        naive += two_proportion_ztest(y_c.sum(), n_c.sum(), y_t.sum(), n_t.sum()).significant()
        clustered += clustered_rate_test(y_c, n_c, y_t, n_t).significant()
    assert naive / runs > 0.2, "per-exposure trials treated as independent flag A/A tests"
    assert clustered / runs <= 0.08


# ---- attribution on a hand-written handful ---------------------------------------------
def _exposure(exposure_id: str, ts: str, customer: str, items: list[str], **extra: Any) -> dict:
    return {
        "exposure_id": exposure_id,
        "ts": ts,
        "customer_id": customer,
        "experiment": "exp",
        "variant": extra.pop("variant", "blend"),
        "placement": "home",
        "segment_id": 1,
        "segment_name": "Bargain hunters",
        "items": items,
        "bundle_version": "bundle-1",
        "rules": [],
        "config_version": "v1",
        **extra,
    }


def _event(event_id: str, customer: str, product: str, kind: str, ts: str, **extra: Any) -> dict:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "product_id": product,
        "type": kind,
        "ts": ts,
        "quantity": extra.pop("quantity", 1),
        "price": extra.pop("price", None),
        "value": None,
        "session_id": None,
        "received_at": ts,
    }


HANDFUL_EXPOSURES = [
    _exposure("e1", "2026-11-01T10:00:00+00:00", "c_1", ["P1", "P2"]),
    _exposure("e2", "2026-11-01T12:00:00+00:00", "c_1", ["P1"]),
    _exposure("e3", "2026-11-01T10:00:00+00:00", "c_2", ["P1", "P3"], variant="popularity"),
]
HANDFUL_EVENTS = [
    # P1 was shown to c_1 at 10:00 and 12:00: the newest exposure before the click wins.
    _event("v1", "c_1", "P1", "view", "2026-11-01T12:30:00+00:00"),
    _event("v1b", "c_1", "P1", "view", "2026-11-01T12:45:00+00:00"),  # the same click again
    # P2 only at 10:00 and within 24 h: e1's, with price x quantity as revenue.
    _event("b1", "c_1", "P2", "purchase", "2026-11-01T12:30:00+00:00", quantity=2, price=3.5),
    _event("v2", "c_1", "P3", "view", "2026-11-01T12:30:00+00:00"),  # never shown to c_1
    _event("b2", "c_1", "P1", "purchase", "2026-11-02T12:00:01+00:00", price=9.0),  # 24h+1s
    _event("v3", "c_2", "P1", "view", "2026-11-01T09:59:59+00:00"),  # before the exposure
    _event("a1", "c_2", "P1", "add_to_cart", "2026-11-01T10:00:00+00:00"),  # same instant
    _event("a1", "c_2", "P1", "add_to_cart", "2026-11-01T10:00:00+00:00"),  # retried
    _event("r1", "c_2", "P3", "rating", "2026-11-01T10:05:00+00:00"),  # not an outcome
    _event("b3", "c_2", "P3", "purchase", "2026-11-01T10:06:00+00:00"),  # no price given
]


def test_attribution_follows_the_window_and_newest_exposure_rule() -> None:
    exposures = exposure_table(HANDFUL_EXPOSURES)
    events = event_table(HANDFUL_EVENTS)
    assert events.duplicates == 1
    joined = attribute(exposures.frame, events.frame, 24)
    by_id = joined.per_exposure.set_index("exposure_id")
    assert list(by_id.loc["e2", ["clicks", "clicked", "purchases"]]) == [1, 1, 0]
    assert list(by_id.loc["e1", ["clicks", "purchases", "converted"]]) == [0, 1, 1]
    assert by_id.loc["e1", "revenue"] == pytest.approx(7.0)
    assert list(by_id.loc["e3", ["clicks", "carts", "purchases"]]) == [0, 1, 1]
    assert by_id.loc["e3", "revenue"] == 0.0
    owners = dict(zip(joined.attributed["event_id"], joined.attributed["exposure_id"], strict=True))
    assert owners == {"v1": "e2", "v1b": "e2", "b1": "e1", "a1": "e3", "b3": "e3"}
    assert joined.counts["outcome_events"] == 8
    assert joined.counts["not_attributed"] == 3  # v2 (not shown), b2 (too late), v3 (early)
    assert joined.counts["attributed_purchases_without_price"] == 1
    assert joined.counts["other_events"] == 1
    # A shorter window loses the click 30 minutes after e2 and the purchase after e1.
    short = attribute(exposures.frame, events.frame, 0.25).per_exposure.set_index("exposure_id")
    assert short["clicks"].sum() == 0 and short.loc["e1", "purchases"] == 0
    customers = joined.per_customer().set_index("customer_id")
    assert list(customers.loc["c_1", ["exposures", "clicked", "converted", "any_click"]]) == [
        2,
        1,
        1,
        1,
    ]
    assert customers.loc["c_1", "revenue"] == pytest.approx(7.0)


def test_bad_log_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    exposures_dir, events_dir = tmp_path / "exposures", tmp_path / "live"
    exposures_dir.mkdir()
    events_dir.mkdir()
    good = [json.dumps(r) for r in HANDFUL_EXPOSURES]
    bad_time = json.dumps(_exposure("e9", "2026-11-01T10:00:00", "c_1", ["P1"]))  # naive
    no_items = json.dumps({**_exposure("e8", "2026-11-01T10:00:00Z", "c_1", []), "items": "P1"})
    text = "\n".join([*good, "{not json", "[1, 2]", bad_time, no_items, good[0]]) + "\n"
    (exposures_dir / "exposures-20261101-pod-1.jsonl").write_text(text + '{"exposure_id": "tr')
    events = "\n".join(json.dumps(r) for r in HANDFUL_EVENTS) + "\n"
    bad_event = json.dumps({**HANDFUL_EVENTS[0], "event_id": "x", "quantity": -2})
    (events_dir / "events-20261101-pod-1.jsonl").write_text(events + bad_event + "\nnope\n")

    exposures = load_exposures(exposures_dir)
    assert exposures.lines == 9 and len(exposures.frame) == 3 and exposures.duplicates == 1
    assert sum(exposures.bad.values()) == 5
    assert exposures.bad["exposure ts missing or not ISO 8601"] == 1
    assert exposures.bad["exposure items not a list of product ids"] == 1
    events_read = load_events(events_dir)
    assert sum(events_read.bad.values()) == 2 and len(events_read.frame) == 9

    config = _config("exp", ["blend", "popularity"])
    report, _ = build_report(
        exposures, events_read, config, attribution_hours=24, options=ReportOptions(n_boot=100)
    )
    assert report["logs"]["exposures"]["bad"] == 5 and report["exposures_total"] == 3
    assert report["logs"]["events"]["bad_by_reason"]["event quantity not a positive number"] == 1
    # Missing directories are an empty report, not an error.
    empty, _ = build_report(
        load_exposures(tmp_path / "none"),
        load_events(tmp_path / "none"),
        config,
        attribution_hours=24,
    )
    assert empty["experiments"] == {} and empty["experiments_without_exposures"] == ["exp"]


# ---- synthetic experiments in memory -----------------------------------------------------
T0 = np.datetime64("2026-11-01T00:00:00", "s")
DAYS_PER_EXPERIMENT = 14


def _config(name: str, variants: list[str], salt: str | None = None) -> ExperimentsConfig:
    return parse_experiments(
        {
            "version": "test-1",
            "experiments": [
                {
                    "name": name,
                    "salt": salt or name,
                    "variants": [{"name": v, "model": "blend"} for v in variants],
                }
            ],
        }
    )


def _iso(seconds: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(T0 + seconds.astype("timedelta64[s]"), unit="s", timezone="UTC")


def synthetic_experiments(
    seeds: range,
    *,
    customers: int = 1000,
    conversion: tuple[float, float] = (0.05, 0.05),
    ctr: tuple[float, float] = (0.25, 0.25),
    concentration: float = 4.0,
) -> tuple[ExperimentsConfig, Any, Any]:
    """One independent two-variant experiment per seed, in one pair of logs, assigned by
    the real hash. Experiment ``aa-<seed>`` runs for its own two weeks (running
    experiments may not overlap) with its own customers, so one report analyses them
    all, each on its own, at the cost of one attribution.

    Customers differ in how often they click and buy (Beta-distributed around their
    variant's rate, the more so the lower ``concentration``) and see 1 + Poisson(1.5)
    carousels of 3 items; a purchase also leaves a view and a cart of the item."""
    experiments, exposure_parts, event_parts = [], [], []
    for position, seed in enumerate(seeds):
        name = f"aa-{seed}"
        start = position * DAYS_PER_EXPERIMENT * 86400
        experiments.append(
            {
                "name": name,
                "salt": name,
                "start": str(_iso(np.array([start]))[0]),
                "stop": str(_iso(np.array([start + DAYS_PER_EXPERIMENT * 86400]))[0]),
                "variants": [{"name": "control"}, {"name": "treatment"}],
            }
        )
        shown, outcomes = _one_experiment(
            seed, name, start, customers, conversion, ctr, concentration
        )
        exposure_parts.append(shown)
        event_parts.append(outcomes)
    config = parse_experiments({"version": "test-1", "experiments": experiments})
    exposures = exposure_table(pd.concat(exposure_parts, ignore_index=True))
    events = event_table(pd.concat(event_parts, ignore_index=True))
    return config, exposures, events


def _one_experiment(
    seed: int,
    name: str,
    start: int,
    customers: int,
    conversion: tuple[float, float],
    ctr: tuple[float, float],
    concentration: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    experiment = _config(name, ["control", "treatment"]).experiments[0]
    ids = np.array([f"c_{x:016x}" for x in rng.integers(0, 2**63, customers)], dtype=object)
    treated = np.array([experiment.assign(c) == "treatment" for c in ids])
    who = np.repeat(np.arange(customers), 1 + rng.poisson(1.5, customers))
    n = len(who)

    def propensity(rates: tuple[float, float]) -> np.ndarray:
        mean = np.where(treated, rates[1], rates[0])
        return rng.beta(mean * concentration, (1 - mean) * concentration)

    p_buy, p_click = propensity(conversion)[who], propensity(ctr)[who]
    seconds = start + rng.integers(0, DAYS_PER_EXPERIMENT * 86400 - 3600, n)
    product = np.char.add("P", rng.integers(0, 60, (n, 3)).astype(str))
    exposures = pd.DataFrame(
        {
            "exposure_id": np.char.add(f"x{seed}-", np.arange(n).astype(str)),
            "ts": _iso(seconds),
            "customer_id": ids[who],
            "experiment": name,
            "variant": np.where(treated[who], "treatment", "control"),
            "placement": "home",
            "segment_id": rng.integers(0, 2, n),
            "segment_name": None,
            "items": product.tolist(),
            "config_version": "test-1",
        }
    )
    # Customer value from its own generator: the draws above stay as they were. A tenth
    # of customers unscored, as customers too new for the value models are.
    value_rng = np.random.default_rng([seed, 1])
    risk = value_rng.random(customers)
    risk[value_rng.random(customers) < 0.1] = np.nan
    band = value_rng.choice(np.array(["low", "mid", "high"], dtype=object), customers)
    exposures["churn_risk"] = risk[who]
    exposures["clv_band"] = np.where(np.isnan(risk), None, band)[who]
    bought = rng.random(n) < p_buy
    clicked = bought | (rng.random(n) < p_click)
    pick = rng.integers(0, 3, n)
    frames = []
    for kind, mask, delay in (
        ("view", clicked, 60),
        ("add_to_cart", bought, 120),
        ("purchase", bought, 180),
    ):
        rows = np.flatnonzero(mask)
        frames.append(
            pd.DataFrame(
                {
                    "event_id": np.char.add(f"{kind}-{seed}-", rows.astype(str)),
                    "customer_id": ids[who[rows]],
                    "product_id": product[rows, pick[rows]],
                    "type": kind,
                    "ts": _iso(seconds[rows] + delay),
                    "quantity": 1,
                    "price": np.round(rng.lognormal(3.0, 0.8, len(rows)), 2)
                    if kind == "purchase"
                    else np.nan,
                }
            )
        )
    return exposures, pd.concat(frames, ignore_index=True)


def test_report_on_a_planted_difference_writes_json_and_html(tmp_path: Path) -> None:
    config, exposures, events = synthetic_experiments(
        range(5, 6), customers=3000, conversion=(0.04, 0.10), ctr=(0.2, 0.3)
    )
    report, _ = build_report(
        exposures, events, config, attribution_hours=24, options=ReportOptions(n_boot=300)
    )
    section = report["experiments"]["aa-5"]
    assert section["control"] == "control" and section["srm"]["checked"]
    assert not section["srm"]["mismatch"]
    assert report["exposures_total"] == len(exposures.frame)
    assert sum(v["exposures"] for v in section["variants"].values()) == len(exposures.frame)
    assert sum(v["customers"] for v in section["variants"].values()) == section["customers"]
    compared = section["comparisons"]["treatment"]
    for metric in ("ctr", "conversion", "customers_converting", "revenue_per_exposure"):
        assert compared[metric]["significant"] and compared[metric]["difference"] > 0, metric
    assert set(section["segments"]) == {"segment 0", "segment 1"}
    assert set(section["churn_bands"]) == {"low", "medium", "high", "(not scored)"}
    assert set(section["clv_bands"]) == {"low", "mid", "high", "(not scored)"}
    for key in ("segments", "churn_bands", "clv_bands"):
        groups = section[key].values()
        assert sum(g["exposures"] for g in groups) == len(exposures.frame), key
        assert all(set(g["variants"]) == {"control", "treatment"} for g in groups), key
    frame = exposures.frame
    high = frame[frame["churn_risk"] >= 0.7]
    assert section["churn_bands"]["high"]["exposures"] == len(high)
    unscored = frame["churn_risk"].isna()
    assert section["clv_bands"]["(not scored)"]["exposures"] == int(unscored.sum())
    assert any("conversion" in line and "significant" in line for line in section["verdict"])

    json_path, html_path = write_report(report, tmp_path / "ab")
    assert json.loads(json_path.read_text())["experiments"]["aa-5"]["control"] == "control"
    page = html_path.read_text()
    # rates; per segment, churn band and CLV band; exposures per day
    assert page.count("data:image/png;base64,") == 5
    assert "Per churn risk band" in page and "Per CLV band" in page
    assert "customers converting" in page

    # Deterministic: the same inputs and seed give the same report, bootstrap included.
    again, _ = build_report(
        exposures, events, config, attribution_hours=24, options=ReportOptions(n_boot=300)
    )
    assert again["experiments"] == report["experiments"]


def test_churn_bands_follow_the_edges_and_keep_unscored_apart() -> None:
    risk = pd.Series([0.0, 0.29, 0.3, 0.69, 0.7, 1.0, np.nan])
    bands = churn_bands(risk, (0.3, 0.7))
    assert bands.tolist() == ["low", "low", "medium", "medium", "high", "high", "(not scored)"]
    assert churn_bands(risk, (0.5, 0.9)).tolist()[3:6] == ["medium", "medium", "high"]


def test_old_exposure_logs_without_customer_value_still_read() -> None:
    old = HANDFUL_EXPOSURES  # written before exposures had churn_risk and clv_band
    table = exposure_table(old).frame
    assert len(table) == len(old)
    assert table["churn_risk"].isna().all()
    assert (table["clv_band"] == "(not scored)").all()


# ---- A/A false positives and power, over seeds ----------------------------------------------
A_A_SEEDS = 200
POWER_SEEDS = 50


@pytest.mark.slow
def test_a_a_tests_are_flagged_no_more_often_than_alpha() -> None:
    config, exposures, events = synthetic_experiments(range(A_A_SEEDS))
    options = ReportOptions(alpha=ALPHA, n_boot=200, segments=False)
    report, _ = build_report(exposures, events, config, attribution_hours=24, options=options)
    sections = report["experiments"].values()
    assert len(sections) == A_A_SEEDS
    flagged = {
        metric: sum(s["comparisons"]["treatment"][metric]["significant"] for s in sections)
        for metric in ("conversion", "ctr", "customers_converting", "revenue_per_exposure")
    }
    rates = {metric: count / A_A_SEEDS for metric, count in flagged.items()}
    # At a true rate of 5%, 200 runs flag more than 16 (8%) with probability ~3%.
    assert all(rate <= 0.08 for rate in rates.values()), rates
    srm = sum(s["srm"]["mismatch"] for s in sections)
    assert srm <= 2, "SRM at p < 0.001 should essentially never fire on a fair split"
    print(f"A/A false-positive rates at alpha {ALPHA} over {A_A_SEEDS} seeds: {rates}")


@pytest.mark.slow
def test_a_planted_conversion_difference_is_detected_in_most_seeds() -> None:
    config, exposures, events = synthetic_experiments(
        range(10_000, 10_000 + POWER_SEEDS), customers=2000, conversion=(0.05, 0.08)
    )
    options = ReportOptions(alpha=ALPHA, n_boot=0, segments=False)
    report, _ = build_report(exposures, events, config, attribution_hours=24, options=options)
    results = [s["comparisons"]["treatment"]["conversion"] for s in report["experiments"].values()]
    assert len(results) == POWER_SEEDS
    power = sum(r["significant"] and r["difference"] > 0 for r in results) / POWER_SEEDS
    # 2,000 customers (~5,000 exposures): the clustered test's power is about 0.95.
    assert power >= 0.8, power
    print(f"power at 5% vs 8% conversion, 2,000 customers: {power:.2f}")


# ---- the simulator's planted tastes, offline ----------------------------------------------
def test_planted_preferences_rebuild_the_generators_customers(tiny: Any, tmp_path: Path) -> None:
    import shutil

    from training.data.synthetic.personas import PERSONA_NAMES
    from training.experiments.simulator import PlantedPreferences, SimulationError

    secret = tiny.settings.pseudonymisation_secret.get_secret_value()
    preferences = PlantedPreferences.from_raw(tiny.raw.directory, secret)
    personas = tiny.personas()
    assert list(preferences.customer_ids) == list(personas.index)  # the clean ids
    assert (np.array(PERSONA_NAMES)[preferences.persona] == personas.to_numpy()).all()
    assert set(tiny.clean("customers")["customer_id"]) <= set(preferences.customer_ids)
    assert np.allclose(preferences.category_pdf.sum(1), 1.0)
    assert preferences.visit_weight.sum() == pytest.approx(1.0)

    # Ground truth from other generator code is refused, not silently mismatched.
    copy = tmp_path / "raw"
    shutil.copytree(tiny.raw.directory, copy)
    truth = pd.read_parquet(copy / "ground_truth.parquet")
    truth["persona"] = truth["persona"].iloc[::-1].to_numpy()
    truth.to_parquet(copy / "ground_truth.parquet")
    with pytest.raises(SimulationError, match="does not reproduce the ground truth"):
        PlantedPreferences.from_raw(copy, secret)
    with pytest.raises(SimulationError, match=r"source\.json"):
        PlantedPreferences.from_raw(tmp_path / "nowhere", secret)


def test_the_choice_model_follows_the_planted_tastes(tiny: Any) -> None:
    from training.experiments.simulator import PlantedPreferences, choose, outcome_events

    secret = tiny.settings.pseudonymisation_secret.get_secret_value()
    preferences = PlantedPreferences.from_raw(tiny.raw.directory, secret)
    catalogue = preferences.catalogue
    customer = int(np.argmax(preferences.category_pdf.max(1)))  # a very focused customer
    favourite = int(np.argmax(preferences.category_pdf[customer]))
    least = int(np.argmin(preferences.category_pdf[customer]))
    liked = list(catalogue.product_ids[catalogue.category == favourite][:10])
    disliked = list(catalogue.product_ids[catalogue.category == least][:10])
    assert (
        preferences.appeal(customer, liked).mean()
        > 5 * preferences.appeal(customer, disliked).mean()
    )
    assert preferences.appeal(customer, ["P-UNKNOWN"]).tolist() == [0.0]

    def clicks(items: list[str]) -> int:
        rng = np.random.default_rng(0)
        return sum(len(choose(preferences, customer, items, rng).clicked) for _ in range(300))

    assert clicks(liked) > 3 * clicks(disliked)
    # Seeded: the same draws give the same choice; the events carry stable ids.
    first = choose(preferences, customer, liked, np.random.default_rng(5))
    assert first == choose(preferences, customer, liked, np.random.default_rng(5))
    events = outcome_events("c_x", first, visit_key="sim-1-0", session_id="s")
    assert len(events) == len(first.clicked) + len(first.carted) + len(first.bought)
    assert len({e["event_id"] for e in events}) == len(events)
    assert all("ts" not in e for e in events), "the service's clock stamps outcomes"
    assert all(e["price"] > 0 for e in events if e["type"] == "purchase")


# ---- the whole loop through a real service ------------------------------------------------
SIMULATED_VISITS = 1200
EXPERIMENTS_YAML = """\
version: "simulated-1"
experiments:
  - name: blend-vs-popularity
    salt: simulated-blend-vs-popularity
    placements: [home]
    variants:
      - {name: blend, weight: 1, model: blend}
      - {name: popularity, weight: 1, model: popularity}
"""


@pytest.mark.slow
@pytest.mark.integration
def test_simulated_experiment_through_the_live_service(
    trained_small: tuple[Settings, Any], tmp_path: Path
) -> None:
    """Assignment, exposure log, outcomes through /events and the report, end to end:
    the simulator's planted tastes favour what the blend shows over plain popularity."""
    from segrec.service_process import bentoml_command, running_on_free_port
    from tests.conftest import serving_workspace
    from training.experiments.report import run_ab_report
    from training.experiments.simulator import PlantedPreferences, simulate

    trained, run = trained_small
    assert run.export is not None
    settings = serving_workspace(trained, tmp_path, Path(run.export.bundle_dir))
    experiments_file = tmp_path / "experiments.yaml"
    experiments_file.write_text(EXPERIMENTS_YAML)
    env = {
        "SEGREC_DATA_DIR": str(settings.data_dir),
        "SEGREC_FEAST_REPO": str(trained.feast_repo),
        "SEGREC_EXPERIMENTS_FILE": str(experiments_file),
        # The synthetic history ends on 2026-10-31: replay it as if it were live.
        "SEGREC_FEATURE_CLOCK": "data",
        "SEGREC_SERVING_TIMEOUT_MS": "500",  # a busy 2-core CI box
        "BENTOML_HOME": str(tmp_path / "bentoml_home"),
    }
    preferences = PlantedPreferences.from_raw(
        trained.raw_dir / "synthetic", trained.pseudonymisation_secret.get_secret_value()
    )
    # A busy 2-core box can take minutes to import BentoML, Feast and the bundle.
    with running_on_free_port(
        lambda port: bentoml_command("serving.service:Segrec", port),
        tmp_path / "server.log",
        env,
        ready_timeout=300,
    ) as service:
        result = simulate(
            service.url, preferences, visits=SIMULATED_VISITS, seed=7, workers=4, progress=False
        )
    assert result.recommend_errors == 0 and result.events_rejected == 0, result.errors
    assert result.events_accepted == result.events_posted > 0

    report_settings = settings.model_copy(
        update={"experiments_file": experiments_file, "reports_dir": tmp_path / "reports"}
    )
    report, json_path, html_path = run_ab_report(report_settings, ReportOptions(n_boot=500))
    assert json_path.exists() and html_path.exists()
    section = report["experiments"]["blend-vs-popularity"]
    summary = result.summary()
    print(json.dumps({"simulator": summary, "verdict": section["verdict"]}, indent=1))

    # Every exposure the service answered with is in the log, once, and in the report.
    assert report["logs"]["exposures"]["bad"] == 0 == report["logs"]["exposures"]["duplicates"]
    assert report["exposures_total"] == result.total_exposures > SIMULATED_VISITS * 0.8
    for variant in ("blend", "popularity"):
        figures = section["variants"][variant]
        key = ("blend-vs-popularity", variant)
        assert figures["exposures"] == result.exposures[key]
        assert figures["customers"] == len(result.customers[key])
        # Each click lands on the carousel that showed it: outcomes are posted before
        # the customer's next visit, within seconds of the exposure.
        assert figures["clicks"] == result.clicks[key]
        assert figures["purchases"] == result.purchases[key]
        assert figures["revenue"] == pytest.approx(result.revenue[key], abs=0.01)
    assert report["logs"]["events"]["bad"] == 0
    in_experiment = sum(
        counter[key]
        for counter in (result.clicks, result.carts, result.purchases)
        for key in result.exposures
    )
    # Outcomes of visits outside the experiment (no consent) are the only ones left over.
    assert report["attribution"]["attributed"] == in_experiment

    srm = section["srm"]
    assert srm["checked"] and not srm["mismatch"], srm
    blend_wins = section["comparisons"]["popularity"]
    # Popularity is the treatment here (the control is the first variant, the blend):
    # it must lose clearly on clicks and on purchases.
    for metric in ("ctr", "conversion", "customers_converting", "revenue_per_exposure"):
        assert blend_wins[metric]["difference"] < 0, metric
        assert blend_wins[metric]["significant"], (metric, blend_wins[metric])


def test_a_resample_without_denominator_has_no_ratio() -> None:
    # Most resamples of three customers hold the one with a denominator; some do not.
    numerator, denominator = np.array([1.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an infinite draw used to make NaN bounds, warning
        ratio = bootstrap_ratio_interval(numerator, denominator, n_boot=500, random_state=0)
    assert ratio.estimate == 3.0
    assert np.isfinite([ratio.low, ratio.high]).all() and 1.0 <= ratio.low <= ratio.high <= 3.0
