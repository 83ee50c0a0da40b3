"""The recent history make train writes online for serving."""

from __future__ import annotations

import pandas as pd

from training.models.interactions import Interactions
from training.train.export import recent_history


def _data() -> Interactions:
    events = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c1", "c2"],
            "product_id": ["P1", "P2", "P1", "P3", "P3"],
            "ts": pd.to_datetime(
                ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-03"], utc=True
            ),
            "type": ["view", "purchase", "purchase", "view", "view"],
            "value": [None] * 5,
        }
    )
    return Interactions.from_events(events)


def test_newest_events_first_capped_with_distinct_purchases() -> None:
    history = recent_history(_data(), events=3, purchases=5)
    assert history["history_items"] == [["P3", "P1", "P2"], ["P3"]]
    assert history["history_types"] == [[0, 2, 2], [0]]
    day = 86_400
    assert history["history_unix"][0][0] - history["history_unix"][0][1] == day
    assert history["history_purchases"] == [["P1", "P2"], []]


def test_zero_history_keeps_the_purchases() -> None:
    history = recent_history(_data(), events=0, purchases=1)
    assert history["history_items"] == [[], []]
    assert history["history_purchases"] == [["P1"], []]
