"""``make train``'s customer value step: fit churn risk and CLV on point-in-time panels,
evaluate both on a temporal holdout, refit, score every consenting customer as of the
newest feature snapshot and write them as the ``customer_value`` feature view (offline
parquet, then online).

The step reads only the clean tables and the feature snapshots, so it runs without the
recommender models and is seeded from ``settings.seed`` alone.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from segrec.settings import Settings
from training.customer_value.churn import (
    ChurnModel,
    churn_metrics,
    ranking_metrics,
    recency_baseline,
)
from training.customer_value.clv import CLVModel, clv_metrics, naive_clv
from training.customer_value.panel import MODEL_FEATURES, AsOfPlan, PanelBuilder
from training.laps import Laps

VALUE_FILE = "customer_value.parquet"
VALUE_VIEW = "customer_value"
# As-of times per fit (newest first). More times add rows but older, shorter histories;
# four keep the churn fit within the default snapshots' reach and the CLV fit within
# a 540-day history.
MAX_TIMES = 4
VALUE_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        pa.field("event_timestamp", pa.timestamp("ns", tz="UTC")),
        pa.field("churn_risk", pa.float64()),
        pa.field("clv_expected", pa.float64()),
        pa.field("clv_band", pa.string()),
        pa.field("value_model_version", pa.string()),
    ]
)


@dataclass
class CustomerValueRun:
    version: str
    as_of: pd.Timestamp
    plans: dict[str, AsOfPlan]
    churn: dict[str, Any]
    clv: dict[str, Any]
    scored: int
    path: Path
    versions: dict[str, str]
    seeds: dict[str, int]
    sources: dict[str, str]  # as-of time -> read from the snapshot file, or computed
    holdout: dict[str, pd.DataFrame]  # per model: the evaluation rows, for the plots
    scores: pd.DataFrame
    online_rows: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def _version() -> str:
    return "value-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


def _features(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[list(MODEL_FEATURES)]


def _churned(rows: pd.DataFrame) -> np.ndarray:
    return (rows["future_purchases"] == 0).to_numpy(dtype=np.int64)


def fit_churn(rows: pd.DataFrame, seed: int) -> ChurnModel:
    return ChurnModel(random_state=seed).fit(
        _features(rows), _churned(rows), groups=rows["customer_id"].to_numpy()
    )


def fit_clv(builder: PanelBuilder, as_of: pd.Timestamp, horizon_days: int) -> CLVModel:
    """BG/NBD x Gamma-Gamma on the purchase history before ``as_of``."""
    return CLVModel(horizon_days=horizon_days).fit(builder.summary(as_of))


def evaluate_churn(
    builder: PanelBuilder, plan: AsOfPlan, seed: int
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit on the plan's training times, measure on its evaluation time."""
    train = builder.rows(plan.train_at, plan.horizon_days)
    test = builder.rows([plan.evaluate_at], plan.horizon_days)
    model = fit_churn(train, seed)
    y = _churned(test)
    holdout = pd.DataFrame(
        {
            "customer_id": test["customer_id"],
            "churned": y,
            "risk": model.predict_proba(_features(test))[:, 1],
            "risk_uncalibrated": model.predict_proba_uncalibrated(_features(test))[:, 1],
            "recency_baseline": recency_baseline(test["recency_days"].to_numpy()),
        }
    )
    metrics = churn_metrics(
        y, holdout["risk"].to_numpy(), holdout["risk_uncalibrated"].to_numpy(), model.base_rate_
    )
    metrics.update(
        {
            "train_rows": len(train),
            "train_base_rate": round(model.base_rate_, 4),
            "fit_rows": model.n_fit_rows_,
            "calibration_rows": model.n_calibration_rows_,
            "params": model.get_params(),
            "recency_baseline": ranking_metrics(y, holdout["recency_baseline"].to_numpy()),
        }
    )
    return metrics, holdout


def evaluate_clv(builder: PanelBuilder, plan: AsOfPlan) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit on the history before the evaluation time, measure on the horizon after it."""
    at = plan.evaluate_at
    model = fit_clv(builder, at, plan.horizon_days)
    test = builder.rows([at], plan.horizon_days)
    summary = builder.summary(at).reindex(test["customer_id"])
    holdout = pd.DataFrame(
        {
            "customer_id": test["customer_id"],
            "actual": test["future_spend"].to_numpy(),
            "predicted": model.predict(summary),
            "naive": naive_clv(test["spend_rate_30d"].to_numpy(), plan.horizon_days),
        }
    )
    metrics = clv_metrics(
        holdout["actual"].to_numpy(), holdout["predicted"].to_numpy(), holdout["naive"].to_numpy()
    )
    bands = model.band(holdout["predicted"].to_numpy())
    metrics.update(
        {
            "params": model.params(),
            "fit_customers": model.n_customers_,
            "excluded_outlier_purchases": int(builder.purchases["outlier"].sum()),
            "actual_mean_by_band": {
                band: round(float(holdout["actual"].to_numpy()[bands == band].mean()), 3)
                for band in ("low", "mid", "high")
                if (bands == band).any()
            },
        }
    )
    return metrics, holdout


def write_value_rows(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as the view's offline source: rows of the same as-of time are
    replaced, earlier ones kept for point-in-time joins. The file is swapped in whole."""
    table = pa.Table.from_pandas(frame, schema=VALUE_SCHEMA, preserve_index=False)
    if path.exists():
        previous = pq.read_table(path)
        if previous.schema.equals(VALUE_SCHEMA):
            stamps = set(frame["event_timestamp"])
            keep = ~previous.column("event_timestamp").to_pandas().isin(stamps).to_numpy()
            table = pa.concat_tables([previous.filter(pa.array(keep)), table])
    staging = path.with_suffix(".tmp")
    pq.write_table(table, staging)
    staging.replace(path)


def _versions(settings: Settings) -> dict[str, str]:
    """The data and feature versions the models were fitted on (as the bundle records)."""
    clean = json.loads((settings.clean_dir / "manifest.json").read_text())
    versions = {"data": str(clean["data_version"])}
    manifest = settings.features_dir / "manifest.json"
    if manifest.exists():
        features = json.loads(manifest.read_text())
        versions["features"] = f"{features['features_version']}:{features['data_version']}"
    return versions


def run_customer_value(
    settings: Settings, *, write_online: bool = True, progress: bool | None = None
) -> CustomerValueRun:
    """Evaluate, refit and score churn risk and CLV; write the ``customer_value`` view.

    Gradient boosting runs on one OpenMP thread: the fits are small, and on shared cores
    (this step runs beside serving and tests on a 2-core machine) OpenMP's spinning
    threads made them five times slower than one thread.
    """
    with threadpool_limits(limits=1, user_api="openmp"):
        return _run(settings, write_online=write_online, progress=progress)


def _run(settings: Settings, *, write_online: bool, progress: bool | None) -> CustomerValueRun:
    laps = Laps()
    lap = laps.lap

    builder = PanelBuilder.from_settings(settings, progress=progress)
    step = settings.feature_snapshot_days
    plans = {
        "churn": builder.plan(settings.churn_horizon_days, step, MAX_TIMES),
        # The CLV model learns from the history before a time, not from labelled times.
        "clv": builder.plan(settings.clv_horizon_days, step, MAX_TIMES, labelled_training=False),
    }
    builder.prefetch(
        [builder.anchor]
        + [t for p in plans.values() for t in (p.evaluate_at, *p.train_at, *p.refit_at)]
    )
    lap("features")

    churn, churn_holdout = evaluate_churn(builder, plans["churn"], settings.seed)
    lap("churn_evaluate")
    clv, clv_holdout = evaluate_clv(builder, plans["clv"])
    lap("clv_evaluate")

    churn_model = fit_churn(
        builder.rows(plans["churn"].refit_at, plans["churn"].horizon_days), settings.seed
    )
    clv_model = fit_clv(builder, builder.anchor, settings.clv_horizon_days)
    now = builder.rows([builder.anchor], None)
    version = _version()
    expected = clv_model.predict(builder.summary(builder.anchor).reindex(now["customer_id"]))
    scores = pd.DataFrame(
        {
            "customer_id": now["customer_id"].astype(str),
            "event_timestamp": builder.anchor,
            "churn_risk": churn_model.predict_proba(_features(now))[:, 1].astype(np.float64),
            "clv_expected": expected.astype(np.float64),
            "clv_band": clv_model.band(expected).astype(str),
            "value_model_version": version,
        }
    )
    clv["exported"] = {
        "params": clv_model.params(),
        "band_thresholds": [round(float(v), 3) for v in clv_model.band_thresholds_],
    }
    path = settings.features_dir / VALUE_FILE
    write_value_rows(path, scores)
    lap("refit_and_score")

    run = CustomerValueRun(
        version=version,
        as_of=builder.anchor,
        plans=plans,
        churn=churn,
        clv=clv,
        scored=len(scores),
        path=path,
        versions=_versions(settings),
        seeds={"seed": settings.seed},
        sources=dict(sorted(builder.sources.items())),
        holdout={"churn": churn_holdout, "clv": clv_holdout},
        scores=scores,
        seconds=laps.seconds,
    )
    if write_online:
        from training.features.materialize import load_view_online

        run.online_rows = load_view_online(settings, VALUE_VIEW)
        lap("online")
    return run
