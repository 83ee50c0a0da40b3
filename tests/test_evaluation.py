"""Evaluation: metrics against hand-computed values, split leakage for every protocol,
seeded determinism, and bootstrap intervals on cases with a known answer."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.conftest import Dataset
from training.evaluation import intervals, metrics, oracle, protocols
from training.evaluation.intervals import bootstrap_ci, paired_bootstrap
from training.evaluation.metrics import (
    average_precision_at_k,
    catalogue_coverage,
    evaluate_run,
    hit_matrix,
    hit_rate_at_k,
    intra_list_diversity,
    mae,
    ndcg_at_k,
    novelty,
    pad_lists,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
    rmse,
)
from training.evaluation.protocols import (
    EvaluationSplit,
    HeldOut,
    default_relevant_types,
    leave_last_n_out,
    make_split,
    random_ratio_split,
    temporal_protocol,
)
from training.models.interactions import IdVocabulary

SEED = 42
L2, L3 = math.log2(3), math.log2(4)  # discounts of ranks 2 and 3: 1/log2(r + 1)


@pytest.mark.parametrize("module", [metrics, protocols, intervals, oracle])
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------------- metrics

# Four customers, k = 3:
#   u0: [1, 2, 3] vs {2, 3, 9}  hits at ranks 2, 3
#   u1: [4]       vs {4, 5}     a one-item list, hit at rank 1
#   u2: [6, 7, 8] vs {0}        no hit
#   u3: [1, 2, 3] vs {}         no relevant items: undefined (NaN)
RECS = [[1, 2, 3], [4], [6, 7, 8], [1, 2, 3]]
RELEVANT = [{2, 3, 9}, {4, 5}, {0}, set()]


def assert_close(actual: np.ndarray, expected: list[float]) -> None:
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12, equal_nan=True)


def test_precision_counts_empty_slots_as_misses() -> None:
    # u0: 2 hits / 3; u1: 1 hit / 3 (the two missing slots count); u2: 0 / 3.
    assert_close(precision_at_k(RECS, RELEVANT, 3), [2 / 3, 1 / 3, 0.0, np.nan])


def test_recall_divides_by_all_relevant_items() -> None:
    # u0: 2 of 3 relevant; u1: 1 of 2; u2: 0 of 1.
    assert_close(recall_at_k(RECS, RELEVANT, 3), [2 / 3, 1 / 2, 0.0, np.nan])


def test_hit_rate() -> None:
    assert_close(hit_rate_at_k(RECS, RELEVANT, 3), [1.0, 1.0, 0.0, np.nan])


def test_average_precision() -> None:
    # u0: P@2 = 1/2 and P@3 = 2/3 at the hits; / min(3, 3) -> (1/2 + 2/3) / 3 = 7/18.
    # u1: P@1 = 1 at the hit; / min(2, 3) -> 1/2.
    assert_close(average_precision_at_k(RECS, RELEVANT, 3), [7 / 18, 1 / 2, 0.0, np.nan])


def test_average_precision_denominator_is_capped_at_k() -> None:
    # Four relevant items, k = 2, both slots hit: (1/1 + 2/2) / min(4, 2) = 1.
    assert_close(average_precision_at_k([[1, 2]], [{1, 2, 3, 4}], 2), [1.0])
    # Versus recall, which stays 2 / 4.
    assert_close(recall_at_k([[1, 2]], [{1, 2, 3, 4}], 2), [0.5])


def test_ndcg() -> None:
    # u0: DCG = 1/log2(3) + 1/log2(4); IDCG over min(3, 3) = 1 + 1/log2(3) + 1/log2(4).
    # u1: DCG = 1; IDCG over min(2, 3) = 1 + 1/log2(3).
    expected_u0 = (1 / L2 + 1 / L3) / (1 + 1 / L2 + 1 / L3)
    expected_u1 = 1 / (1 + 1 / L2)
    assert_close(ndcg_at_k(RECS, RELEVANT, 3), [expected_u0, expected_u1, 0.0, np.nan])
    assert expected_u0 == pytest.approx(0.530721, abs=1e-6)
    # More relevant items than k, all slots hit: ideal = actual -> 1.
    assert_close(ndcg_at_k([[1, 2]], [{1, 2, 3, 4}], 2), [1.0])


def test_reciprocal_rank() -> None:
    # u0: first hit at rank 2 -> 1/2; u1: rank 1 -> 1.
    assert_close(reciprocal_rank_at_k(RECS, RELEVANT, 3), [0.5, 1.0, 0.0, np.nan])
    # A hit below k does not count: [6, 7, 8] vs {8} at k = 2.
    assert_close(reciprocal_rank_at_k([[6, 7, 8]], [{8}], 2), [0.0])


def test_a_repeated_item_counts_once() -> None:
    # [5, 5, 6] vs {5}: only rank 1 is a hit; precision 1/3, not 2/3.
    hits, n_rel = hit_matrix([[5, 5, 6]], [{5}], 3)
    np.testing.assert_array_equal(hits, [[True, False, False]])
    np.testing.assert_array_equal(n_rel, [1])
    assert_close(precision_at_k([[5, 5, 6]], [[5, 5]], 3), [1 / 3])
    assert_close(average_precision_at_k([[5, 5, 6]], [{5}], 3), [1.0])


def test_padded_arrays_and_lists_agree() -> None:
    padded = pad_lists(RECS, 3)
    np.testing.assert_array_equal(padded[1], [4, -1, -1])
    for fn in (precision_at_k, recall_at_k, average_precision_at_k, ndcg_at_k):
        assert_close(fn(padded, RELEVANT, 3), list(fn(RECS, RELEVANT, 3)))
    # A 2-d array narrower than k is padded; wider is cut.
    np.testing.assert_array_equal(pad_lists(np.array([[1, 2]]), 3), [[1, 2, -1]])
    np.testing.assert_array_equal(pad_lists(np.array([[1, 2, 3, 4]]), 3), [[1, 2, 3]])


def reference_metrics(recs: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """The textbook definitions, one customer at a time, with plain loops."""
    seen: set[int] = set()
    hits = []
    for item in recs[:k]:
        hits.append(item in relevant and item not in seen)
        seen.add(item)
    found = sum(hits)
    ap = sum(sum(hits[: r + 1]) / (r + 1) for r in range(len(hits)) if hits[r])
    dcg = sum(1 / math.log2(r + 2) for r in range(len(hits)) if hits[r])
    idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
    first = next((r for r in range(len(hits)) if hits[r]), None)
    return {
        "precision": found / k,
        "recall": found / len(relevant),
        "hit_rate": float(found > 0),
        "map": ap / min(len(relevant), k),
        "ndcg": dcg / idcg,
        "mrr": 0.0 if first is None else 1 / (first + 1),
    }


def test_vectorised_metrics_match_loops_on_random_runs() -> None:
    rng = np.random.default_rng(SEED)
    k, n_items = 5, 30
    recs = [list(rng.integers(0, n_items, size=rng.integers(0, 8))) for _ in range(300)]
    relevant = [set(rng.integers(0, n_items, size=rng.integers(1, 6)).tolist()) for _ in recs]
    run = evaluate_run(
        {f"c{i:03d}": r for i, r in enumerate(recs)},
        {f"c{i:03d}": sorted(r) for i, r in enumerate(relevant)},
        k,
    )
    for name, values in run.per_customer.items():
        expected = [reference_metrics(r, s, k)[name] for r, s in zip(recs, relevant, strict=True)]
        np.testing.assert_allclose(values, expected, atol=1e-12, err_msg=name)


def test_catalogue_coverage() -> None:
    # Items {1, 2, 3} of 10 at k = 2; at k = 1 only {1, 2}.
    assert catalogue_coverage([[1, 2], [2, 3]], n_items=10, k=2) == pytest.approx(0.3)
    assert catalogue_coverage([[1, 2], [2, 3]], n_items=10, k=1) == pytest.approx(0.2)
    assert catalogue_coverage([[], [-1]], n_items=10, k=3) == 0.0


def test_novelty() -> None:
    # Counts [4, 2, 1, 1, 0], total 8: shares 1/2, 1/4, 1/8, 1/8 and (count 0 -> 1) 1/8,
    # self-information 1, 2, 3, 3, 3 bits.
    popularity = [4, 2, 1, 1, 0]
    # [0, 2] -> (1 + 3) / 2 = 2; [1, 1] -> the repeat counts once -> 2; [4] -> 3; [] -> NaN.
    assert_close(novelty([[0, 2], [1, 1], [4], []], popularity, 3), [2.0, 2.0, 3.0, np.nan])
    # Share of customers instead of the total count: 4 of 16 customers -> 2 bits.
    assert_close(novelty([[0]], popularity, 3, total=16), [2.0])


def test_intra_list_diversity_dense_and_sparse() -> None:
    # v0 = (1, 0), v1 = (0, 1), v2 = (1, 1):
    # d(0, 1) = 1 - 0 = 1; d(0, 2) = d(1, 2) = 1 - 1/sqrt(2) = 0.292893;
    # mean over 3 pairs = (1 + 2 * 0.292893) / 3 = 0.528595.
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    expected = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    recs = [[0, 1, 2], [0, 0], [0, 2], [0, 3]]
    # [0, 0]: one distinct item -> NaN; [0, 2]: one pair -> 0.292893; [0, 3]: zero vector -> 1.
    want = [expected, np.nan, 1 - 1 / math.sqrt(2), 1.0]
    np.testing.assert_allclose(intra_list_diversity(recs, vectors, 3), want, atol=1e-12)
    sparse = sp.csr_matrix(vectors)
    np.testing.assert_allclose(intra_list_diversity(recs, sparse, 3), want, atol=1e-12)
    assert expected == pytest.approx(0.528595, abs=1e-6)


def test_rmse_and_mae() -> None:
    # Errors 1, -1, 2: RMSE = sqrt((1 + 1 + 4) / 3) = sqrt(2); MAE = (1 + 1 + 2) / 3.
    assert rmse([3, 4, 2], [4, 3, 4]) == pytest.approx(math.sqrt(2))
    assert mae([3, 4, 2], [4, 3, 4]) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="predictions"):
        rmse([1, 2], [1])
    with pytest.raises(ValueError, match="no ratings"):
        mae([], [])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k([[1]], [{1}], 0)
    with pytest.raises(ValueError, match="relevant sets"):
        precision_at_k([[1]], [{1}, {2}], 1)
    with pytest.raises(ValueError, match="outside"):
        novelty([[5]], [1, 1], 1)


def test_evaluate_run_per_customer_and_means() -> None:
    recommendations = {"u0": [1, 2, 3], "u1": [4], "u2": [6, 7, 8], "u3": [1, 2, 3]}
    relevant = {
        "u0": np.array([2, 3, 9]),
        "u1": np.array([4, 5]),
        "u2": np.array([0]),
        "u3": np.array([], dtype=np.int64),  # no relevant items: left out
        "u4": np.array([1]),  # no recommendations: all accuracy metrics 0
    }
    vectors = np.eye(10)
    run = evaluate_run(
        recommendations, relevant, 3, n_items=10, popularity=np.ones(10), item_vectors=vectors
    )
    np.testing.assert_array_equal(run.customers, ["u0", "u1", "u2", "u4"])
    assert (run.n_without_relevant, run.n_without_recommendations) == (1, 1)
    assert_close(run.per_customer["precision"], [2 / 3, 1 / 3, 0.0, 0.0])
    assert_close(run.per_customer["mrr"], [0.5, 1.0, 0.0, 0.0])
    assert run.means["hit_rate"] == pytest.approx(2 / 4)
    assert run.means["mrr"] == pytest.approx(1.5 / 4)
    # Coverage of the evaluated lists: {1, 2, 3, 4, 6, 7, 8} of 10.
    assert run.coverage == pytest.approx(0.7)
    # Equal popularity: every item has -log2(1/10) bits; u4 has no list -> NaN.
    assert_close(run.per_customer["novelty"], [math.log2(10)] * 3 + [np.nan])
    assert run.means["novelty"] == pytest.approx(math.log2(10))
    # Orthogonal vectors: every pair at distance 1; a one-item list is NaN.
    assert_close(run.per_customer["diversity"], [1.0, np.nan, 1.0, np.nan])

    frame = run.to_frame()
    assert list(frame.index) == ["u0", "u1", "u2", "u4"]
    by_segment = run.means_by({"u0": "a", "u1": "a", "u2": "b"})
    assert by_segment.loc["a", "n_customers"] == 2
    assert by_segment.loc["a", "precision"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert by_segment.loc["unknown", "n_customers"] == 1
    summary = run.summary()
    json.dumps(summary)
    assert summary["means"]["hit_rate"] == pytest.approx(0.5)


# ------------------------------------------------------------------------- protocols


def synthetic_events(
    n_customers: int = 60, n_products: int = 25, days: int = 120, seed: int = SEED
) -> pd.DataFrame:
    """Seeded storefront events: sessions of views, carts and baskets of purchases that
    share one timestamp (so splits must handle ties), a few ratings and removals."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    rows = []
    for c in range(n_customers):
        for _ in range(rng.integers(1, 9)):
            t = start + pd.Timedelta(minutes=int(rng.integers(0, days * 24 * 60)))
            viewed = rng.choice(n_products, size=rng.integers(1, 5), replace=False)
            for i, product in enumerate(viewed):
                rows.append((c, product, t + pd.Timedelta(minutes=i), "view", np.nan))
            bought = viewed[: rng.integers(0, len(viewed) + 1)]
            for product in bought:
                rows.append((c, product, t + pd.Timedelta(minutes=10), "add_to_cart", np.nan))
                rows.append((c, product, t + pd.Timedelta(minutes=20), "purchase", np.nan))
            if len(bought) and rng.random() < 0.3:
                rating = float(rng.integers(1, 6))
                rows.append((c, bought[0], t + pd.Timedelta(days=2), "rating", rating))
            if rng.random() < 0.1:
                rows.append(
                    (c, viewed[0], t + pd.Timedelta(minutes=15), "remove_from_cart", np.nan)
                )
    events = pd.DataFrame(rows, columns=["customer", "product", "ts", "type", "value"])
    events = events.sort_values("ts", kind="stable").reset_index(drop=True)
    return pd.DataFrame(
        {
            "event_id": [f"E{i:06d}" for i in range(len(events))],
            "customer_id": [f"c{c:03d}" for c in events["customer"]],
            "product_id": [f"P{p:03d}" for p in events["product"]],
            "ts": events["ts"],
            "type": events["type"],
            "quantity": 1,
            "price": 10.0,
            "value": events["value"],
            "session_id": "s",
        }
    )


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return synthetic_events()


def pair_keys(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["customer_id"], frame["product_id"], strict=True))


def assert_partition(part: HeldOut, source: pd.DataFrame) -> None:
    """Train and held out are disjoint, and with the dropped events make up the source."""
    train, held = set(part.train["event_id"]), set(part.held_out["event_id"])
    assert not train & held
    assert train | held <= set(source["event_id"])
    assert len(source) == len(train) + len(held) + part.n_dropped


def assert_relevant_is_held_out(part: HeldOut) -> None:
    relevant = part.relevant_pairs()
    assert len(relevant) > 0
    assert pair_keys(relevant) <= pair_keys(
        part.held_out[part.held_out["type"].isin(part.relevant_types)]
    )


def assert_validation_inside_training(split: EvaluationSplit) -> None:
    """Tuning never touches the test side: validation is carved from ``test.train``."""
    validation = set(split.validation.train["event_id"]) | set(
        split.validation.held_out["event_id"]
    )
    assert validation <= set(split.test.train["event_id"])
    assert not validation & set(split.test.held_out["event_id"])


def assert_no_pair_leaks(part: HeldOut) -> None:
    """No training event of a held-out relevant (customer, item) pair."""
    assert not pair_keys(part.relevant_pairs()) & pair_keys(part.train)


def test_temporal_protocol_trains_only_on_the_past(events: pd.DataFrame) -> None:
    split = temporal_protocol(events, test_days=20, validation_days=15)
    cut, validation_cut = (pd.Timestamp(split.params[k]) for k in ("test_cut", "validation_cut"))
    assert cut == events["ts"].max() - pd.Timedelta(days=20)
    assert validation_cut == cut - pd.Timedelta(days=15)
    for part, at in ((split.test, cut), (split.validation, validation_cut)):
        assert part.reference_time == at
        assert part.train["ts"].max() <= at < part.held_out["ts"].min()
        assert_relevant_is_held_out(part)
        # No event of a held-out relevant pair at or after the cut in training.
        relevant = part.relevant_pairs().merge(part.train, on=["customer_id", "product_id"])
        assert (relevant["ts"] <= at).all()
    assert_partition(split.test, events)
    assert_partition(split.validation, split.test.train)
    assert_validation_inside_training(split)
    assert split.validation.held_out["ts"].max() <= cut


def test_leave_last_n_out_holds_out_each_customers_latest(events: pd.DataFrame) -> None:
    n = 2
    split = leave_last_n_out(events, n=n)
    purchases = events[events["type"] == "purchase"]
    counts = purchases.groupby("customer_id").size()
    test = split.test
    held_customers = set(test.held_out["customer_id"])
    assert held_customers == set(counts[counts > n].index)
    for customer, held in test.held_out.groupby("customer_id"):
        cut = held["ts"].min()
        mine = purchases[purchases["customer_id"] == customer]
        # The cut is the n-th last purchase; every purchase from it on is held out
        # (baskets share a timestamp, so ties can add more than n).
        assert cut == mine["ts"].sort_values().iloc[-n]
        assert len(held[held["type"] == "purchase"]) == (mine["ts"] >= cut).sum() >= n
        # Nothing at or after the customer's cut reaches training.
        theirs = test.train[test.train["customer_id"] == customer]
        assert (theirs["ts"] < cut).all()
    assert_partition(test, events)
    assert_relevant_is_held_out(test)
    assert_no_pair_leaks(test)
    assert test.n_dropped > 0  # earlier purchases of held-out items were dropped
    assert_partition(split.validation, test.train)
    assert_no_pair_leaks(split.validation)
    assert_validation_inside_training(split)


def test_leave_last_n_out_can_keep_pair_history(events: pd.DataFrame) -> None:
    kept = leave_last_n_out(events, n=1, drop_pair_history=False)
    dropped = leave_last_n_out(events, n=1)
    assert kept.test.n_dropped == 0
    assert set(kept.test.held_out["event_id"]) == set(dropped.test.held_out["event_id"])
    assert len(kept.test.train) == len(dropped.test.train) + dropped.test.n_dropped
    for customer, held in kept.test.held_out.groupby("customer_id"):
        theirs = kept.test.train[kept.test.train["customer_id"] == customer]
        assert (theirs["ts"] < held["ts"].min()).all()


def test_leave_last_n_out_on_a_hand_made_timeline() -> None:
    day = pd.Timestamp("2026-03-01", tz="UTC")
    rows = [
        ("a", "P1", 0, "purchase"),
        ("a", "P2", 1, "view"),
        ("a", "P2", 2, "purchase"),
        ("a", "P3", 3, "purchase"),
        ("a", "P4", 3, "purchase"),  # same basket as P3: held out together
        ("a", "P1", 4, "view"),  # after the cut: held out, not relevant
        ("b", "P1", 0, "purchase"),  # one purchase only: nothing held out
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "product_id", "day", "type"])
    frame["ts"] = day + pd.to_timedelta(frame.pop("day"), unit="D")
    frame["event_id"] = [f"E{i}" for i in range(len(frame))]
    split = leave_last_n_out(frame, n=1)
    assert list(split.test.relevant_pairs()["product_id"]) == ["P3", "P4"]
    assert sorted(split.test.held_out["event_id"]) == ["E3", "E4", "E5"]
    assert sorted(split.test.train["event_id"]) == ["E0", "E1", "E2", "E6"]
    # Validation, on that training side: a's last purchase left is P2 (day 2); its
    # earlier view of P2 (day 1) is the pair's history, so it is dropped.
    assert list(split.validation.relevant_pairs()["product_id"]) == ["P2"]
    assert sorted(split.validation.train["event_id"]) == ["E0", "E6"]
    assert split.validation.n_dropped == 1
    with pytest.raises(ValueError, match="positive integer"):
        leave_last_n_out(frame, n=0)


def test_random_ratio_split_holds_out_whole_pairs(events: pd.DataFrame) -> None:
    split = random_ratio_split(events, test_ratio=0.25, random_state=SEED)
    test = split.test
    assert_partition(test, events)
    assert_relevant_is_held_out(test)
    # Every event of a held-out pair is held out: no pair on both sides.
    assert not pair_keys(test.held_out) & pair_keys(test.train)
    assert_partition(split.validation, test.train)
    assert not pair_keys(split.validation.held_out) & pair_keys(split.validation.train)
    assert_validation_inside_training(split)
    # Per customer: round_half_up(0.25 * m) of m purchased items, at most m - 1.
    bought = events[events["type"] == "purchase"].groupby("customer_id")["product_id"].nunique()
    held = test.relevant_pairs().groupby("customer_id").size()
    expected = pd.Series(np.minimum(np.floor(0.25 * bought + 0.5), bought - 1), dtype=int)
    pd.testing.assert_series_equal(
        held.reindex(bought.index, fill_value=0), expected, check_names=False
    )
    assert expected.sum() > 0


def test_random_ratio_split_is_seeded_and_ignores_row_order(events: pd.DataFrame) -> None:
    first = random_ratio_split(events, random_state=7)
    again = random_ratio_split(events, random_state=7)
    pd.testing.assert_frame_equal(first.test.train, again.test.train)
    pd.testing.assert_frame_equal(first.validation.held_out, again.validation.held_out)
    shuffled = events.sample(frac=1.0, random_state=1)
    reordered = random_ratio_split(shuffled, random_state=7)
    assert pair_keys(reordered.test.held_out) == pair_keys(first.test.held_out)
    other = random_ratio_split(events, random_state=8)
    assert pair_keys(other.test.held_out) != pair_keys(first.test.held_out)


def ratings(n_users: int = 20, n_movies: int = 8) -> pd.DataFrame:
    """MovieLens-format events: every user rates every movie once."""
    rng = np.random.default_rng(SEED)
    n = n_users * n_movies
    return pd.DataFrame(
        {
            "event_id": [f"r{i}" for i in range(n)],
            "customer_id": np.repeat([f"u{u:02d}" for u in range(n_users)], n_movies),
            "product_id": np.tile([f"m{m}" for m in range(n_movies)], n_users),
            "ts": pd.Timestamp("2000-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 10**6, size=n), unit="s"),
            "type": "rating",
            "value": rng.integers(1, 6, size=n).astype(float),
        }
    )


def test_movielens_ratings_75_25_with_a_rating_threshold() -> None:
    frame = ratings()
    assert default_relevant_types(frame) == ("rating",)
    split = random_ratio_split(frame, test_ratio=0.25, min_rating=4.0, random_state=SEED)
    # 8 ratings each: 2 held out per user (25 %), 6 left; validation takes 2 of those 6.
    assert (split.test.held_out.groupby("customer_id").size() == 2).all()
    assert (split.test.train.groupby("customer_id").size() == 6).all()
    assert (split.validation.held_out.groupby("customer_id").size() == 2).all()
    # Only held-out ratings >= 4 are relevant.
    relevant = split.test.relevant_events()
    assert (relevant["value"] >= 4).all()
    assert len(relevant) == (split.test.held_out["value"] >= 4).sum()
    vocabulary = IdVocabulary.from_values(frame["product_id"])
    by_customer = split.test.relevant(vocabulary)
    assert sum(len(v) for v in by_customer.values()) == len(relevant)
    assert split.params["relevant_types"] == ["rating"]


def test_relevance_can_exclude_items_bought_before(events: pd.DataFrame) -> None:
    split = temporal_protocol(events, test_days=30, validation_days=0)
    vocabulary = IdVocabulary.from_values(events["product_id"])
    everything = split.test.relevant(vocabulary)
    new_only = split.test.relevant(vocabulary, exclude_train_types=("purchase",))
    bought = split.test.train[split.test.train["type"] == "purchase"]
    repeats = 0
    for customer, items in everything.items():
        theirs = set(vocabulary.index(bought.loc[bought["customer_id"] == customer, "product_id"]))
        fresh = new_only.get(customer, np.empty(0, dtype=np.int64))
        assert set(fresh) == set(items) - theirs
        repeats += len(set(items) & theirs)
    assert repeats > 0  # the case is exercised
    assert len(split.validation.held_out) == 0


def test_make_split_and_summary(events: pd.DataFrame) -> None:
    split = make_split("leave_last_n_out", events, n=1)
    summary = json.loads(json.dumps(split.summary()))
    assert summary["protocol"] == "leave_last_n_out"
    assert summary["test"]["relevant_pairs"] == len(split.test.relevant_pairs())
    with pytest.raises(ValueError, match="unknown protocol"):
        make_split("k_fold", events)


def test_unscored_customers_keep_their_training_events(events: pd.DataFrame) -> None:
    """``without``: the customers' held-out events score nothing on either side, their
    training events stay (what is learnt from everyone), and the summary counts them."""
    split = temporal_protocol(events, test_days=28, validation_days=28)
    pairs = split.test.relevant_pairs()
    left_out = sorted(set(pairs["customer_id"]))[:2]
    reduced = split.without(left_out)
    pd.testing.assert_frame_equal(reduced.test.train, split.test.train)
    pd.testing.assert_frame_equal(reduced.test.held_out, split.test.held_out)
    assert reduced.test.catalogue_time == split.test.catalogue_time
    kept = reduced.test.relevant_pairs()
    assert not set(left_out) & set(kept["customer_id"])
    assert len(kept) == (~pairs["customer_id"].isin(left_out)).sum()
    assert not set(left_out) & set(reduced.test.scored_held_out["customer_id"])
    assert reduced.test.summary()["unscored_customers"] == 2
    assert split.test.summary()["unscored_customers"] == 0
    assert reduced.validation.unscored == frozenset(left_out)
    validation = set(reduced.validation.relevant_pairs()["customer_id"])
    assert not set(left_out) & validation


def test_protocols_on_the_clean_storefront(tiny: Dataset) -> None:
    """The real clean table: every protocol keeps the held-out side out of training."""
    clean = tiny.clean("events")
    temporal = temporal_protocol(clean, test_days=28, validation_days=28)
    assert temporal.test.train["ts"].max() <= temporal.test.reference_time
    assert temporal.test.held_out["ts"].min() > temporal.test.reference_time
    for split in (
        temporal,
        leave_last_n_out(clean, n=1),
        random_ratio_split(clean, random_state=SEED),
    ):
        assert_partition(split.test, clean)
        assert_relevant_is_held_out(split.test)
        assert_validation_inside_training(split)
        if split.protocol != "temporal":
            assert_no_pair_leaks(split.test)


# ------------------------------------------------------------------------- intervals


def test_paired_bootstrap_covers_the_true_difference() -> None:
    # Differences 0.1 +- noise in symmetric pairs, so the sample mean is exactly 0.1.
    rng = np.random.default_rng(SEED)
    noise = rng.normal(0.0, 0.3, size=200)
    b = rng.uniform(0.0, 1.0, size=400)
    a = b + 0.1 + np.concatenate([noise, -noise])
    ci = paired_bootstrap(a, b, n_boot=1000, random_state=SEED)
    assert ci.estimate == pytest.approx(0.1)
    assert ci.low < 0.1 < ci.high
    # Standard error 0.3 / sqrt(400) = 0.015: the 95 % interval is about 0.1 +- 0.03.
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * 0.015, rel=0.25)
    assert ci.excludes_zero()
    assert ci.share_above_zero == 1.0


def test_paired_bootstrap_keeps_zero_for_no_difference() -> None:
    rng = np.random.default_rng(SEED)
    noise = rng.normal(0.0, 0.3, size=200)
    b = rng.uniform(0.0, 1.0, size=400)
    a = b + np.concatenate([noise, -noise])
    ci = paired_bootstrap(a, b, n_boot=1000, random_state=SEED)
    assert ci.low < 0 < ci.high
    assert not ci.excludes_zero()
    assert 0.3 < ci.share_above_zero < 0.7


def test_bootstrap_intervals_are_calibrated() -> None:
    # 200 repetitions of two paired hit-rate arrays (true difference 0.15): the 90 %
    # interval should cover 0.15 about 90 % of the time.
    rng = np.random.default_rng(SEED)
    covered = 0
    for _ in range(200):
        base = rng.random(150)
        a, b = (base < 0.45).astype(float), (base < 0.30).astype(float)
        ci = paired_bootstrap(a, b, n_boot=400, confidence=0.9, random_state=rng)
        covered += ci.low <= 0.15 <= ci.high
    assert 0.82 <= covered / 200 <= 0.96


def test_bootstrap_is_seeded_and_skips_nan() -> None:
    values = np.r_[np.linspace(0, 1, 50), np.nan]
    first = bootstrap_ci(values, n_boot=300, random_state=3)
    assert first == bootstrap_ci(values, n_boot=300, random_state=3)
    assert first != bootstrap_ci(values, n_boot=300, random_state=4)
    assert first.n == 50
    assert first.estimate == pytest.approx(0.5)
    assert first.low < 0.5 < first.high
    json.dumps(first.to_dict())
    paired = paired_bootstrap([1.0, np.nan, 3.0], [0.0, 1.0, np.nan], n_boot=10, random_state=0)
    assert paired.n == 1 and paired.estimate == 1.0


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([np.nan])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0], n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.5)


def test_score_histograms_separate_relevant_from_other_items() -> None:
    from training.train.evaluate import SCORE_BINS, score_histograms
    from training.train.stacks import EXCLUDED

    # Two customers, four items: relevant items score 0.97, the rest 0.07, one excluded.
    scores = np.array([[0.97, 0.07, 0.07, EXCLUDED], [0.07, 0.97, 0.07, 0.07]])
    relevant = np.array([[True, False, False, False], [False, True, False, False]])
    histograms = score_histograms({"good": scores}, relevant, seed=0)["good"]
    assert len(histograms["relevant"]) == len(SCORE_BINS) - 1
    assert histograms["relevant"][-1] == 2 and sum(histograms["relevant"]) == 2
    # Sampled others all score 0.07 (second bin); the excluded item never counts.
    assert sum(histograms["other"]) == histograms["other"][1] > 0


# ---------------------------------------------------------------------------- oracle


def test_oracle_ids_follow_cleanings_merges_not_raw_ids() -> None:
    """Raw records merged by cleaning score as one clean customer; a raw id cleaning
    never kept (erased, or another secret) has no clean customer."""
    from segrec.pseudonym import pseudonymise
    from training.evaluation.oracle import customer_records

    raw_ids = np.array(["100001", "100002", "100003", "100004"], dtype=object)
    # 100003 re-registered as a duplicate of 100001; 100004 erased before cleaning.
    id_map = pd.DataFrame(
        {
            "source_customer_id": [pseudonymise(r, "s") for r in ("100001", "100002", "100003")],
            "customer_id": ["c_one", "c_two", "c_one"],
        }
    )
    records = customer_records(raw_ids, id_map, "s")
    assert set(records) == {"c_one", "c_two"}
    assert records["c_one"].tolist() == [0, 2] and records["c_two"].tolist() == [1]
    assert customer_records(raw_ids, id_map, "another secret") == {}


@pytest.fixture(scope="module")
def tiny_world() -> oracle.GeneratorOracle:
    import datetime as dt

    from training.data.synthetic.generator import replay

    return oracle.GeneratorOracle(replay("tiny", SEED, dt.date(2026, 10, 31)), {})


def test_oracle_view_chances_are_the_generators_draws(tiny_world: oracle.GeneratorOracle) -> None:
    """The oracle's view distribution against the generator's own view draws, at a time
    with products still to launch (drawn as their group's oldest) and some trending."""
    from training.data.synthetic.sessions import SessionSimulator

    world = tiny_world.world
    simulator = SessionSimulator(world.population, world.catalogue, world.sampler)
    t = int(world.start.astype(np.int64)) + 200 * 86400
    assert (tiny_world.launch > t).any()
    customers = np.array([1, 2, 3])
    rows = tiny_world._records(customers)
    expected = tiny_world.view_probabilities(rows, t, np.arange(world.catalogue.n))
    np.testing.assert_allclose(expected.sum(1), 1.0)
    rng = np.random.default_rng(SEED)
    draws = 100_000
    for row, customer in enumerate(customers):
        who = np.full(draws, customer)
        viewed = simulator._choose_products(
            who, world.population.persona[who], np.full(draws, t), rng
        )
        seen = np.bincount(viewed, minlength=world.catalogue.n) / draws
        # Sampling noise alone gives a total variation near 0.01 here.
        assert 0.5 * np.abs(seen - expected[row]).sum() < 0.03


def test_oracle_purchase_chances_are_calibrated(tiny_world: oracle.GeneratorOracle) -> None:
    """Simulated again and again, customers buy in the window what the oracle expects."""
    from training.data.synthetic.sessions import SessionSimulator

    world = tiny_world.world
    everyone = np.arange(world.population.n)
    end = int(world.end.astype(np.int64))
    start = end - 28 * 86400
    chance = 1.0 - np.exp(-tiny_world._hazard(tiny_world._records(everyone), start, end))
    rng = np.random.default_rng(SEED)
    bought = np.zeros_like(chance)
    rounds = 100
    for _ in range(rounds):
        events = SessionSimulator(world.population, world.catalogue, world.sampler).simulate(
            everyone, rng
        )
        window = events[(events["type"] == "purchase") & events["ts"].between(start + 1, end)]
        once = np.zeros_like(chance, dtype=bool)
        once[window["customer"].to_numpy(), window["product"].to_numpy()] = True
        bought += once
    # ~78 distinct (customer, product) purchases a round: the mean of 100 rounds is
    # within 1.5% (one standard error) of the truth.
    assert bought.sum() / rounds == pytest.approx(chance.sum(), rel=0.06)
    likely = chance > 0.03
    assert bought[likely].sum() / rounds == pytest.approx(chance[likely].sum(), rel=0.12)


def test_the_observed_oracle_knows_only_what_the_views_show(
    tiny_world: oracle.GeneratorOracle,
) -> None:
    """The observed-tastes oracle: a staple counts once viewed; category preferences are
    the Dirichlet posterior given the views (the prior's when there are none, the truth
    given views enough); a product launching after the cut is trending from the cut."""
    from training.data.synthetic.catalogue import CATEGORIES

    world = tiny_world.world
    pop, cat = world.population, world.catalogue
    launch = cat.launch.astype(np.int64)
    product = int(np.argsort(launch)[len(launch) // 2])  # launched mid-history
    cut = int(launch[product]) - 10 * 86400
    persona = pop.persona
    # Two customers of one persona, with different true tastes.
    shared = np.flatnonzero(np.bincount(persona) >= 3)[0]
    heavy, silent, another = np.flatnonzero(persona == shared)[:3]
    staples = pop.staples[heavy]
    true_preferences = np.diff(pop.category_cdf[heavy], prepend=0.0)
    true_preferences[-1] = 1.0 - pop.category_cdf[heavy][-2]
    # 10^5 views spread as the true preferences, on one product per category, and two
    # of the five staples viewed.
    one_per_category = np.array(
        [np.flatnonzero(cat.category == c)[0] for c in range(len(CATEGORIES))]
    )
    views = np.repeat(one_per_category, np.round(true_preferences * 100_000).astype(int))
    views = np.concatenate([views, staples[:2]])
    observed = oracle.Observed(cut=cut, views={"h": views})
    seen = oracle.GeneratorOracle(world, {}, observed)
    rows = seen._records(np.array([heavy, silent]), ["h", "s"])
    truth = tiny_world._records(np.array([heavy, silent]))

    expected_staples = np.zeros(cat.n)
    np.add.at(expected_staples, staples, 1.0 / len(staples))
    expected_staples[np.setdiff1d(staples, staples[:2])] = 0.0
    np.testing.assert_allclose(rows.staples[0], expected_staples)
    assert rows.staples[1].sum() == 0.0  # nothing viewed: no staple known
    np.testing.assert_allclose(rows.category[0], truth.category[0], rtol=1e-3, atol=1e-5)
    # Without views, tastes are the prior's: the same for everyone of a persona.
    prior = seen._records(np.array([silent, another]), ["s", "nobody"]).category
    np.testing.assert_allclose(prior[0], prior[1])
    assert not np.allclose(truth.category[1], prior[0])
    with pytest.raises(ValueError, match="clean id"):
        seen._records(np.array([heavy]))

    # A product launching 10 days after the cut: the full oracle never shows it before
    # then; the observed one, like the models at the cut, takes it as launched at the cut.
    t = cut + 3600
    full_chance = tiny_world.view_probabilities(truth, t, np.arange(cat.n))[:, product]
    seen_chance = seen.view_probabilities(rows, t, np.arange(cat.n))[:, product]
    assert (full_chance == 0).all() and (seen_chance > 0).all()


def _stepped_hazard(
    found: oracle.GeneratorOracle, rows: oracle._Records, start: int, end: int
) -> np.ndarray:
    """The hazard the plain way: every interval of ``(start, end]`` between launches and
    ends of trend windows, each product's view chance at its middle, its sessions times
    the chance that a session buys."""
    from itertools import pairwise

    from training.data.synthetic.sessions import TREND_WINDOW_S

    changes = np.concatenate([found.launch, found.launch + TREND_WINDOW_S])
    bounds = np.unique(np.r_[start, end, changes[(changes > start) & (changes < end)]])
    everything = np.arange(len(found.launch))
    hazard = np.zeros((len(rows.start), len(everything)))
    for lo, hi in pairwise(bounds):
        q = found.view_probabilities(rows, int((lo + hi) // 2), everything)
        x = q * rows.buy_rate[:, None] * found.stock
        per_session = 1.0 - (1.0 - x) * np.exp(-rows.views[:, None] * x)
        seconds = np.clip(np.minimum(rows.end, hi) - np.maximum(rows.start, lo), 0, None)
        hazard += (seconds * rows.sessions_per_second)[:, None] * per_session
    return hazard


@pytest.mark.parametrize("launches", ["as generated", "all around the window"])
@pytest.mark.parametrize("observed", [False, True])
def test_the_oracle_sums_the_view_chances_of_every_step(
    tiny_world: oracle.GeneratorOracle, launches: str, observed: bool
) -> None:
    """``_hazard`` and ``purchase_probability`` against stepping through the window one
    interval at a time, over launches, ends of trend windows and (with every product,
    leaders too, launched around the window) leaders launching and trending."""
    from dataclasses import replace

    from training.data.synthetic.sessions import TREND_WINDOW_S

    world = tiny_world.world
    day = 86400
    launch = world.catalogue.launch.astype(np.int64)
    # The window starts 10 days before a launch, so holds it and the end of its trend.
    start = int(np.sort(launch[launch > int(world.start.astype(np.int64))])[5]) - 10 * day
    end = start + 60 * day
    if launches != "as generated":
        rng = np.random.default_rng(SEED)
        moved = start + rng.integers(-50 * day, 70 * day, len(launch))
        catalogue = replace(world.catalogue, launch=moved.astype("datetime64[s]"))
        world = replace(world, catalogue=catalogue)
    everyone = np.arange(world.population.n)
    records = {f"c{i}": np.array([i]) for i in everyone[2:]} | {"both": np.array([0, 1])}
    seen = None
    if observed:
        rng = np.random.default_rng(SEED)
        views = {c: rng.integers(0, world.catalogue.n, 5) for c in list(records)[::2]}
        seen = oracle.Observed(cut=start, views=views)
    found = oracle.GeneratorOracle(world, records, seen)
    owners = ["both", "both", *[f"c{i}" for i in everyone[2:]]]
    rows = found._records(everyone, owners)
    trend_ends = found.launch + TREND_WINDOW_S
    assert ((trend_ends > start) & (trend_ends < end)).any()
    if not observed:  # the observed oracle has nothing launching after the cut
        assert ((found.launch > start) & (found.launch < end)).any()
    if launches != "as generated":
        assert (found.launch[found.leader] >= start).any()  # at the cut, when observed

    expected = _stepped_hazard(found, rows, start, end)
    np.testing.assert_allclose(found._hazard(rows, start, end), expected, rtol=0, atol=1e-12)
    ids = ["nobody", "both", "c2", "c7"]
    # Every other product, backwards, and one the generator did not make.
    products = np.arange(world.catalogue.n)[::-2]
    items = IdVocabulary([*world.catalogue.product_ids[products], "P_unknown"])
    chance = found.purchase_probability(
        ids, items, pd.Timestamp(start, unit="s", tz="UTC"), pd.Timestamp(end, unit="s", tz="UTC")
    )
    merged = expected[[0, 2, 7]]
    merged[0] += expected[1]
    assert (chance[0] == 0).all() and (chance[:, -1] == 0).all()
    np.testing.assert_allclose(
        chance[1:, :-1], 1.0 - np.exp(-merged[:, products]), rtol=0, atol=1e-12
    )


def test_the_oracle_ranks_above_every_model_on_the_tiny_storefront(tiny: Dataset) -> None:
    """The ceiling on real clean data: the replayed generator, its ids mapped through
    cleaning, beats popularity and random, and no trained model beats it; nor does the
    observed-tastes oracle, which knows less."""
    from segrec.settings import Settings
    from training.models.interactions import Interactions
    from training.train.pipeline import held_out
    from training.train.stacks import fit_models, make_models, score_stack

    clean = tiny.clean("events")
    split = temporal_protocol(clean, test_days=28, validation_days=28)
    found, info = oracle.load_oracle(tiny.settings, split)
    assert found is not None and info["available"] and info["seed"] == SEED
    assert info["clean_customers"] == len(tiny.clean("customers"))
    customers = tiny.clean("customers")["customer_id"]
    before = Interactions.from_events(
        split.test.train,
        products=tiny.clean("products"),
        reference_time=split.test.reference_time,
        segments=pd.Series(0, index=customers),
    )
    ids, index, held = held_out(split.test, before, new_items_only=False, known_only=False)
    models = fit_models(make_models(Settings(seed=SEED)), before)
    stack = score_stack(models, before, index)
    truth = found.scores(ids, before.items)
    both = found.rows(ids, before.items)
    np.testing.assert_array_equal(both[oracle.ORACLE], truth)
    rng = np.random.default_rng(SEED)
    rankings = {name: stack[:, m] for m, name in enumerate(models)}
    rankings |= {"oracle": truth, "random": rng.random(truth.shape)}
    rankings["observed"] = both[oracle.OBSERVED_ORACLE]
    relevant = dict(zip(ids, held, strict=True))
    k = 10
    lists = {n: np.argsort(-s, axis=1, kind="stable")[:, :k] for n, s in rankings.items()}
    ndcg = {
        n: evaluate_run(dict(zip(ids, top, strict=True)), relevant, k).per_customer["ndcg"]
        for n, top in lists.items()
    }
    assert len(ids) > 30
    for baseline in ("popularity", "random"):
        assert paired_bootstrap(ndcg["oracle"], ndcg[baseline], random_state=SEED).low > 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    expected_dcg = {n: np.take_along_axis(truth, top, 1) @ discount for n, top in lists.items()}
    for name in [*models, "observed"]:
        # In expectation (DCG under the true chances) never beaten, customer by customer;
        # on the one realised window, no model (nor the observed-tastes oracle) is better
        # beyond sampling noise.
        assert (expected_dcg["oracle"] >= expected_dcg[name] - 1e-12).all(), name
        assert paired_bootstrap(ndcg[name], ndcg["oracle"], random_state=SEED).low < 0, name


def test_no_oracle_without_the_generator(tmp_path: Path) -> None:
    """Imported data has no true preferences: the report says so instead of a row."""
    from segrec.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", reports_dir=tmp_path / "reports")
    settings.clean_dir.mkdir(parents=True)
    manifest = {"data_version": "abc", "source": {"format": "online_retail"}}
    (settings.clean_dir / "manifest.json").write_text(json.dumps(manifest))
    events = synthetic_events()
    found, info = oracle.load_oracle(settings, temporal_protocol(events, test_days=28))
    assert found is None and not info["available"]
    assert "not the synthetic generator" in info["reason"]
    assert oracle.describe(info).startswith("No oracle row: the data came from")


def test_evaluating_in_chunks_gives_the_figures_of_one_chunk() -> None:
    """A view scored a few customers at a time (what bounds a large storefront's memory)
    measures every model and the blend exactly as one stack of everyone would."""
    from segrec.filters import FilterRules
    from training.models.blend_fit import SegmentBlender
    from training.train.evaluate import BLEND, RANDOM, ViewChunk, evaluate_rankings

    rng = np.random.default_rng(3)
    n_customers, n_models, n_items = 23, 3, 40
    stack = rng.random((n_customers, n_models, n_items))
    stack[:, :, :2] = -1.0  # excluded for everyone
    relevant = rng.random((n_customers, n_items)) < 0.1
    relevant[:, 0] = False
    relevant[np.arange(n_customers), rng.integers(2, n_items, n_customers)] = True
    segments = rng.integers(0, 2, n_customers)
    blender = SegmentBlender(min_customers=5).fit(stack, relevant, relevant.sum(axis=1), segments)
    bought = [rng.integers(0, n_items, 3) for _ in range(n_customers)]
    rules = FilterRules(
        in_stock=rng.random(n_items) < 0.9,
        category=rng.integers(0, 4, n_items),
        repeat_category=np.zeros(4, dtype=bool),
        max_per_category=3,
    )
    groups = pd.DataFrame({"customer_id": [f"c{i}" for i in range(n_customers)]})
    oracle = rng.random((n_customers, n_items))

    def run(rows: int) -> Any:
        chunks = (
            ViewChunk(
                stack=stack[lo : lo + rows],
                relevant=relevant[lo : lo + rows],
                segments=segments[lo : lo + rows],
                bought=bought[lo : lo + rows],
                extra={"oracle": oracle[lo : lo + rows]},
            )
            for lo in range(0, n_customers, rows)
        )
        return evaluate_rankings(
            chunks=chunks,
            model_names=["a", "b", "c"],
            blender=blender,
            groups=groups,
            k=5,
            seed=0,
            rules=rules,
        )

    whole, pieces = run(n_customers), run(4)
    assert set(whole.runs) == set(pieces.runs) == {"a", "b", "c", BLEND, RANDOM, "oracle"}
    for name in ("a", "b", "c", BLEND, "oracle"):
        for metric, values in whole.runs[name].per_customer.items():
            np.testing.assert_array_equal(values, pieces.runs[name].per_customer[metric])
        assert whole.runs[name].coverage == pieces.runs[name].coverage
    # The histograms add up over the chunks: every relevant item is counted once.
    for name in ("a", BLEND):
        assert sum(pieces.score_histograms[name]["relevant"]) == sum(
            whole.score_histograms[name]["relevant"]
        )
    with pytest.raises(ValueError, match="chunks held"):
        evaluate_rankings(
            chunks=iter([ViewChunk(stack[:3], relevant[:3], segments[:3])]),
            model_names=["a", "b", "c"],
            blender=blender,
            groups=groups,
            k=5,
            seed=0,
        )
