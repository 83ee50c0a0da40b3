"""Each evaluation window ranks the catalogue of its own time: products launched after the
window are no candidates (they would fill new-arrival lists with products nobody could
buy yet), products launched inside it are (with no interactions), and the bundle ships
only products on sale."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.evaluation.protocols import temporal_protocol
from training.models.interactions import Interactions
from training.models.new_arrivals import NewArrivals
from training.models.popularity import Popularity
from training.train.pipeline import on_sale, with_launch_dates
from training.train.stacks import EXCLUDED, score_stack

T = pd.Timestamp("2026-03-01", tz="UTC")


def _events() -> pd.DataFrame:
    # P1 sells from January; P2 launches mid-February; P3 in the first (validation) window,
    # P4 in the last (test) window.
    rows = [
        ("a", "P1", "2026-01-05", "purchase"),
        ("b", "P1", "2026-01-20", "view"),
        ("a", "P2", "2026-02-16", "view"),
        ("b", "P3", "2026-02-23", "purchase"),
        ("a", "P4", "2026-03-05", "purchase"),
        ("b", "P1", "2026-03-07", "purchase"),
    ]
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "product_id": [r[1] for r in rows],
            "ts": pd.to_datetime([r[2] for r in rows], utc=True),
            "type": [r[3] for r in rows],
            "value": [None] * len(rows),
        }
    )


def _products(launch: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": ["P1", "P2", "P3", "P4", "P5"],
            "category": ["toys"] * 5,
            "launch_ts": pd.to_datetime(launch, utc=True),
        }
    )


def test_products_launched_after_the_catalogue_time_are_not_listed() -> None:
    products = _products(["2026-01-01", "2026-02-15", "2026-02-20", "2026-03-04", None])
    events = _events()
    before = events[events["ts"] <= T]
    data = Interactions.from_events(
        before, products=products, reference_time=T, catalogue_time=T + pd.Timedelta(days=1)
    )
    # P4 launches three days after the catalogue time; P5 has no date, so it is listed.
    assert data.listed.tolist() == [True, True, True, False, True]
    default = Interactions.from_events(before, products=products, reference_time=T)
    assert default.listed.tolist() == [True, True, True, False, True]
    later = Interactions.from_events(
        before, products=products, reference_time=T, catalogue_time="2026-03-10"
    )
    assert later.listed.all()
    assert (
        Interactions.from_events(before, products=products.drop(columns="launch_ts")).listed is None
    )


def test_every_model_excludes_unlisted_products_and_scales_among_the_listed() -> None:
    products = _products(["2026-01-01", "2026-02-15", "2026-02-20", "2026-03-04", "2026-03-20"])
    events = _events()
    data = Interactions.from_events(
        events[events["ts"] <= T],
        products=products,
        reference_time=T,
        catalogue_time="2026-03-10",
    )
    models = {"popularity": Popularity().fit(data), "new_arrivals": NewArrivals().fit(data)}
    stack = score_stack(models, data, np.array([0, 1, -1]))
    assert (stack[:, :, 4] == EXCLUDED).all()  # P5 launches after the catalogue time
    listed = stack[:, :, :4]
    # Min-max among the listed items: each model's best listed item scores 1.
    assert np.allclose(listed.max(axis=2), 1.0)
    assert (listed >= 0).all()
    # P4 launches inside the window: listed, never touched, the freshest product.
    assert stack[2, 1, 3] == 1.0


def test_the_evaluation_catalogue_is_taken_at_the_end_of_each_window() -> None:
    events = _events()
    split = temporal_protocol(events, test_days=7, validation_days=14)
    assert split.test.catalogue_time == events["ts"].max()
    assert (
        split.validation.catalogue_time
        == events[events["ts"] <= split.test.reference_time]["ts"].max()
    )
    products = _products(["2026-01-01", "2026-02-15", "2026-02-20", "2026-03-04", None])
    side = split.validation
    data = Interactions.from_events(
        side.train,
        products=products,
        reference_time=side.reference_time,
        catalogue_time=side.catalogue_time,
    )
    # Validation sees P3 (launched in its window) but not P4 (launched in the test window).
    assert data.listed.tolist() == [True, True, True, False, True]


def test_missing_launch_dates_are_filled_with_the_first_event() -> None:
    events = _events()
    dated = with_launch_dates(_products(["2026-01-01", None, None, None, None]), events)
    assert dated["launch_ts"].tolist()[:4] == list(
        pd.to_datetime(["2026-01-01", "2026-02-16", "2026-02-23", "2026-03-05"], utc=True)
    )
    assert pd.isna(dated["launch_ts"].iloc[4])  # never seen, no date: always listed
    undated = with_launch_dates(_products([None] * 5).drop(columns="launch_ts"), events)
    assert undated["launch_ts"].iloc[0] == pd.Timestamp("2026-01-05", tz="UTC")


def test_the_bundle_ships_only_products_on_sale() -> None:
    products = _products(["2026-01-01", "2026-02-15", "2026-02-20", "2026-03-20", None])
    assert on_sale(products, pd.Timestamp("2026-03-07", tz="UTC"))["product_id"].tolist() == [
        "P1",
        "P2",
        "P3",
        "P5",
    ]
