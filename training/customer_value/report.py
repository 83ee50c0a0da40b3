"""``reports/customer_value.json`` and ``reports/customer_value.html`` (plots as PNG):
the temporal-holdout figures of churn risk and CLV, versions, seeds and as-of times."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from training.customer_value.pipeline import CustomerValueRun
from training.html_report import html_page, png_base64

CALIBRATION_BINS = 10


def report_dict(run: CustomerValueRun) -> dict[str, Any]:
    bands = run.scores["clv_band"].value_counts()
    return {
        "value_model_version": run.version,
        "as_of": run.as_of.isoformat(),
        "versions": run.versions,
        "seeds": run.seeds,
        "plans": {name: plan.as_dict() for name, plan in run.plans.items()},
        "feature_sources": run.sources,
        "churn": run.churn,
        "clv": run.clv,
        "scored": {
            "customers": run.scored,
            "mean_churn_risk": round(float(run.scores["churn_risk"].mean()), 4),
            "mean_clv_expected": round(float(run.scores["clv_expected"].mean()), 3),
            "clv_bands": {str(k): int(v) for k, v in bands.items()},
            "path": str(run.path),
            "online_rows": run.online_rows,
        },
        "seconds": run.seconds,
    }


def _roc_figure(holdout: Any) -> str:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for column, label in (
        ("risk", "calibrated model"),
        ("risk_uncalibrated", "model before calibration"),
        ("recency_baseline", "days since last purchase"),
    ):
        fpr, tpr, _ = roc_curve(holdout["churned"], holdout[column])
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Churn: ROC")
    ax.legend(loc="lower right", fontsize=8)
    return png_base64(fig)


def _pr_figure(holdout: Any) -> str:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for column, label in (("risk", "calibrated model"), ("recency_baseline", "days since last")):
        precision, recall, _ = precision_recall_curve(holdout["churned"], holdout[column])
        ax.plot(recall, precision, label=label)
    ax.axhline(holdout["churned"].mean(), color="grey", linestyle=":", label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Churn: precision-recall")
    ax.legend(loc="lower left", fontsize=8)
    return png_base64(fig)


def _calibration_figure(holdout: Any) -> str:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for column, label in (("risk_uncalibrated", "before calibration"), ("risk", "calibrated")):
        observed, predicted = calibration_curve(
            holdout["churned"], holdout[column], n_bins=CALIBRATION_BINS, strategy="quantile"
        )
        ax.plot(predicted, observed, marker="o", label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    ax.set(xlabel="predicted churn risk", ylabel="observed churn rate", title="Churn: calibration")
    ax.legend(loc="upper left", fontsize=8)
    return png_base64(fig)


def _clv_deciles_figure(clv: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, marker in (("model", "o"), ("naive", "s")):
        rows = clv[name]["deciles"]
        ax.plot(
            [r["predicted"] for r in rows],
            [r["actual"] for r in rows],
            marker=marker,
            label=f"{name} (deciles of its prediction)",
        )
    top = max(
        max(r["predicted"], r["actual"]) for n in ("model", "naive") for r in clv[n]["deciles"]
    )
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="predicted = actual")
    ax.set(
        xlabel="mean predicted spend",
        ylabel="mean actual spend",
        title="CLV: predicted vs actual by decile",
        xscale="symlog",
        yscale="symlog",
    )
    ax.legend(loc="upper left", fontsize=8)
    return png_base64(fig)


def _clv_scatter_figure(holdout: Any) -> str:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(np.log1p(holdout["predicted"]), np.log1p(holdout["actual"]), s=3, alpha=0.3)
    top = float(np.log1p(max(holdout["predicted"].max(), holdout["actual"].max())))
    ax.plot([0, top], [0, top], color="grey", linestyle=":")
    ax.set(
        xlabel="log(1 + predicted spend)",
        ylabel="log(1 + actual spend)",
        title="CLV: every holdout customer",
    )
    return png_base64(fig)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_reports(run: CustomerValueRun, reports_dir: Path) -> tuple[Path, Path]:
    reports_dir.mkdir(parents=True, exist_ok=True)
    summary = report_dict(run)
    json_path = reports_dir / "customer_value.json"
    json_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    churn, clv = run.churn, run.clv
    body = "<h2>Churn (temporal holdout)</h2>" + _table(
        [
            ["ROC-AUC", churn["roc_auc"], churn["recency_baseline"]["roc_auc"]],
            ["PR-AUC", churn["pr_auc"], churn["recency_baseline"]["pr_auc"]],
            ["Brier before calibration", churn["brier_uncalibrated"], ""],
            ["Brier calibrated", churn["brier_calibrated"], ""],
            ["Brier of the base rate", churn["brier_base_rate"], ""],
        ],
        ["metric", "model", "days since last purchase"],
    )
    body += "<h2>CLV (temporal holdout)</h2>" + _table(
        [
            [metric, clv["model"][metric], clv["naive"][metric]]
            for metric in (
                "mae",
                "rmse",
                "pearson",
                "spearman",
                "predicted_total_over_actual",
                "top_decile_spend_share",
            )
        ],
        ["metric", "model", "naive (rate x horizon)"],
    )
    churn_holdout, clv_holdout = run.holdout["churn"], run.holdout["clv"]
    figures = [
        ("Churn: ROC", _roc_figure(churn_holdout)),
        ("Churn: precision-recall", _pr_figure(churn_holdout)),
        ("Churn: calibration", _calibration_figure(churn_holdout)),
        ("CLV: deciles", _clv_deciles_figure(clv)),
        ("CLV: predicted vs actual", _clv_scatter_figure(clv_holdout)),
    ]
    html_path = reports_dir / "customer_value.html"
    html_path.write_text(
        html_page("churn risk and customer lifetime value", summary, body, figures)
    )
    return json_path, html_path
