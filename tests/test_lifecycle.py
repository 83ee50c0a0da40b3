"""Lifecycle rules on hand-picked customers, and against the planted personas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segrec.lifecycle import LifecycleRules
from tests.conftest import Dataset

RULES = LifecycleRules()


@pytest.mark.parametrize(
    ("tenure", "idle", "orders", "stage"),
    [
        (30, 2, 0, "New"),  # new wins even when active
        (30, None, 0, "New"),
        (900, 400, 12, "Churned"),  # many orders long ago
        (500, None, 0, "Churned"),  # registered long ago, never active
        (300, 200, 3, "Lapsed"),
        (200, None, 0, "Lapsed"),  # never active, not yet churned
        (700, 10, 5, "Loyal"),
        (700, 119, 9, "Loyal"),
        (700, 10, 4, "Active"),
        (61, 121, 0, "Lapsed"),
    ],
)
def test_rules_first_match_wins(tenure: float, idle: float | None, orders: int, stage: str) -> None:
    assert RULES.assign_one(tenure, idle, orders) == stage


def test_arrays_and_scalars_agree() -> None:
    tenure, idle, orders = (
        np.array([30.0, 900, 700]),
        np.array([2.0, 400, 10]),
        np.array([0, 12, 5]),
    )
    assert RULES.assign(tenure, idle, orders).tolist() == ["New", "Churned", "Loyal"]


@pytest.mark.slow
def test_stages_match_the_planted_personas(small: Dataset) -> None:
    from training.features.customer import customer_features
    from training.features.inputs import load_inputs

    inputs = load_inputs(small.settings.clean_dir)
    features = customer_features(inputs, inputs.end).set_index("customer_id")
    stages = pd.Series(
        RULES.assign(
            features["tenure_days"], features["days_since_last_event"], features["frequency"]
        ),
        index=features.index,
    )
    persona = small.personas()
    share = pd.crosstab(persona.reindex(stages.index), stages, normalize="index")
    assert share.loc["new", "New"] > 0.9
    # Lapsed customers stopped 180-360 days before the end.
    assert share.loc["lapsed", ["Lapsed", "Churned"]].sum() > 0.9
    assert share.loc["loyal_high_value", ["Loyal", "Active"]].sum() > 0.8
    assert share.loc["loyal_high_value", "Loyal"] > share.loc["occasional", "Loyal"] * 3
