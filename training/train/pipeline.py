"""``make train``: fit the models, fit blend weights per segment on validation, evaluate
everything on the held-out test window (temporal protocol), and report.

Protocol (what production sees): events up to ``validation_cut`` train the models whose
validation scores fit the blend weights; the models are then refitted on everything up
to ``test_cut`` and every ranking (each model, the blend, the baselines) is judged on the
purchases after it. Items a customer interacted with before the cut are excluded from
their ranking in the main figures; the same figures with repeats allowed are reported
beside them, because in retail many purchases are repeats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from segrec.scoring import EVENT_TYPES
from segrec.settings import Settings
from training.evaluation.metrics import mae, rmse
from training.evaluation.protocols import EvaluationSplit, HeldOut, make_split
from training.laps import Laps
from training.models.base import Recommender
from training.models.blend_fit import SegmentBlender
from training.models.interactions import Interactions
from training.train.evaluate import BLEND, RankingResult, evaluate_rankings
from training.train.export import Export, export, filter_rules
from training.train.search import SearchResult, search
from training.train.stacks import (
    COLD_START,
    COLD_START_EVENTS,
    exclude,
    fit_models,
    make_models,
    relevant_mask,
    score_stack,
    seen_mask,
)

SEGMENTS_FILE = "customer_segments.parquet"
REPEAT_MODEL = "buy_again"  # its blend weight is fitted where repeats count
NEW_PRODUCT_MODEL = "new_arrivals"  # gets the validated new-product floor


def blend_groups(data: Interactions, customers: np.ndarray) -> np.ndarray:
    """Each customer's blend group: their segment, or COLD_START with little history (a
    segment's weights are fitted on customers the models know; cold-start customers get
    weights fitted on cold-start customers)."""
    history = np.diff(data.indptr)
    known = customers >= 0
    segment = np.full(len(customers), -1, dtype=np.int64)
    if data.segments is not None:
        segment[known] = data.segments[customers[known]]
    events = np.zeros(len(customers), dtype=np.int64)
    events[known] = history[customers[known]]
    return np.where(events < COLD_START_EVENTS, COLD_START, segment)


@dataclass
class TrainingRun:
    model_names: list[str]
    blender: SegmentBlender
    results: dict[str, RankingResult]  # protocol -> result
    customers: dict[str, int]
    split: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    export: Export | None = None
    search: SearchResult = field(default_factory=SearchResult)
    rating_errors: dict[str, Any] | None = None


def load_segments(settings: Settings) -> pd.DataFrame:
    """Newest segment and lifecycle stage per customer (empty when not segmented yet)."""
    path = settings.features_dir / SEGMENTS_FILE
    if not path.exists():
        return pd.DataFrame(columns=["segment_id", "segment_name", "lifecycle_stage"])
    frame = pd.read_parquet(path)
    frame = frame[frame["event_timestamp"] == frame["event_timestamp"].max()]
    return frame.set_index("customer_id")[["segment_id", "segment_name", "lifecycle_stage"]]


def _split(settings: Settings, events: pd.DataFrame) -> EvaluationSplit:
    params: dict[str, Any]
    if settings.eval_protocol == "temporal":
        params = {
            "test_days": settings.eval_test_days,
            "validation_days": settings.eval_validation_days,
        }
    elif settings.eval_protocol == "leave_last_n_out":
        params = {"n": settings.eval_last_n}
    else:
        params = {
            "test_ratio": settings.eval_test_ratio,
            "validation_ratio": settings.eval_test_ratio,
            "random_state": settings.seed,
        }
    return make_split(settings.eval_protocol, events, **params)


def _interactions(side: HeldOut, products: pd.DataFrame, segments: pd.Series) -> Interactions:
    return Interactions.from_events(
        side.train, products=products, reference_time=side.reference_time, segments=segments
    )


def held_out(
    side: HeldOut, data: Interactions, *, new_items_only: bool, known_only: bool
) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """Customers with held-out relevant items: ids, training indices (-1 = unknown) and
    the items. ``new_items_only`` drops items the customer had any training event on."""
    held = side.relevant(data.items, exclude_train_types=EVENT_TYPES if new_items_only else None)
    ids = [c for c, items in held.items() if len(items) and (c in data.customers or not known_only)]
    return ids, data.customers.index(ids), [held[c] for c in ids]


def run_training(
    settings: Settings, *, export_bundle: bool = True, progress: bool | None = None
) -> TrainingRun:
    laps = Laps()
    lap = laps.lap

    events = pd.read_parquet(settings.clean_dir / "events.parquet")
    products = pd.read_parquet(settings.clean_dir / "products.parquet")
    segments = load_segments(settings)
    segment_of = segments["segment_id"].astype("int64")
    split = _split(settings, events)
    lap("load")

    # 1. Blend weights from validation (the main protocol: new items only).
    train = _interactions(split.validation, products, segment_of)
    models = fit_models(make_models(settings), train)
    lap("fit_for_validation")
    val_ids, val_index, val_held = held_out(
        split.validation, train, new_items_only=True, known_only=False
    )
    val_relevant = relevant_mask(val_held, train.n_items)
    val_n_relevant = np.array([len(h) for h in val_held])
    tuned = SearchResult()
    if settings.search_max_seconds > 0:
        tuned = search(
            models,
            train,
            val_index,
            val_relevant,
            val_n_relevant,
            k=settings.eval_k,
            seed=settings.seed,
            max_seconds=settings.search_max_seconds,
            max_trials=settings.search_max_trials,
        )
        for name, params in tuned.best.items():
            models[name] = models[name].set_params(**params).fit(train)
        lap("search")
    # Every validation customer with a held-out purchase (repeats allowed) is scored once;
    # the main view (new items only) is a subset of them with seen items excluded.
    rep_ids, rep_index, rep_held = held_out(
        split.validation, train, new_items_only=False, known_only=False
    )
    rep_stack = score_stack(models, train, rep_index)
    row_of = {c: r for r, c in enumerate(rep_ids)}
    rows = np.array([row_of[c] for c in val_ids], dtype=np.int64)
    val_stack = exclude(rep_stack[rows], seen_mask(train, val_index))
    # Buy-again's share is fitted where repeats count as serving shows them: bought items
    # stay only in repeat categories, out-of-stock items never (the business filters).
    val_rules = filter_rules(train, settings)
    allowed = np.vstack([val_rules.allowed(_bought(train, i)) for i in rep_index])
    rep_stack = exclude(rep_stack, ~allowed)
    names = list(models)
    blender = SegmentBlender(
        k=settings.eval_k,
        min_customers=settings.blend_min_customers,
        max_seconds=settings.blend_max_seconds,
        repeat_model=names.index(REPEAT_MODEL),
        floor_model=names.index(NEW_PRODUCT_MODEL),
        floor_tolerance=settings.blend_new_arrivals_tolerance,
    ).fit(
        val_stack,
        val_relevant,
        val_n_relevant,
        blend_groups(train, val_index),
        repeats=(
            rep_stack,
            relevant_mask(rep_held, train.n_items),
            np.array([len(h) for h in rep_held]),
            blend_groups(train, rep_index),
        ),
    )
    lap("fit_blend")

    # 2. Refit on the whole training side and evaluate on the test side.
    before = _interactions(split.test, products, segment_of)
    models = fit_models(make_models(settings, tuned.best), before)
    lap("fit_for_test")
    results = {}
    rules = filter_rules(before, settings)
    views = (
        ("new_items", True, False),
        ("repeats_allowed", False, False),
        ("filtered", False, True),
        ("new_products", True, False),
    )
    unseen_products = _popularity(before) == 0
    for protocol, new_only, filtered in views:
        ids, index, held = held_out(split.test, before, new_items_only=new_only, known_only=False)
        if protocol == "new_products":
            # Products nobody interacted with in training: only content can find them.
            held = [h[unseen_products[h]] for h in held]
            keep = [i for i, h in enumerate(held) if len(h)]
            if not keep:
                continue
            ids, index, held = [ids[i] for i in keep], index[keep], [held[i] for i in keep]
        stack = score_stack(models, before, index)
        if new_only:
            stack = exclude(stack, seen_mask(before, index))
        groups = pd.DataFrame(_groups(ids, index, segments, before))
        results[protocol] = evaluate_rankings(
            stack=stack,
            relevant=relevant_mask(held, before.n_items),
            popularity=_popularity(before),
            model_names=list(models),
            blender=blender,
            segments=blend_groups(before, index),
            groups=groups,
            k=settings.eval_k,
            seed=settings.seed,
            rules=rules if filtered else None,
            bought=[_bought(before, i) for i in index] if filtered else None,
        )
    lap("evaluate")
    rating_errors = _rating_errors(models["svd"], before, split.test.held_out)
    exported = None
    if export_bundle:
        everything = Interactions.from_events(
            events,
            products=products,
            reference_time=pd.Timestamp(events["ts"].max()),
            segments=segment_of,
        )
        final = fit_models(make_models(settings, tuned.best), everything)
        lap("fit_for_export")
        exported = export(settings, final, everything, blender, {"ndcg_at_k": _headline(results)})
        lap("export")
    return TrainingRun(
        model_names=list(models),
        blender=blender,
        results=results,
        customers={
            "validation": len(val_index),
            "test": len(results["repeats_allowed"].groups),
            "test_new_items": len(results["new_items"].groups),
        },
        split=split.summary(),
        seconds=laps.seconds,
        export=exported,
        search=tuned,
        rating_errors=rating_errors,
    )


def _rating_errors(
    svd: Recommender, data: Interactions, held_out: pd.DataFrame
) -> dict[str, Any] | None:
    """RMSE and MAE of the SVD model's predictions (clipped to 1..5) on held-out ratings
    of known customers and products; None when the test side has no ratings."""
    ratings = held_out[held_out["type"] == "rating"]
    customer = data.customers.index(ratings["customer_id"].astype(object))
    item = data.items.index(ratings["product_id"].astype(object))
    known = (customer >= 0) & (item >= 0)
    if not known.any():
        return None
    predicted = np.array(
        [
            svd.score(int(c), np.array([i]))[0]
            for c, i in zip(customer[known], item[known], strict=True)
        ]
    )
    actual = pd.to_numeric(ratings["value"], errors="coerce").to_numpy()[known]
    return {
        "ratings": int(known.sum()),
        "feedback": getattr(svd, "feedback_", None),
        "rmse": round(rmse(actual, np.clip(predicted, 1, 5)), 4),
        "mae": round(mae(actual, np.clip(predicted, 1, 5)), 4),
    }


def _bought(data: Interactions, customer: int) -> np.ndarray:
    return data.items_of(int(customer), ("purchase",)) if customer >= 0 else np.zeros(0, np.int64)


def _headline(results: dict[str, RankingResult]) -> dict[str, float]:
    """NDCG@k of the blend per protocol, for the bundle's metadata."""
    return {p: round(r.runs[BLEND].means["ndcg"], 5) for p, r in results.items()}


def _popularity(data: Interactions) -> np.ndarray:
    """Interactions per item in training, for novelty."""
    return np.bincount(data.item, minlength=data.n_items).astype(np.float64)


def _groups(
    ids: list[str], index: np.ndarray, segments: pd.DataFrame, data: Interactions
) -> list[dict[str, Any]]:
    """Segment, lifecycle stage and cold-start flag of each test customer."""
    known = segments.reindex(ids)
    interactions = np.diff(data.indptr)
    rows = []
    for row, (customer, position) in enumerate(zip(ids, index, strict=True)):
        history = int(interactions[position]) if position >= 0 else 0
        segment = known["segment_id"].iloc[row]
        rows.append(
            {
                "customer_id": customer,
                "segment": int(segment) if pd.notna(segment) else -1,
                "segment_name": known["segment_name"].iloc[row]
                if pd.notna(known["segment_name"].iloc[row])
                else "Unsegmented",
                "lifecycle": known["lifecycle_stage"].iloc[row]
                if pd.notna(known["lifecycle_stage"].iloc[row])
                else "Unknown",
                "cold_start": history < COLD_START_EVENTS,
            }
        )
    return rows
