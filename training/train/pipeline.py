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

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import clone

from segrec.blend import COLD_START, COLD_START_EVENTS, NO_SEGMENT
from segrec.consent import ConsentLedger
from segrec.scoring import EVENT_TYPES, CustomerState
from segrec.settings import Settings
from training.evaluation.metrics import mae, rmse
from training.evaluation.oracle import WindowOracle, load_oracle
from training.evaluation.protocols import EvaluationSplit, HeldOut, make_split
from training.features.inputs import personalisation_consent
from training.laps import Laps
from training.models.base import Recommender
from training.models.blend_fit import SegmentBlender, sample_customers
from training.models.interactions import LAUNCH_COLUMN, Interactions, launched_by
from training.models.new_arrivals import launch_age_days
from training.models.reranker import RerankData, RerankFit, fit_reranker
from training.segmentation.assign import segments_as_of
from training.train.evaluate import (
    BLEND,
    RankingResult,
    ViewChunk,
    blended_scores,
    evaluate_rankings,
)
from training.train.export import Export, export, filter_rules
from training.train.search import SearchResult, search
from training.train.stacks import (
    chunk_rows,
    exclude,
    fit_models,
    make_models,
    relevant_mask,
    score_stack,
    seen_mask,
)

SEGMENTS_FILE = "customer_segments.parquet"
REPEAT_MODEL = "buy_again"  # its blend weight is fitted where repeats count
INTEREST_MODEL = "interest"  # likewise, after buy-again: it only scores items already seen
NEW_PRODUCT_MODEL = "new_arrivals"  # gets the validated new-product floor
UNSEGMENTED = "Unsegmented"  # the segment name of customers without one, in every table


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


def proportional_sample(
    data: Interactions, customers: np.ndarray, cap: int, seed: int
) -> np.ndarray:
    """Sorted positions of at most ``cap`` of ``customers`` (indices in ``data``), seeded,
    drawn in proportion to their blend groups so means over them stay unbiased (all of
    them when there are no more)."""
    return sample_customers(blend_groups(data, customers), cap, min_per_group=0, random_state=seed)


@dataclass
class TrainingRun:
    model_names: list[str]
    blender: SegmentBlender
    blend_sample: dict[str, Any]  # the validation customers the blend was fitted on
    results: dict[str, RankingResult]  # protocol -> result
    customers: dict[str, int]
    split: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    export: Export | None = None
    search: SearchResult = field(default_factory=SearchResult)
    rating_errors: dict[str, Any] | None = None
    oracle: dict[str, Any] = field(default_factory=dict)  # where it came from, or why none
    # Test customers evaluated per view, of how many (a seeded sample above the cap).
    evaluation_sample: dict[str, Any] = field(default_factory=dict)
    rerank: dict[str, Any] = field(default_factory=dict)  # the re-ranker's fit, or why none
    # Per split side, the cut-off the customers' segments were assigned at and how many.
    segments_as_of: dict[str, Any] = field(default_factory=dict)


def segments_at(settings: Settings, side: HeldOut) -> pd.DataFrame:
    """Segment and lifecycle stage per customer as they stood at ``side``'s cut-off
    (:func:`training.segmentation.assign.segments_as_of`): a split judged by what serving
    knew then must not group customers by features of the window it holds out."""
    return segments_as_of(settings, side.reference_time)


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


def consenting_customers(settings: Settings) -> pd.Index:
    """Clean ids of the customers who consent to personalisation now (the consent
    ledger's newest changes over the imported flags, as the feature build reads them)."""
    consent = personalisation_consent(
        settings.clean_dir, ConsentLedger(settings.consent_file).latest()
    )
    return consent.index[consent.to_numpy()]


def window_oracle(
    settings: Settings, split: EvaluationSplit
) -> tuple[WindowOracle | None, dict[str, Any]]:
    """The oracle rows for ``split``'s test window (:func:`load_oracle`), unless
    ``settings.eval_oracle`` switches them off; with what the report says about them."""
    if not settings.eval_oracle:
        return None, {"available": False, "reason": "switched off (SEGREC_EVAL_ORACLE=false)"}
    return load_oracle(settings, split)


def with_launch_dates(products: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """``products`` with every missing ``launch_ts`` (or the whole column, when the export
    has none) filled with the product's first event: the best stand-in for when it went
    on sale, so each evaluation window ranks the catalogue of its own time
    (:attr:`HeldOut.catalogue_time`). Products with neither stay undated (always listed)."""
    first_event = events.groupby("product_id", observed=True)["ts"].min()
    first = products["product_id"].map(first_event)
    known = products.get(LAUNCH_COLUMN, pd.NaT)
    launch = pd.to_datetime(pd.Series(known, index=products.index), utc=True)
    return products.assign(**{LAUNCH_COLUMN: launch.fillna(pd.to_datetime(first, utc=True))})


def on_sale(products: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """The products launched by ``now`` (or undated): what the bundle ships. A product
    launching later joins at the first retraining after its launch, so serving never
    shows a product before it is on sale."""
    return products[launched_by(products, now)].reset_index(drop=True)


def _interactions(side: HeldOut, products: pd.DataFrame, segments: pd.Series) -> Interactions:
    return Interactions.from_events(
        side.train,
        products=products,
        reference_time=side.reference_time,
        segments=segments,
        catalogue_time=side.catalogue_time,
    )


class View(NamedTuple):
    """What :func:`held_out` returns: customer ids, their training indices (-1 = unknown)
    and each one's relevant items."""

    ids: list[str]
    customer_index: np.ndarray
    held: list[np.ndarray]


def held_out(side: HeldOut, data: Interactions, *, new_items_only: bool, known_only: bool) -> View:
    """Customers with held-out relevant items: ids, training indices (-1 = unknown) and
    the items. ``new_items_only`` drops items the customer had any training event on."""
    held = side.relevant(data.items, exclude_train_types=EVENT_TYPES if new_items_only else None)
    ids = [c for c, items in held.items() if len(items) and (c in data.customers or not known_only)]
    return View(ids, data.customers.index(ids), [held[c] for c in ids])


@dataclass(frozen=True)
class BlendFit:
    blender: SegmentBlender
    sample: dict[str, Any]  # who the weights were fitted on, for the report
    seconds: dict[str, float]  # scoring the sample, fitting the weights, the re-ranker
    rerank: RerankFit = field(default_factory=lambda: RerankFit(None))


@dataclass(frozen=True)
class BlendWindow:
    """One validation window: models fitted before it, their data and its customers."""

    models: dict[str, Recommender]
    train: Interactions
    main: View  # customers with held-out new items
    rep: View  # customers with any held-out purchase (repeats allowed)


def earlier_windows(
    settings: Settings,
    split: EvaluationSplit,
    products: pd.DataFrame,
    params: dict[str, dict[str, Any]],
) -> list[BlendWindow]:
    """Validation windows before ``split.validation`` (temporal protocol only): each as
    long as the validation window and ending where the next begins, with the models
    (hyperparameters ``params``) refitted on the events before it. At most
    ``settings.blend_validation_windows - 1``; fewer when the data runs out."""
    windows: list[BlendWindow] = []
    if settings.eval_protocol != "temporal":
        return windows
    side = split.validation
    days = settings.eval_validation_days
    for _ in range(settings.blend_validation_windows - 1):
        before = side.train
        if before.empty or before["ts"].min() >= side.reference_time - pd.Timedelta(days=2 * days):
            break  # no training side left before another window
        side = make_split(
            "temporal", before, test_days=days, validation_days=days, end=side.reference_time
        ).test.without(split.validation.unscored)
        data = _interactions(side, products, segments_at(settings, side)["segment_id"])
        rep = held_out(side, data, new_items_only=False, known_only=False)
        if not rep[0]:
            break
        models = fit_models(make_models(settings, params), data)
        main = held_out(side, data, new_items_only=True, known_only=False)
        windows.append(BlendWindow(models, data, main, rep))
    return windows


@dataclass(frozen=True)
class _Sample:
    """One window's sampled validation customers (see :func:`fit_blend`)."""

    rep: np.ndarray  # positions in the window's rep view
    main: np.ndarray  # positions in its main view (a subset of the sampled customers)
    rows: np.ndarray  # each main customer's row among the sampled rep customers


def _window_sample(settings: Settings, window: BlendWindow, cap: int) -> _Sample:
    """At most ``cap`` of one window's rep customers, stratified by view and blend group."""
    train, main, rep = window.train, window.main, window.rep
    val_ids, rep_ids = main[0], rep[0]
    main_ids = set(val_ids)
    in_main = np.array([c in main_ids for c in rep_ids], dtype=bool)
    groups = blend_groups(train, rep[1])
    # The main view and the rest of rep share the cap in proportion; in the main view
    # (what the weights are fitted on) every blend group keeps the minimum-data rule's
    # customers, the rest (only in the own-history shares' fit) is drawn in proportion.
    main_cap = round(cap * int(in_main.sum()) / max(len(rep_ids), 1))
    rng = np.random.default_rng(settings.seed)
    chosen = np.sort(
        np.concatenate(
            [
                part[sample_customers(groups[part], share, min_per_group=floor, random_state=rng)]
                for part, share, floor in (
                    (np.flatnonzero(in_main), main_cap, settings.blend_min_customers),
                    (np.flatnonzero(~in_main), cap - main_cap, 0),
                )
            ]
        )
    ).astype(np.int64)
    row_of = {rep_ids[r]: row for row, r in enumerate(chosen)}
    kept = np.array([i for i, c in enumerate(val_ids) if c in row_of], dtype=np.int64)
    rows = np.array([row_of[val_ids[i]] for i in kept], dtype=np.int64)
    return _Sample(rep=chosen, main=kept, rows=rows)


def _fill_stacks(
    settings: Settings,
    window: BlendWindow,
    sample: _Sample,
    rep_stack: np.ndarray,
    val_stack: np.ndarray,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Score one window's sampled customers into its rows of the pooled stacks (``rep_stack``
    and ``val_stack`` are those rows); its relevant masks, held-out counts and blend groups
    of the main view and the repeats view."""
    models, train, main, rep = window.models, window.train, window.main, window.rep
    rep_index, rep_held = rep[1][sample.rep], [rep[2][r] for r in sample.rep]
    val_index, val_held = main[1][sample.main], [main[2][i] for i in sample.main]
    # Every sampled customer is scored once; the main view is a subset of them with seen
    # items excluded. Masks are applied in place: the stacks are the fit's memory.
    score_stack(models, train, rep_index, out=rep_stack)
    np.take(rep_stack, sample.rows, axis=0, out=val_stack)
    exclude(val_stack, seen_mask(train, val_index), copy=False)
    # The own-history shares are fitted where repeats count as serving shows them: bought
    # items stay only in repeat categories, out-of-stock items never (the business filters).
    val_rules = filter_rules(train, settings)
    allowed = np.vstack([val_rules.allowed(_bought(train, i)) for i in rep_index])
    exclude(rep_stack, ~allowed, copy=False)
    return (
        (
            relevant_mask(val_held, train.n_items),
            np.array([len(h) for h in val_held], dtype=np.int64),
            blend_groups(train, val_index),
        ),
        (
            relevant_mask(rep_held, train.n_items),
            np.array([len(h) for h in rep_held], dtype=np.int64),
            blend_groups(train, rep_index),
        ),
    )


def fit_blend(
    settings: Settings,
    models: dict[str, Recommender],
    train: Interactions,
    main: View,
    rep: View,
    earlier: Sequence[BlendWindow] = (),
) -> BlendFit:
    """Blend weights per segment from validation: ``main`` holds the customers with
    held-out new items (what the weights are fitted on), ``rep`` every customer with a
    held-out purchase, repeats allowed (a superset: where the own-history shares are
    fitted). ``earlier`` windows (:func:`earlier_windows`) are pooled with this one: each
    scored by models fitted before it, they give small segments more customers.

    The stacks are (customers, models, items) floats, too large to hold for every
    validation customer of a large storefront, so at most ``settings.blend_max_customers``
    of ``rep`` are scored (split evenly between windows): a sample seeded by
    ``settings.seed``, stratified by view and blend group, every group keeping
    ``settings.blend_min_customers`` of ``main`` when it has them
    (:func:`~training.models.blend_fit.sample_customers`). With no more customers than
    that every one is scored, in order: the weights are those of the whole validation set.

    With ``settings.rerank``, the re-ranker is then fitted on the same ``rep`` customers
    (:func:`~training.models.reranker.fit_reranker`: each customer's events before their
    window, and the blend refitted on half of them per cross-validation fold).
    """
    started = time.perf_counter()
    windows = [BlendWindow(models, train, main, rep), *earlier]
    cap = max(settings.blend_max_customers // len(windows), 1)
    samples = [_window_sample(settings, window, cap) for window in windows]
    # The pooled stacks are allocated once and filled window by window (never held twice).
    shape = (len(models), train.n_items)
    rep_stack = np.empty((sum(len(s.rep) for s in samples), *shape))
    val_stack = np.empty((sum(len(s.main) for s in samples), *shape))
    val_parts, rep_parts = [], []
    states: list[CustomerState] = []
    launch_ages: list[np.ndarray] = []
    unseen: list[np.ndarray] = []
    main_rows = []  # each main-view row's row in the pooled repeats view
    rep_start = val_start = 0
    for window, sample in zip(windows, samples, strict=True):
        customers = window.rep[1][sample.rep]
        states.extend(window.train.state(int(c)) for c in customers)
        launch_ages.extend([launch_age_days(window.train)] * len(customers))
        unseen.extend([_popularity(window.train) == 0] * len(customers))
        main_rows.append(sample.rows + rep_start)
        rep_end, val_end = rep_start + len(sample.rep), val_start + len(sample.main)
        val_part, rep_part = _fill_stacks(
            settings,
            window,
            sample,
            rep_stack[rep_start:rep_end],
            val_stack[val_start:val_end],
        )
        val_parts.append(val_part)
        rep_parts.append(rep_part)
        rep_start, val_start = rep_end, val_end
    val = [val_stack, *(np.concatenate(column) for column in zip(*val_parts, strict=True))]
    pooled = [rep_stack, *(np.concatenate(column) for column in zip(*rep_parts, strict=True))]
    counts = {
        "customers": len(rep_stack),
        "of_customers": sum(len(w.rep[0]) for w in windows),
        "new_item_customers": len(val_stack),
        "of_new_item_customers": sum(len(w.main[0]) for w in windows),
    }
    scored = time.perf_counter()
    names = list(models)
    blender = SegmentBlender(
        k=settings.eval_k,
        min_customers=settings.blend_min_customers,
        max_seconds=settings.blend_max_seconds,
        pools=settings.blend_pools,
        repeat_model=[names.index(m) for m in (REPEAT_MODEL, INTEREST_MODEL) if m in names],
        floor_model=names.index(NEW_PRODUCT_MODEL),
        floor_tolerance=settings.blend_new_arrivals_tolerance,
    ).fit(*val, repeats=(pooled[0], pooled[1], pooled[2], pooled[3]))
    summary = {
        "seed": settings.seed,
        "max_customers": settings.blend_max_customers,
        "windows": len(windows),
        **counts,
        "stack_mb": round((pooled[0].nbytes + val[0].nbytes) / 2**20),
        "ranked_over_pools": blender.pooled_,
    }
    fitted = time.perf_counter()
    seconds = {"score": scored - started, "fit": fitted - scored}
    rerank = RerankFit(None, summary={"chosen": False, "reason": "off (SEGREC_RERANK)"})
    if settings.rerank:
        data = RerankData(
            normalised=pooled[0],
            blended=blended_scores(pooled[0], blender, pooled[3]),
            relevant=pooled[1],
            n_relevant=pooled[2],
            states=states,
            groups=pooled[3],
            launch_age_days=launch_ages,
            unseen=unseen,
        )
        in_main = np.concatenate(main_rows)

        def refit_blend(rows: np.ndarray) -> np.ndarray:
            """The blend's scores with weights fitted on the pooled ``rows`` only."""
            main = rows[in_main]
            half = clone(blender).fit(
                *(part[main] for part in val),
                repeats=(pooled[0][rows], pooled[1][rows], pooled[2][rows], pooled[3][rows]),
            )
            return blended_scores(pooled[0], half, pooled[3])

        rerank = fit_reranker(
            data,
            rerank_meta(settings, np.union1d(pooled[3], blender.segment_ids_)),
            refit_blend=refit_blend,
            k=settings.eval_k,
            negatives=settings.rerank_negatives,
            seed=settings.seed,
            bags=settings.rerank_bags,
            group_confidence=settings.rerank_group_confidence,
            cold_start=settings.rerank_cold_start,
        )
        seconds["rerank"] = time.perf_counter() - fitted
    return BlendFit(blender, summary, seconds, rerank)


def name_groups(by_group: dict[str, dict[str, Any]], segments: pd.DataFrame) -> None:
    """Add each blend group's name (its segment's, "cold start" or :data:`UNSEGMENTED`,
    as the evaluation's tables call it) to its entry of a summary keyed by group id."""
    named = segments.dropna(subset=["segment_id"]).drop_duplicates("segment_id")
    names = {
        int(i): str(n) for i, n in zip(named["segment_id"], named["segment_name"], strict=True)
    }
    names |= {COLD_START: "cold start", NO_SEGMENT: UNSEGMENTED}
    for group, entry in by_group.items():
        entry["name"] = names.get(int(group), f"segment {group}")


def rerank_meta(settings: Settings, groups: np.ndarray) -> dict[str, np.ndarray]:
    """The re-ranker's arrays other than its trees (:mod:`segrec.rerank`)."""
    return {
        "groups": np.asarray(groups, dtype=np.int64),
        "depth": np.asarray(settings.rerank_depth, dtype=np.int64),
        "history_events": np.asarray(settings.online_history_events, dtype=np.int64),
        # "Trend" views: of items launched within two new-arrivals half-lives.
        "trend_days": np.asarray(2.0 * settings.new_arrivals_half_life_days),
    }


def run_training(
    settings: Settings, *, export_bundle: bool = True, progress: bool | None = None
) -> TrainingRun:
    laps = Laps()
    lap = laps.lap

    events = pd.read_parquet(settings.clean_dir / "events.parquet")
    products = with_launch_dates(pd.read_parquet(settings.clean_dir / "products.parquet"), events)
    consenting = consenting_customers(settings)
    # Serving answers customers without personalisation consent with global popularity
    # whatever the models say, so no figure, weight or tree may rest on their held-out
    # events; their training events stay in what is learnt from everyone.
    unconsented = set(events["customer_id"].astype(str).unique()) - set(consenting)
    split = _split(settings, events).without(unconsented)
    # Segments as of each cut-off for fitting and evaluating; the newest for the bundle.
    segments = {"validation": segments_at(settings, split.validation)}
    segments["test"] = segments_at(settings, split.test)
    lap("load")

    # 1. Blend weights from validation (the main protocol: new items only).
    train = _interactions(split.validation, products, segments["validation"]["segment_id"])
    models = fit_models(make_models(settings), train)
    lap("fit_for_validation")
    main = held_out(split.validation, train, new_items_only=True, known_only=False)
    tuned = SearchResult()
    if settings.search_max_seconds > 0:
        # Each trial scores its customers over the catalogue: at most blend_max_customers.
        chosen = proportional_sample(
            train, main.customer_index, settings.blend_max_customers, settings.seed
        )
        searched = [main.held[i] for i in chosen]
        tuned = search(
            models,
            train,
            main.customer_index[chosen],
            relevant_mask(searched, train.n_items),
            np.array([len(h) for h in searched]),
            k=settings.eval_k,
            seed=settings.seed,
            max_seconds=settings.search_max_seconds,
            max_trials=settings.search_max_trials,
        )
        tuned.customers = {"customers": len(chosen), "of_customers": len(main.ids)}
        for name, params in tuned.best.items():
            models[name] = models[name].set_params(**params).fit(train)
        lap("search")
    rep = held_out(split.validation, train, new_items_only=False, known_only=False)
    earlier = earlier_windows(settings, split, products, tuned.best)
    fitted = fit_blend(settings, models, train, main, rep, earlier)
    name_groups(fitted.rerank.summary.get("cv_by_group", {}), segments["validation"])
    blender = fitted.blender
    reranker = fitted.rerank.arrays or None
    lap("fit_blend")

    # 2. Refit on the whole training side and evaluate on the test side.
    before = _interactions(split.test, products, segments["test"]["segment_id"])
    models = fit_models(make_models(settings, tuned.best), before)
    lap("fit_for_test")
    oracle, oracle_info = window_oracle(settings, split)  # synthetic data only
    results = {}
    rules = filter_rules(before, settings)
    views = (
        ("new_items", True, False),
        ("repeats_allowed", False, False),
        ("filtered", False, True),
        ("new_products", True, False),
    )
    evaluated: dict[str, dict[str, int]] = {}
    unseen_products = _popularity(before) == 0
    if before.listed is not None:
        unseen_products &= before.listed
    for protocol, new_only, filtered in views:
        ids, index, held = held_out(split.test, before, new_items_only=new_only, known_only=False)
        if protocol == "new_products":
            # Products nobody interacted with in training: only content can find them.
            held = [h[unseen_products[h]] for h in held]
            keep = [i for i, h in enumerate(held) if len(h)]
            if not keep:
                continue
            ids, index, held = [ids[i] for i in keep], index[keep], [held[i] for i in keep]
        # A large storefront's test customers are sampled, and scored a chunk at a time.
        chosen = proportional_sample(before, index, settings.eval_max_customers, settings.seed)
        evaluated[protocol] = {"customers": len(chosen), "of_customers": len(ids)}
        ids, index, held = [ids[i] for i in chosen], index[chosen], [held[i] for i in chosen]
        # The oracle's chance of relevance: in new_products only unseen products count.
        eligible = unseen_products if protocol == "new_products" else True
        results[protocol] = evaluate_rankings(
            chunks=_view_chunks(
                models,
                before,
                View(ids, index, held),
                rows=chunk_rows(settings, len(models), before.n_items),
                new_only=new_only,
                bought=filtered,
                oracle=None if oracle is None else (oracle, eligible),
                states=reranker is not None,
            ),
            popularity=_popularity(before),
            model_names=list(models),
            blender=blender,
            reranker=reranker,
            groups=pd.DataFrame(_groups(ids, index, segments["test"], before)),
            k=settings.eval_k,
            seed=settings.seed,
            rules=rules if filtered else None,
        )
    lap("evaluate")
    rating_errors = _rating_errors(models["svd"], before, split.test.scored_held_out)
    exported = None
    if export_bundle:
        now = pd.Timestamp(events["ts"].max())
        everything = Interactions.from_events(
            events,
            products=on_sale(products, now),
            reference_time=now,
            segments=load_segments(settings)["segment_id"].astype("int64"),
        )
        final = fit_models(make_models(settings, tuned.best), everything)
        lap("fit_for_export")
        exported = export(
            settings,
            final,
            everything,
            blender,
            {"ndcg_at_k": _headline(results)},
            rerank=reranker,
            personal=consenting,
        )
        lap("export")
    return TrainingRun(
        model_names=list(models),
        blender=blender,
        blend_sample=fitted.sample,
        rerank=fitted.rerank.summary,
        segments_as_of={
            side: {
                "cutoff": getattr(split, side).reference_time.isoformat(),
                "segmented_customers": len(frame),
            }
            for side, frame in segments.items()
        },
        results=results,
        customers={
            # New-item customers of every pooled validation window.
            "validation": fitted.sample["of_new_item_customers"],
            "test": len(results["repeats_allowed"].groups),
            "test_new_items": len(results["new_items"].groups),
            # With held-out purchases, but without personalisation consent: not scored.
            "validation_no_consent": split.validation.summary()["unscored_customers"],
            "test_no_consent": split.test.summary()["unscored_customers"],
        },
        split=split.summary(),
        seconds=laps.seconds,
        export=exported,
        search=tuned,
        rating_errors=rating_errors,
        oracle=oracle_info,
        evaluation_sample={
            "seed": settings.seed,
            "max_customers": settings.eval_max_customers,
            "views": evaluated,
        },
    )


def _view_chunks(
    models: dict[str, Recommender],
    data: Interactions,
    view: View,
    *,
    rows: int,
    new_only: bool,
    bought: bool,
    oracle: tuple[WindowOracle, np.ndarray | bool] | None,
    states: bool = False,
) -> Iterator[ViewChunk]:
    """``view``'s customers ``rows`` at a time: every model's scores (items the customer
    interacted with excluded when ``new_only``), relevant items, blend groups, purchase
    histories when ``bought`` (for the business filters), the oracles' chances times
    their eligible items, and with ``states`` the customers' events (for the re-ranker)."""
    ids, index, held = view
    launch = launch_age_days(data) if states else None
    for lo in range(0, len(ids), rows):
        part = index[lo : lo + rows]
        stack = score_stack(models, data, part)
        if new_only:
            exclude(stack, seen_mask(data, part), copy=False)
        extra = None
        if oracle is not None:
            rows_by_name = oracle[0].rows(ids[lo : lo + rows], data.items)
            extra = {name: scores * oracle[1] for name, scores in rows_by_name.items()}
        yield ViewChunk(
            stack=stack,
            relevant=relevant_mask(held[lo : lo + rows], data.n_items),
            segments=blend_groups(data, part),
            bought=[_bought(data, i) for i in part] if bought else None,
            extra=extra,
            states=[data.state(int(c)) for c in part] if states else None,
            launch_age_days=launch,
            unseen=None if launch is None else _popularity(data) == 0,
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
                "segment": int(segment) if pd.notna(segment) else NO_SEGMENT,
                "segment_name": known["segment_name"].iloc[row]
                if pd.notna(known["segment_name"].iloc[row])
                else UNSEGMENTED,
                "lifecycle": known["lifecycle_stage"].iloc[row]
                if pd.notna(known["lifecycle_stage"].iloc[row])
                else "Unknown",
                "cold_start": history < COLD_START_EVENTS,
            }
        )
    return rows
