"""Tactics rules: conditions, order, boosts and filters, and every load-time error, on a
six-item catalogue whose right answers are worked out by hand."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from segrec.settings import PROJECT_ROOT
from serving.tactics import Catalogue, TacticsError, compile_tactics, load_tactics

# Items 0..5: categories books, books, garden, garden, toys, toys; bands low, high, ...
CATALOGUE = Catalogue(
    category_names=["books", "garden", "toys"],
    item_category=np.array([0, 0, 1, 1, 2, 2]),
    item_price_band=np.array([0, 2, 0, 2, 1, 2]),
    model_names=["popularity", "als", "content"],
    segment_names=["Loyal high-value", "Bargain hunters"],
)
LOYAL = {"placement": "home", "known_customer": True, "segment_name": "Loyal high-value"}


def rules(*rule_list: dict[str, Any], **sets: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": "t1", "rule_sets": {"default": list(rule_list), **sets}}


def rule(rule_id: str, priority: int, when: dict[str, Any], **then: Any) -> dict[str, Any]:
    return {"id": rule_id, "priority": priority, "when": when, "then": then}


def compiled(*rule_list: dict[str, Any]) -> Any:
    return compile_tactics(rules(*rule_list), CATALOGUE)


def test_the_shipped_tactics_file_compiles_and_names_its_rules() -> None:
    tactics = load_tactics(PROJECT_ROOT / "serving" / "config" / "tactics.yaml", CATALOGUE)
    assert tactics.version
    assert "abandoned-cart-nudge" in [r.id for r in tactics.rule_sets["default"].rules]
    assert tactics.rule_sets["none"].rules == ()


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        ({"eq": 3}, 3, True),
        (3, 3.0, True),
        ({"ne": 3}, 4, True),
        ({"ne": 3}, None, False),  # unknown never matches
        ([1, 2], 2, True),
        ({"not_in": [1, 2]}, 2, False),
        ({"gt": 0.5}, 0.5, False),
        ({"gte": 0.5}, 0.5, True),
        ({"lt": 0.5}, 0.4, True),
        ({"between": [15, 120]}, 120, True),
        ({"between": [15, 120]}, 121, False),
        ({"gte": 0.1, "lte": 0.2}, 0.15, True),
        ({"exists": True}, 0.0, True),
        ({"exists": False}, None, True),
        ({"exists": False}, 0.2, False),
        ({"gte": 0.1}, float("nan"), False),
    ],
)
def test_number_conditions(condition: Any, value: Any, expected: bool) -> None:
    tactics = compiled(rule("r", 1, {"churn_risk": condition}, offer="o"))
    facts = {**LOYAL, "churn_risk": value}
    assert bool(tactics.evaluate(facts, personal=True).rules) is expected


def test_text_and_flag_conditions() -> None:
    tactics = compiled(
        rule("stage", 1, {"lifecycle_stage": ["Lapsed", "Churned"]}, message="m"),
        rule("live", 2, {"live_session": True, "placement": "cart"}, slot="s"),
    )
    assert tactics.evaluate({"lifecycle_stage": "Lapsed"}, personal=True).rules == ("stage",)
    assert tactics.evaluate({"lifecycle_stage": "Active"}, personal=True).rules == ()
    both = tactics.evaluate(
        {"lifecycle_stage": "Churned", "live_session": True, "placement": "cart"}, personal=True
    )
    assert both.rules == ("stage", "live")
    assert both.as_json() == {"rules": ["stage", "live"], "message": "m", "slot": "s"}


def test_priority_order_first_output_wins_boosts_add_filters_all_hold() -> None:
    tactics = compiled(
        # Listed out of order on purpose: priority decides, not file position.
        rule(
            "late",
            20,
            {"placement": "home"},
            offer="late-offer",
            channel="email",
            boost={"price_bands": ["high"], "weight": 0.2},
            filter={"exclude_categories": ["toys"]},
        ),
        rule(
            "early",
            10,
            {"segment_name": "Loyal high-value"},
            offer="early-offer",
            boost={"categories": ["books"], "weight": 0.1},
            filter={"categories": ["books", "toys"]},
        ),
    )
    applied = tactics.evaluate(LOYAL, personal=True)
    assert applied.rules == ("early", "late")
    assert applied.outputs == {"offer": "early-offer", "channel": "email"}
    # books +0.1 (items 0, 1); high band +0.2 (items 1, 3, 5).
    assert applied.boost is not None
    np.testing.assert_allclose(applied.boost, [0.1, 0.3, 0.0, 0.2, 0.0, 0.2])
    # books or toys, and not toys: books only.
    assert applied.filter is not None
    assert applied.filter.tolist() == [True, True, False, False, False, False]


def test_a_customer_without_consent_meets_only_rules_about_the_page() -> None:
    tactics = compiled(
        rule("page", 1, {"placement": "cart"}, message="basket-tips"),
        rule("person", 2, {"churn_risk": {"exists": False}}, offer="hello"),
    )
    anonymous = {"placement": "cart", "known_customer": False}
    assert tactics.evaluate(anonymous, personal=False).rules == ("page",)
    assert tactics.evaluate(anonymous, personal=True).rules == ("page", "person")


def test_model_override_and_rule_sets() -> None:
    tactics = compile_tactics(
        rules(
            rule("als-for-loyal", 1, {"segment_name": "Loyal high-value"}, model="als"),
            other=[rule("pop", 1, {"placement": "home"}, model="popularity")],
        ),
        CATALOGUE,
    )
    assert tactics.evaluate(LOYAL, personal=True).model == "als"
    assert tactics.evaluate(LOYAL, personal=True, rule_set="other").model == "popularity"
    assert "model" not in tactics.evaluate(LOYAL, personal=True).as_json()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (rule("r", 1, {"shoe_size": 42}, offer="o"), "unknown feature 'shoe_size'"),
        (rule("r", 1, {"churn_risk": {"about": 1}}, offer="o"), "unknown operator"),
        (rule("r", 1, {"churn_risk": {"gt": "high"}}, offer="o"), "needs a number"),
        (rule("r", 1, {"segment_name": {"gt": 3}}, offer="o"), "needs a number feature"),
        (rule("r", 1, {"lifecycle_stage": "Sleeping"}, offer="o"), "never 'Sleeping'"),
        (rule("r", 1, {"placement": "checkout"}, offer="o"), "never 'checkout'"),
        (rule("r", 1, {"churn_risk": {"gt": 5, "lt": 3}}, offer="o"), "can never hold"),
        (rule("r", 1, {"churn_risk": {"in": [1], "ne": 1}}, offer="o"), "can never hold"),
        (rule("r", 1, {}, channel="pigeon"), "'pigeon' is not one of"),
        (rule("r", 1, {}, model="deep"), "'deep' is not 'blend' nor a model"),
        (rule("r", 1, {}, boost={"categories": ["shoes"], "weight": 0.1}), "unknown categories"),
        (rule("r", 1, {}, boost={"categories": ["books"]}), "weight: expected a number"),
        (rule("r", 1, {}, boost={"categories": ["books"], "weight": 3}), "in (0, 1]"),
        (rule("r", 1, {}, filter={"price_bands": ["cheap"]}), "price_bands: expected some"),
        (rule("r", 1, {}, filter={"categories": ["books"], "price_bands": ["mid"]}), "selects no"),
        (rule("r", 1, {}, filter={"categories": ["books"], "weight": 1}), "has no weight"),
        (rule("r", 1, {}, discount=5), "unknown keys ['discount']"),
        ({"id": "r", "priority": "high", "then": {"offer": "o"}}, "priority: expected an integer"),
        ({"priority": 1, "then": {"offer": "o"}}, "needs an id"),
    ],
)
def test_load_errors_say_what_and_where(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(TacticsError) as error:
        compiled(bad)
    assert message in str(error.value)
    assert "rule_sets.default[0]" in str(error.value)


def test_a_rule_shadowed_by_an_earlier_broader_one_is_unreachable() -> None:
    with pytest.raises(TacticsError, match=r"'narrow' is unreachable: \['broad'\]"):
        compiled(
            rule("broad", 1, {"churn_risk": {"gte": 0.5}}, offer="a"),
            rule("narrow", 2, {"churn_risk": {"gte": 0.8}, "placement": "home"}, offer="b"),
        )
    # A narrower rule that also boosts still changes something: allowed.
    compiled(
        rule("broad", 1, {"churn_risk": {"gte": 0.5}}, offer="a"),
        rule(
            "narrow",
            2,
            {"churn_risk": {"gte": 0.8}},
            offer="b",
            boost={"price_bands": ["low"], "weight": 0.1},
        ),
    )


def test_equal_priorities_conflict_only_when_both_can_match_and_set_the_same_output() -> None:
    with pytest.raises(TacticsError, match="both have priority 5"):
        compiled(
            rule("a", 5, {"churn_risk": {"gte": 0.5}}, offer="x"),
            rule("b", 5, {"churn_risk": {"lte": 0.7}}, offer="y"),
        )
    compiled(  # disjoint conditions
        rule("a", 5, {"churn_risk": {"gt": 0.7}}, offer="x"),
        rule("b", 5, {"churn_risk": {"lte": 0.7}}, offer="y"),
    )
    compiled(  # different outputs
        rule("a", 5, {"churn_risk": {"gte": 0.5}}, offer="x"),
        rule("b", 5, {"churn_risk": {"lte": 0.7}}, message="y"),
    )


def test_file_level_errors_and_inactive_segment_rules(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "t.yaml"
    bad_yaml.write_text("version: [unclosed\n")
    with pytest.raises(TacticsError, match="not valid YAML"):
        load_tactics(bad_yaml, CATALOGUE)
    with pytest.raises(TacticsError, match="default_rule_set 'main' is not one of"):
        compile_tactics(
            {"version": 1, "default_rule_set": "main", "rule_sets": {"a": []}}, CATALOGUE
        )
    with pytest.raises(TacticsError, match="rule ids repeat"):
        compiled(rule("r", 1, {}, offer="a"), rule("r", 2, {}, message="b"))
    tactics = compiled(
        rule("gone", 1, {"segment_name": "Premium shoppers"}, offer="o"),
        rule("void", 2, {}, boost={"categories": ["books"], "price_bands": ["mid"], "weight": 1}),
    )
    assert tactics.inactive == ("default/gone", "default/void")
    assert load_tactics(tmp_path / "missing.yaml", CATALOGUE).rule_sets["default"].rules == ()


def test_rules_evaluate_in_microseconds() -> None:
    """Not a timing assertion (the machine is shared): prints the cost for the notes and
    checks only that a thousand evaluations are far from a millisecond each."""
    document = yaml.safe_load((PROJECT_ROOT / "serving/config/tactics.yaml").read_text())
    tactics = compile_tactics(document, CATALOGUE)
    facts = {
        **LOYAL,
        "churn_risk": 0.8,
        "discount_affinity": 0.4,
        "cart_items": 1,
        "minutes_since_last_event": 20.0,
        "lifecycle_stage": "Active",
        "clv_band": "high",
    }
    started = time.perf_counter()
    for _ in range(1000):
        tactics.evaluate(facts, personal=True)
    per_call = (time.perf_counter() - started) / 1000
    print(f"tactics evaluation: {per_call * 1e6:.1f} µs per request")
    assert per_call < 1e-3
