"""Point-in-time panels: customer features as of a time t beside what the customer did in
the ``horizon`` days from t.

As-of times lie on the feature snapshot grid (the newest snapshot, then every
``feature_snapshot_days`` back). Times that ``make features`` wrote are read from
``customer_features.parquet``; older ones are computed with the very function that
wrote them (:func:`training.features.customer.customer_features`, events before t only),
because a 180-day CLV horizon needs more history than the default six snapshots span.

The outcome window is ``[t, t + horizon)``: features use events strictly before t, so a
purchase is in a row's past or in its future, never in both and never in neither.

Temporal protocol (what production sees): the evaluation time is the newest grid time
whose whole horizon is in the data; the evaluated model trains only on times whose
horizon closed by then, so no training label peeks into the evaluation window. The
exported model is refitted on every time with a full horizon and scores the newest
snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from segrec.consent import ConsentLedger
from segrec.settings import Settings
from training.features.build import CUSTOMER_FILE
from training.features.customer import customer_features
from training.features.inputs import FeatureInputs, load_inputs

# A customer seen for two days who bought once would extrapolate to fifteen orders a
# month: rates are taken over at least this many observed days.
MIN_OBSERVED_DAYS = 30.0
# The numeric point-in-time features (customer_training_v1) read for each as-of time.
SNAPSHOT_FEATURES = (
    "recency_days",
    "frequency",
    "monetary_total",
    "avg_order_value",
    "purchase_gap_mean_days",
    "purchase_gap_std_days",
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "rfm_score",
    "price_band_low_share",
    "price_band_mid_share",
    "price_band_high_share",
    "views_90d",
    "carts_90d",
    "purchases_90d",
    "sessions_90d",
    "cart_rate_90d",
    "purchase_rate_90d",
    "abandonment_rate_90d",
    "active_days_90d",
    "discount_affinity",
    "ratings",
    "mean_rating",
    "days_since_last_event",
    "tenure_days",
    "age",
    "interactions",
    "interaction_rate_30d",
    "views_per_session",
    "repeat_view_share",
    "mean_basket_quantity",
    "novelty_share",
)
DERIVED_FEATURES = ("observed_days", "order_rate_30d", "spend_rate_30d")
# Totals grow with the history a time has behind it (the data begins 540 days before the
# newest snapshot), so a model trained on older times would misread the newest
# snapshot's totals as more valuable; the models read rates per observed day instead.
HISTORY_TOTALS = ("monetary_total", "frequency", "interactions", "ratings", "observed_days")
MODEL_FEATURES = tuple(f for f in SNAPSHOT_FEATURES + DERIVED_FEATURES if f not in HISTORY_TOTALS)
OUTCOMES = ("future_purchases", "future_spend")


@dataclass(frozen=True)
class AsOfPlan:
    """The as-of times of one horizon's temporal protocol, newest first."""

    horizon_days: int
    evaluate_at: pd.Timestamp
    # Models that learn from labelled times (empty for one that learns from the history
    # before a time): the evaluated model's, whose horizons closed by evaluate_at, and
    # the exported model's, whose horizons closed by the data end.
    train_at: list[pd.Timestamp]
    refit_at: list[pd.Timestamp]

    def as_dict(self) -> dict[str, Any]:
        return {
            "horizon_days": self.horizon_days,
            "evaluate_at": self.evaluate_at.isoformat(),
            "train_at": [t.isoformat() for t in self.train_at],
            "refit_at": [t.isoformat() for t in self.refit_at],
        }


def plan_times(
    *,
    anchor: pd.Timestamp,
    step_days: int,
    horizon_days: int,
    data_start: pd.Timestamp,
    data_end: pd.Timestamp,
    max_times: int,
    labelled_training: bool = True,
) -> AsOfPlan:
    """As-of times on the grid ``anchor - k * step_days`` for one horizon.

    Only times with at least ``step_days`` of history before them are used (a snapshot
    with no past says nothing). Raises ``ValueError`` when no time has a full horizon
    ahead, or, for a model that learns from labelled times (``labelled_training``), when
    no training time's horizon closes by the evaluation time.
    """
    step = pd.Timedelta(days=step_days)
    horizon = pd.Timedelta(days=horizon_days)
    grid = []
    t = anchor
    while t - data_start >= step:
        grid.append(t)
        t -= step
    labelled = [t for t in grid if t + horizon <= data_end]
    if not labelled:
        raise ValueError(
            f"no as-of time has a full {horizon_days}-day future in the data "
            f"({data_start.date()} .. {data_end.date()})"
        )
    evaluate_at = labelled[0]
    if not labelled_training:
        return AsOfPlan(horizon_days, evaluate_at, [], [])
    train_at = [t for t in labelled if t + horizon <= evaluate_at][:max_times]
    if not train_at:
        span = (data_end - data_start).days
        raise ValueError(
            f"a {horizon_days}-day horizon needs about {2 * horizon_days + step_days} days of "
            f"history for a temporal evaluation; the data spans {span}"
        )
    return AsOfPlan(horizon_days, evaluate_at, train_at, labelled[:max_times])


def _by_customer(purchases: pd.DataFrame, start: pd.Timestamp | None, stop: pd.Timestamp) -> Any:
    ts = purchases["ts"]
    inside = ts < stop if start is None else (ts >= start) & (ts < stop)
    window = purchases[inside.to_numpy()]
    return window.groupby(window["customer_id"].astype(object))


def future_outcomes(
    purchases: pd.DataFrame, customer_ids: Iterable[str], as_of: pd.Timestamp, horizon_days: int
) -> pd.DataFrame:
    """What each customer did in ``[as_of, as_of + horizon_days)``.

    ``purchases``: one row per purchase event with ``customer_id``, ``ts``, ``value`` and
    ``outlier`` (flagged by cleaning). ``future_purchases`` counts every purchase (a bulk
    order flagged as an outlier is still a purchase: the customer did not churn);
    ``future_spend`` sums ``value`` over unflagged purchases only, since one flagged
    order of 900 units would outweigh a segment's year of spend.
    """
    ids = pd.Index(list(customer_ids), dtype=object)
    stop = as_of + pd.Timedelta(days=horizon_days)
    counted = _by_customer(purchases, as_of, stop).size()
    spent = _by_customer(purchases[~purchases["outlier"].to_numpy()], as_of, stop)["value"].sum()
    return pd.DataFrame(
        {
            "future_purchases": counted.reindex(ids).fillna(0).astype(np.int64),
            "future_spend": spent.reindex(ids).fillna(0.0).astype(np.float64),
        },
        index=ids,
    )


def derived_features(
    features: pd.DataFrame,
    purchases: pd.DataFrame,
    signup: pd.Series,
    as_of: pd.Timestamp,
    data_start: pd.Timestamp,
) -> pd.DataFrame:
    """Rates per 30 observed days (since signup, or since the data begins for customers
    older than that), with unflagged spend as in :func:`future_outcomes`."""
    ids = pd.Index(features["customer_id"].astype(object))
    signed_up = pd.to_datetime(signup.reindex(ids), utc=True)
    observed_from = signed_up.where(signed_up >= data_start, data_start)
    observed = ((as_of - observed_from).dt.total_seconds() / 86400).clip(lower=MIN_OBSERVED_DAYS)
    clean = purchases[~purchases["outlier"].to_numpy()]
    spend = _by_customer(clean, None, as_of)["value"].sum().reindex(ids).fillna(0.0)
    frequency = pd.Series(features["frequency"].to_numpy(dtype=np.float64), index=ids)
    return pd.DataFrame(
        {
            "observed_days": observed.to_numpy(dtype=np.float64),
            "order_rate_30d": (frequency / observed * 30.0).to_numpy(),
            "spend_rate_30d": (spend / observed * 30.0).to_numpy(),
        },
        index=features.index,
    )


def purchase_summary(
    purchases: pd.DataFrame,
    signup: pd.Series,
    customer_ids: Iterable[str],
    as_of: pd.Timestamp,
    data_start: pd.Timestamp,
) -> pd.DataFrame:
    """Each customer's purchase history before ``as_of`` as the CLV model reads it
    (:data:`training.customer_value.clv.SUMMARY_COLUMNS`), indexed by customer id.

    An order is a purchase day; its value sums the unflagged purchases (as in
    :func:`future_outcomes`). ``signup`` is the signup time per customer id.
    """
    ids = pd.Index(list(customer_ids), dtype=object)
    before = purchases[(purchases["ts"] < as_of).to_numpy()]
    days = pd.DataFrame(
        {
            "cid": before["customer_id"],
            "day": before["ts"].dt.floor("D"),
            "ts": before["ts"],
            "value": before["value"],
            "outlier": before["outlier"],
        }
    )
    orders = days.groupby(["cid", "day"])["ts"].min().reset_index().groupby("cid")
    first_day, last_day = orders["day"].min(), orders["day"].max()
    valued = days[~days["outlier"]].groupby(["cid", "day"])["value"].sum().groupby(level=0)
    first_ts = orders["ts"].min().reindex(ids)
    started = pd.to_datetime(signup.reindex(ids), utc=True)
    seen_from = started.where(started >= data_start, data_start)
    waited_until = first_ts.where(first_ts.notna(), as_of)

    def day_count(delta: pd.Series) -> pd.Series:
        return delta.dt.total_seconds() / 86400

    return pd.DataFrame(
        {
            "orders": orders.size().reindex(ids).fillna(0).astype(np.float64),
            "recency_span_days": day_count(last_day - first_day).reindex(ids),
            "first_purchase_age_days": day_count(as_of - first_day).reindex(ids),
            "value_orders": valued.size().reindex(ids).fillna(0).astype(np.float64),
            "mean_order_value": valued.mean().reindex(ids),
            "first_purchase_exposure_days": day_count(waited_until - seen_from).clip(lower=0.0),
            "signup_seen": (started >= data_start).to_numpy(),
        },
        index=ids,
    )


def load_purchases(clean_dir: Path) -> pd.DataFrame:
    """Purchase events with cleaning's outlier flags (which the feature inputs leave out)."""
    table = pq.read_table(
        clean_dir / "events.parquet",
        columns=["customer_id", "ts", "type", "value", "price_outlier", "quantity_outlier"],
        filters=[("type", "==", "purchase")],
    )
    frame = table.to_pandas()
    flagged = frame["price_outlier"].fillna(False) | frame["quantity_outlier"].fillna(False)
    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"].astype(object),
            "ts": frame["ts"],
            "value": pd.to_numeric(frame["value"], errors="coerce").fillna(0.0),
            "outlier": flagged.to_numpy(dtype=bool),
        }
    ).sort_values("ts", kind="stable", ignore_index=True)


@dataclass
class PanelBuilder:
    """Features as of grid times (cached: churn and CLV share times) and outcomes after them,
    for consenting customers only: those without personalisation consent are neither
    profiled nor scored (as in segmentation)."""

    inputs: FeatureInputs
    purchases: pd.DataFrame
    snapshot_path: Path
    snapshot_times: list[pd.Timestamp]
    consenting: frozenset[str]
    progress: bool | None = None
    sources: dict[str, str] = field(default_factory=dict)  # as-of time -> file | computed
    _cache: dict[pd.Timestamp, pd.DataFrame] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, *, progress: bool | None = None) -> PanelBuilder:
        path = settings.features_dir / CUSTOMER_FILE
        if not path.exists():
            raise FileNotFoundError(f"no customer features at {path}: run `make features` first")
        stamps = pc.unique(pq.read_table(path, columns=["event_timestamp"]).column(0))
        inputs = load_inputs(settings.clean_dir, ConsentLedger(settings.consent_file).latest())
        customers = inputs.customers
        consent = customers["consent_personalisation"].fillna(False).astype(bool)
        return cls(
            inputs=inputs,
            purchases=load_purchases(settings.clean_dir),
            snapshot_path=path,
            snapshot_times=sorted(pd.Timestamp(t) for t in stamps.to_pylist()),
            consenting=frozenset(customers.loc[consent.to_numpy(), "customer_id"].astype(str)),
            progress=progress,
        )

    @property
    def anchor(self) -> pd.Timestamp:
        """The newest feature snapshot: the time customers are scored as of."""
        return self.snapshot_times[-1]

    @property
    def data_start(self) -> pd.Timestamp:
        return pd.Timestamp(self.inputs.events["ts"].min())

    @property
    def data_end(self) -> pd.Timestamp:
        """Just after the last clean event (live events ingested by ``train`` included),
        but never before the newest snapshot."""
        return max(self.inputs.end, self.anchor)

    def plan(
        self, horizon_days: int, step_days: int, max_times: int, labelled_training: bool = True
    ) -> AsOfPlan:
        return plan_times(
            labelled_training=labelled_training,
            anchor=self.anchor,
            step_days=step_days,
            horizon_days=horizon_days,
            data_start=self.data_start,
            data_end=self.data_end,
            max_times=max_times,
        )

    def prefetch(self, times: Iterable[pd.Timestamp]) -> None:
        """Compute or read every time's features once, with a progress bar."""
        missing = sorted(set(times) - set(self._cache))
        for t in tqdm(
            missing,
            desc="customer value: features as of",
            unit="time",
            disable=None if self.progress is None else not self.progress,
        ):
            self._features(t)

    def _features(self, as_of: pd.Timestamp) -> pd.DataFrame:
        if as_of not in self._cache:
            if as_of in self.snapshot_times:
                frame = pd.read_parquet(
                    self.snapshot_path,
                    columns=["customer_id", *SNAPSHOT_FEATURES],
                    filters=[("event_timestamp", "==", as_of)],
                )
                self.sources[as_of.isoformat()] = "file"
            else:
                frame = customer_features(self.inputs, as_of)[["customer_id", *SNAPSHOT_FEATURES]]
                self.sources[as_of.isoformat()] = "computed"
            frame = frame[frame["customer_id"].astype(str).isin(self.consenting).to_numpy()]
            frame = frame.reset_index(drop=True)
            frame["customer_id"] = frame["customer_id"].astype(str)
            derived = derived_features(frame, self.purchases, self._signup, as_of, self.data_start)
            frame = pd.concat([frame, derived], axis=1)
            numeric = [*SNAPSHOT_FEATURES, *DERIVED_FEATURES]
            frame[numeric] = frame[numeric].astype(np.float64)
            self._cache[as_of] = frame
        return self._cache[as_of]

    def summary(self, as_of: pd.Timestamp) -> pd.DataFrame:
        """:func:`purchase_summary` of the consenting customers signed up by ``as_of``."""
        ids = self._features(as_of)["customer_id"]
        return purchase_summary(self.purchases, self._signup, ids, as_of, self.data_start)

    @property
    def _signup(self) -> pd.Series:
        signup = self.inputs.customers.set_index("customer_id")["signup_ts"]
        signup.index = signup.index.astype(str)
        return signup

    def rows(self, times: Sequence[pd.Timestamp], horizon_days: int | None) -> pd.DataFrame:
        """One row per (consenting customer, as-of time): ``customer_id``,
        ``event_timestamp``, the snapshot and derived features and, with a horizon,
        :data:`OUTCOMES`."""
        self.prefetch(times)
        parts = []
        for t in times:
            frame = self._features(t).copy()
            frame.insert(1, "event_timestamp", t)
            if horizon_days is not None:
                outcomes = future_outcomes(self.purchases, frame["customer_id"], t, horizon_days)
                for column in OUTCOMES:
                    frame[column] = outcomes[column].to_numpy()
            parts.append(frame)
        return pd.concat(parts, ignore_index=True)
