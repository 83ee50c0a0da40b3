"""Tactics and experiments in a real `bentoml serve` process: rules fire and show in the
answer, variants are assigned and logged as exposures, and the files reload safely."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from segrec.experiments import load_experiments, read_exposures
from segrec.settings import Settings
from tests.conftest import new_serving_workspace, serve_workspace
from tests.test_serving_http import _call, _post
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Server:
    url: str
    settings: Settings
    tactics: Path
    experiments: Path
    customers: pd.DataFrame  # customer_id, segment_id, segment_name
    products: pd.DataFrame


def _tactics(segment_name: str, category: str, extra: list[dict[str, Any]] | None = None) -> str:
    rules = [
        {
            "id": "segment-offer",
            "priority": 10,
            "when": {"segment_name": segment_name, "placement": ["home"]},
            "then": {
                "offer": "segment-special",
                "slot": "hero",
                "filter": {"categories": [category]},
            },
        },
        {
            "id": "cart-page-tips",
            "priority": 20,
            "when": {"placement": "cart"},
            "then": {"message": "basket-tips"},
        },
        *(extra or []),
    ]
    return yaml.safe_dump({"version": "test-1", "rule_sets": {"default": rules, "none": []}})


# Churn and CLV rules: the trained fixture has no customer value, so they only fire for
# customers whose customer_value rows a test writes to the online store.
VALUE_RULES: list[dict[str, Any]] = [
    {
        "id": "churn-winback",
        "priority": 30,
        "when": {"churn_risk": {"gte": 0.7}},
        "then": {"offer": "winback-15", "channel": "email"},
    },
    {
        "id": "high-value-concierge",
        "priority": 40,
        "when": {"clv_band": "high", "placement": ["home"]},
        "then": {"slot": "concierge"},
    },
]

EXPERIMENTS = """
version: exp-1
experiments:
  - name: blend-vs-popularity
    salt: test-salt
    placements: [home, email]
    variants:
      - {name: blend, model: blend}
      - {name: popularity, model: popularity, rule_set: none}
"""


def _wait_for(check: Any, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(
    trained_small: tuple[Settings, TrainingRun], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    trained, _ = trained_small
    root, settings = new_serving_workspace(trained_small, tmp_path_factory, "tactics_serving")
    customers = pd.read_parquet(settings.features_dir / "customer_segments.parquet")
    customers = customers[customers["event_timestamp"] == customers["event_timestamp"].max()]
    products = pd.read_parquet(trained.clean_dir / "products.parquet")
    tactics, experiments = root / "tactics.yaml", root / "experiments.yaml"
    segment_name = str(customers["segment_name"].value_counts().index[0])
    tactics.write_text(_tactics(segment_name, str(products["category"].mode()[0]), VALUE_RULES))
    experiments.write_text(EXPERIMENTS)
    env = {
        "SEGREC_TACTICS_FILE": str(tactics),
        "SEGREC_EXPERIMENTS_FILE": str(experiments),
        "SEGREC_CONFIG_POLL_SECONDS": "0.3",
    }
    with serve_workspace(settings, trained, root, env) as url:
        yield Server(url, settings, tactics, experiments, customers, products)


def _variant_customers(server: Server, variant: str, segment: str | None = None) -> list[str]:
    experiment = load_experiments(server.experiments).experiments[0]
    rows = server.customers
    if segment is not None:
        rows = rows[rows["segment_name"] == segment]
    return [c for c in rows["customer_id"] if experiment.assign(c) == variant]


def test_a_rule_fires_and_shows_in_the_answer(server: Server) -> None:
    products = server.products
    category_of = dict(zip(products["product_id"], products["category"], strict=True))
    segment = str(server.customers["segment_name"].value_counts().index[0])
    customer = _variant_customers(server, "blend", segment)[0]
    status, body = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 8})
    assert status == 200, body
    assert body["segment"]["name"] == segment
    assert body["tactics"] == {
        "rules": ["segment-offer"],
        "offer": "segment-special",
        "slot": "hero",
    }
    assert len({category_of[i["product_id"]] for i in body["items"]}) == 1  # the filter
    assert body["experiment"] == {"name": "blend-vs-popularity", "variant": "blend"}
    # The cart page meets the placement rule, and no experiment (home and email only).
    status, cart = _post(
        f"{server.url}/recommend", {"customer_id": customer, "k": 5, "placement": "cart"}
    )
    assert cart["tactics"] == {"rules": ["cart-page-tips"], "message": "basket-tips"}
    assert cart["experiment"] is None


def test_the_popularity_variant_serves_popularity_without_tactics(server: Server) -> None:
    segment = str(server.customers["segment_name"].value_counts().index[0])
    customer = _variant_customers(server, "popularity", segment)[0]
    status, body = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 6})
    assert status == 200
    assert body["experiment"]["variant"] == "popularity"
    assert body["tactics"] == {"rules": []}  # its rule set is "none"
    assert all(set(i["contributions"]) == {"popularity"} for i in body["items"])


def test_every_answer_in_an_experiment_is_logged_as_an_exposure(server: Server) -> None:
    customers = list(server.customers["customer_id"].iloc[:20])
    answers = {}
    for customer in customers:
        answers[customer] = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 4})[1]
    status, batch = _post(
        f"{server.url}/recommend/batch",
        {"requests": [{"customer_id": c, "k": 3, "placement": "email"} for c in customers[:5]]},
    )
    assert status == 200 and len(batch["results"]) == 5

    def logged() -> list[dict[str, Any]]:
        lines = list(read_exposures(server.settings.exposure_log_dir))
        assert all(line.ok for line in lines), [line.error for line in lines if not line.ok]
        return [line.record for line in lines if line.record]

    records = _wait_for(lambda: [r for r in logged() if r["customer_id"] in answers])
    home = {r["customer_id"]: r for r in records if r["placement"] == "home"}
    for customer, answer in answers.items():
        assert home[customer]["variant"] == answer["experiment"]["variant"]
        assert home[customer]["items"] == [i["product_id"] for i in answer["items"]]
        assert home[customer]["config_version"] == "exp-1"
    emails = [r for r in records if r["placement"] == "email"]
    assert len(emails) >= 5
    assert {r["variant"] for r in records} == {"blend", "popularity"}


def test_tactics_reload_when_the_file_changes_and_a_bad_file_is_refused(server: Server) -> None:
    original = server.tactics.read_text()
    customer = _variant_customers(server, "blend")[0]

    def cart_rules() -> list[str]:
        body = _post(
            f"{server.url}/recommend", {"customer_id": customer, "k": 3, "placement": "cart"}
        )[1]
        return list(body["tactics"]["rules"])

    try:
        document = yaml.safe_load(original)
        document["version"] = "test-2"
        document["rule_sets"]["default"].append(
            {
                "id": "cart-cross-sell",
                "priority": 30,
                "when": {"placement": "cart"},
                "then": {"slot": "cross-sell"},
            }
        )
        server.tactics.write_text(yaml.safe_dump(document))
        assert _wait_for(lambda: "cart-cross-sell" in cart_rules()), "new rule never applied"
        # An invalid change: refused, and the last good rules keep serving.
        document["rule_sets"]["default"].append(
            {"id": "broken", "priority": 40, "when": {"shoe_size": 42}, "then": {"offer": "x"}}
        )
        server.tactics.write_text(yaml.safe_dump(document))

        def refused() -> bool:
            _, text = _call(f"{server.url}/metrics", method="GET")
            return 'segrec_config_reloads_total{outcome="rejected"}' in str(text)

        assert _wait_for(refused), "the invalid file was not refused"
        assert cart_rules() == ["cart-page-tips", "cart-cross-sell"]
    finally:
        server.tactics.write_text(original)
    assert _wait_for(lambda: cart_rules() == ["cart-page-tips"])


def test_churn_and_clv_rules_fire_from_features_in_the_online_store(server: Server) -> None:
    """The churn model's output reaches the carousel: customer_value rows written to the
    online store (as ``make train`` materialises them) fire the value rules on the next
    request, show in the answer and in the exposure log the A/B report breaks down by."""
    from segrec.feature_store import open_store

    # Outside the segment the segment-offer rule targets (the first rule setting an offer
    # wins), and from the end of the list: other tests use the first customers.
    offered = str(server.customers["segment_name"].value_counts().index[0])
    others = set(server.customers.loc[server.customers["segment_name"] != offered, "customer_id"])
    at_risk, loyal, plain_customer = [
        c for c in _variant_customers(server, "blend") if c in others
    ][-3:]
    as_of = server.customers["event_timestamp"].max()
    open_store(server.settings).write_to_online_store(
        "customer_value",
        pd.DataFrame(
            {
                "customer_id": [at_risk, loyal],
                "event_timestamp": [as_of, as_of],
                "churn_risk": [0.83, 0.12],
                "clv_expected": [40.0, 900.0],
                "clv_band": ["low", "high"],
                "value_model_version": ["value-test", "value-test"],
            }
        ),
    )
    answers = {
        c: _post(f"{server.url}/recommend", {"customer_id": c, "k": 4})[1] for c in (at_risk, loyal)
    }
    assert "churn-winback" in answers[at_risk]["tactics"]["rules"], answers[at_risk]["tactics"]
    assert answers[at_risk]["tactics"]["offer"] == "winback-15"
    assert answers[at_risk]["tactics"]["channel"] == "email"
    assert "high-value-concierge" not in answers[at_risk]["tactics"]["rules"]
    assert answers[at_risk]["customer_value"] == {
        "churn_risk": 0.83,
        "clv_band": "low",
        "clv_expected": 40.0,
    }
    assert "churn-winback" not in answers[loyal]["tactics"]["rules"]
    assert "high-value-concierge" in answers[loyal]["tactics"]["rules"]
    assert answers[loyal]["tactics"]["slot"] == "concierge"
    status, segment = _post(f"{server.url}/segment", {"customer_id": loyal})
    assert status == 200 and segment["customer_value"]["clv_band"] == "high"
    # Without value rows: no value rules, and no customer_value in the answer.
    plain = _post(f"{server.url}/recommend", {"customer_id": plain_customer, "k": 4})[1]
    assert plain["customer_value"] is None
    assert not {"churn-winback", "high-value-concierge"} & set(plain["tactics"]["rules"])

    def logged() -> dict[str, dict[str, Any]]:
        records = [line.record for line in read_exposures(server.settings.exposure_log_dir)]
        return {r["customer_id"]: r for r in records if r and r["customer_id"] in answers}

    exposures = _wait_for(lambda: len(logged()) == 2 and logged())
    assert exposures[at_risk]["churn_risk"] == 0.83 and exposures[at_risk]["clv_band"] == "low"
    assert exposures[loyal]["clv_band"] == "high"
