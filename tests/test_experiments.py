"""Experiments: configuration errors, deterministic assignment and the exposure log."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segrec.experiments import (
    ExperimentConfigError,
    Exposure,
    ExposureLog,
    load_experiments,
    parse_experiments,
    read_exposures,
    unit_hash,
)
from segrec.settings import PROJECT_ROOT
from serving.personalisation import PersonalisationError, load_personalisation
from serving.tactics import Catalogue

NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
IDS = [f"c_{hashlib.sha256(str(i).encode()).hexdigest()[:16]}" for i in range(20_000)]


def experiment(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "e1",
        "salt": "s1",
        "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}],
        **overrides,
    }


def config(*experiments: dict[str, Any]) -> Any:
    return parse_experiments({"version": "v1", "experiments": list(experiments)})


def test_assignment_is_deterministic_and_follows_the_weights() -> None:
    first = config(experiment()).experiments[0]
    again = config(experiment()).experiments[0]  # another pod, another restart
    variants = [first.assign(c) for c in IDS]
    assert variants == [again.assign(c) for c in IDS]
    counts = Counter(variants)
    # 1:3 weights: b's share within 3 standard errors of 0.75.
    assert abs(counts["b"] / len(IDS) - 0.75) < 3 * np.sqrt(0.75 * 0.25 / len(IDS))
    resalted = config(experiment(salt="s2")).experiments[0]
    moved = np.mean([resalted.assign(c) != v for c, v in zip(IDS, variants, strict=True)])
    assert 0.25 < moved < 0.5  # a new salt reshuffles (expected 2 * 0.25 * 0.75 = 0.375)


def test_traffic_share_leaves_the_rest_outside() -> None:
    partial = config(experiment(traffic=0.2)).experiments[0]
    inside = [partial.assign(c) is not None for c in IDS]
    assert abs(np.mean(inside) - 0.2) < 0.015
    assert 0.0 <= unit_hash("s", "c_0") < 1.0


def test_windows_placements_and_segments() -> None:
    e = config(
        experiment(
            start="2026-11-01T00:00:00Z",
            stop="2026-12-01T00:00:00Z",
            placements=["home"],
            segments=["Bargain hunters", 7],
        )
    ).experiments[0]
    assert e.running(NOW) and not e.running(NOW + dt.timedelta(days=30))
    assert e.targets("home", 3, "Bargain hunters") and e.targets("home", 7, "Other")
    assert not e.targets("cart", 3, "Bargain hunters") and not e.targets("home", 1, "Other")
    assert e.shares() == {"a": 0.25, "b": 0.75}


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        ([experiment(variants=[{"name": "a"}])], "at least 2"),
        ([experiment(variants=[{"name": "a"}, {"name": "a"}])], "variant names repeat"),
        ([experiment(placements=["checkout"])], "unknown placements ['checkout']"),
        ([experiment(traffic=1.5)], "traffic"),
        ([experiment(start="2026-11-02T00:00:00")], "needs a time zone"),
        (
            [experiment(start="2026-11-02T00:00:00Z", stop="2026-11-01T00:00:00Z")],
            "is not after start",
        ),
        ([experiment(), experiment()], "experiment names repeat"),
        ([experiment(), experiment(name="e2")], "'e1' and 'e2' overlap on placements"),
        ([experiment(colour="red")], "colour"),
    ],
)
def test_configuration_errors_name_the_problem(
    experiments: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ExperimentConfigError) as error:
        config(*experiments)
    assert message in str(error.value)


def test_experiments_that_cannot_meet_may_run_together() -> None:
    config(
        experiment(placements=["home"], segments=["Bargain hunters"]),
        experiment(name="e2", placements=["cart"]),
        experiment(name="e3", placements=["home"], segments=["New customers"]),
    )
    # e3 starts only after e1 stops.
    config(
        experiment(placements=["home"], stop="2027-01-01T00:00:00Z"),
        experiment(name="e3", placements=["home"], start="2027-01-01T00:00:00Z"),
    )


def test_variants_must_fit_the_bundle_and_the_tactics(tmp_path: Path) -> None:
    catalogue = Catalogue(["books"], np.array([0]), np.array([0]), ["popularity", "als"])
    tactics = PROJECT_ROOT / "serving" / "config" / "tactics.yaml"
    file = tmp_path / "experiments.yaml"
    file.write_text(
        "version: v1\nexperiments:\n  - name: e\n    salt: s\n    variants:\n"
        "      - {name: a, model: blend}\n      - {name: b, model: svd}\n"
    )
    with pytest.raises(PersonalisationError, match="model 'svd' is not 'blend' nor a model"):
        load_personalisation(tactics, file, catalogue)
    file.write_text(
        "version: v1\nexperiments:\n  - name: e\n    salt: s\n    variants:\n"
        "      - {name: a, rule_set: default}\n      - {name: b, rule_set: aggressive}\n"
    )
    with pytest.raises(PersonalisationError, match="rule_set 'aggressive' is not in"):
        load_personalisation(tactics, file, catalogue)
    file.write_text(
        "version: v1\nexperiments:\n  - name: e\n    salt: s\n    variants:\n"
        "      - {name: a, rule_set: default}\n      - {name: b, rule_set: none, model: als}\n"
    )
    chosen = load_personalisation(tactics, file, catalogue)
    assignment = chosen.assign(IDS[0], "home", None, NOW)
    assert assignment is not None and assignment.experiment == "e"
    assert load_experiments(tmp_path / "absent.yaml").experiments == ()


def test_the_shipped_experiments_file_is_valid() -> None:
    shipped = load_experiments(PROJECT_ROOT / "serving" / "config" / "experiments.yaml")
    assert shipped.experiments and shipped.version


def test_exposure_log_round_trip(tmp_path: Path) -> None:
    log = ExposureLog(tmp_path, writer_id="pod/1")
    exposure = Exposure(
        customer_id=IDS[0],
        experiment="e1",
        variant="a",
        placement="home",
        items=("P1", "P2"),
        ts=NOW,
        bundle_version="bundle-1",
        config_version="v1",
        segment_id=3,
        segment_name="Bargain hunters",
        rules=("bargain-discount",),
    )
    assert log.append([exposure, exposure]) == 2
    log.close()
    with (tmp_path / "exposures-20261123-pod_1.jsonl").open("a") as handle:
        handle.write('{"truncated": ')
    lines = list(read_exposures(tmp_path))
    assert [line.ok for line in lines] == [True, True, False]
    record = lines[0].record
    assert record is not None
    assert record["items"] == ["P1", "P2"] and record["ts"] == NOW.isoformat()
    assert record["exposure_id"] != lines[1].record["exposure_id"]  # type: ignore[index]
