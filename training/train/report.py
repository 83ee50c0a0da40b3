"""``reports/evaluation.json`` and ``reports/evaluation.html`` (plots embedded as PNG)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from segrec.settings import Settings
from training.evaluation.intervals import bootstrap_ci, paired_bootstrap
from training.evaluation.oracle import ORACLES
from training.evaluation.oracle import describe as describe_oracle
from training.experiments.statistics import bootstrap_ratio_interval
from training.html_report import html_page, json_ready, png_base64
from training.models.blend_fit import SegmentBlender
from training.train.evaluate import (
    BLEND,
    LINEAR_BLEND,
    METHOD_LABELS,
    SCORE_BINS,
    RankingResult,
)
from training.train.pipeline import TrainingRun

HEADLINE = ("ndcg", "hit_rate", "precision", "recall", "map", "mrr")
GROUPS = ("segment_name", "lifecycle", "cold_start")


def _intervals(result: RankingResult, seed: int) -> dict[str, Any]:
    """Per model: NDCG@k with a bootstrap interval, the blend minus it and the blend's
    mean over its mean ("2x popularity"), both paired: the same customers resampled."""
    blend = result.runs[BLEND].per_customer["ndcg"]
    out = {}
    for name, run in result.runs.items():
        values = run.per_customer["ndcg"]
        entry = {"ndcg": bootstrap_ci(values, random_state=seed).to_dict()}
        if name != BLEND:
            entry["blend_minus_model"] = paired_bootstrap(
                blend, values, random_state=seed
            ).to_dict()
            # NaN (null in the JSON) where the model scores 0 throughout.
            entry["blend_over_model"] = bootstrap_ratio_interval(
                blend, values, random_state=seed
            ).to_dict()
        out[name] = entry
    return out


def validation_best_single(blender: SegmentBlender, model_names: list[str]) -> str:
    """The single model with the best validation NDCG@k (the blend's own fitting data):
    the model one would deploy without a blend, chosen as the blend's weights are."""
    return model_names[int(np.argmax(blender.single_ndcg_))]


def segments_against_best_single(
    result: RankingResult,
    model_names: list[str],
    seed: int,
    *,
    overall_best: str,
    column: str = "segment_name",
) -> dict[str, Any]:
    """Per segment, the paired bootstrap interval of the blend minus two single models over
    the segment's customers:

    - ``overall_best``: the best single model overall, chosen on validation
      (:func:`validation_best_single`), the one a storefront would run without a blend;
    - the trained model with the best mean NDCG@k in that segment, picked on the test
      customers themselves: a stricter comparison that favours the single models (the
      best of ten noisy means is biased upwards).

    With how many segments the blend leads each, and leads or trails beyond the interval."""
    labels = result.groups.set_index("customer_id")[column]
    blend = result.runs[BLEND].to_frame()["ndcg"]
    singles = {name: result.runs[name].to_frame()["ndcg"] for name in model_names}
    segments: dict[str, Any] = {}
    for segment, members in labels.groupby(labels).groups.items():
        means = {name: float(values.loc[members].mean()) for name, values in singles.items()}
        best = max(means, key=lambda name: means[name])
        ours = blend.loc[members].to_numpy()
        segments[str(segment)] = {
            "n_customers": len(members),
            "blend": round(float(ours.mean()), 5),
            "overall_best_single": round(means[overall_best], 5),
            "blend_minus_overall_best": paired_bootstrap(
                ours, singles[overall_best].loc[members].to_numpy(), random_state=seed
            ).to_dict(),
            "best_single_model": best,
            "best_single": round(means[best], 5),
            "blend_minus_best": paired_bootstrap(
                ours, singles[best].loc[members].to_numpy(), random_state=seed
            ).to_dict(),
        }
    return {
        "overall_best_single_model": overall_best,
        "segments": segments,
        "of": len(segments),
        "vs_overall_best": _tally(segments, "blend_minus_overall_best"),
        "vs_segment_best": _tally(segments, "blend_minus_best"),
    }


def _tally(segments: dict[str, Any], key: str) -> dict[str, int]:
    """Segments where the blend's difference ``key`` is above 0, and where its interval
    lies wholly above or below 0."""
    counts = _lead_counts([s[key] for s in segments.values()])
    return {f"blend_{name}": count for name, count in counts.items()}


def _lead_counts(differences: list[dict[str, Any]]) -> dict[str, int]:
    """How many paired differences are above 0, and how many intervals lie wholly above
    or below 0."""
    return {
        "ahead": sum(d["estimate"] > 0 for d in differences),
        "ahead_beyond_interval": sum(d["low"] > 0 for d in differences),
        "behind_beyond_interval": sum(d["high"] < 0 for d in differences),
    }


def ceilings(
    result: RankingResult,
    overall_best: str,
    seed: int,
    blend: dict[str, Any],
    *,
    baseline: str = "popularity",
    column: str = "segment_name",
) -> dict[str, Any]:
    """The blend (``blend``, from :func:`blend_ceiling`) and each oracle row present,
    measured by the same yardsticks: the mean over ``baseline``'s as a paired ratio with
    its interval, and per segment the paired difference from ``overall_best``. An
    oracle's interval says what the test window could show at all: where even a
    ceiling's reaches below a yardstick, no model's can be expected to clear it."""
    labels = result.groups.set_index("customer_id")[column]
    best = result.runs[overall_best].to_frame()["ndcg"]
    out: dict[str, Any] = {BLEND: blend}
    for name in ORACLES:
        if name not in result.runs:
            continue
        ours = result.runs[name].to_frame()["ndcg"]
        segments = {
            str(segment): paired_bootstrap(
                ours.loc[members].to_numpy(), best.loc[members].to_numpy(), random_state=seed
            ).to_dict()
            for segment, members in labels.groupby(labels).groups.items()
        }
        entry = _ceiling_entry(
            float(ours.mean()),
            paired_bootstrap(
                ours.to_numpy(), best.loc[ours.index].to_numpy(), random_state=seed
            ).to_dict(),
            segments,
        )
        if baseline in result.runs:
            entry[f"over_{baseline}"] = bootstrap_ratio_interval(
                result.runs[name].per_customer["ndcg"],
                result.runs[baseline].per_customer["ndcg"],
                random_state=seed,
            ).to_dict()
        out[name] = entry
    return {"overall_best_single_model": overall_best, "baseline": baseline, "methods": out}


def blend_ceiling(
    result: RankingResult,
    intervals: dict[str, Any],
    segments: dict[str, Any],
    *,
    baseline: str = "popularity",
) -> dict[str, Any]:
    """The blend's entry of :func:`ceilings`, from the figures the report already has
    (:func:`_intervals`, :func:`segments_against_best_single`): the same bootstraps."""
    overall = segments["overall_best_single_model"]
    differences = {
        name: entry["blend_minus_overall_best"] for name, entry in segments["segments"].items()
    }
    entry = _ceiling_entry(
        float(result.runs[BLEND].per_customer["ndcg"].mean()),
        intervals[overall]["blend_minus_model"],
        differences,
    )
    if baseline in intervals:
        entry[f"over_{baseline}"] = intervals[baseline]["blend_over_model"]
    return entry


def _ceiling_entry(
    mean: float, minus_best: dict[str, Any], segments: dict[str, Any]
) -> dict[str, Any]:
    return {
        "ndcg": round(mean, 5),
        "minus_overall_best": minus_best,
        "segments_minus_overall_best": segments,
        "vs_overall_best": {**_lead_counts(list(segments.values())), "of": len(segments)},
    }


def report_dict(run: TrainingRun, settings: Settings) -> dict[str, Any]:
    protocols: dict[str, Any] = {}
    overall_best = validation_best_single(run.blender, run.model_names)
    for protocol, result in run.results.items():
        intervals = _intervals(result, settings.seed)
        segments = segments_against_best_single(
            result, run.model_names, settings.seed, overall_best=overall_best
        )
        protocols[protocol] = {
            "summary": result.summary(),
            "intervals": intervals,
            "segments_vs_best_single": segments,
            # The blend beside the oracles, by the same yardsticks (synthetic data only).
            "ceilings": ceilings(
                result, overall_best, settings.seed, blend_ceiling(result, intervals, segments)
            ),
            "by_group": {
                column: json.loads(result.by_group(column).round(5).to_json(orient="index"))
                for column in GROUPS
            },
            "score_histograms": {
                "bins": SCORE_BINS.round(3).tolist(),
                "methods": result.score_histograms,
            },
        }
    blender = run.blender
    return {
        "k": settings.eval_k,
        "protocol": settings.eval_protocol,
        "split": run.split,
        "customers": run.customers,
        # Per view, the test customers evaluated and of how many (seeded sample above
        # eval_max_customers; scored in chunks of stack_chunk_mb).
        "evaluation_sample": run.evaluation_sample,
        "models": run.model_names,
        "seed": settings.seed,
        "bundle": None if run.export is None else run.export.__dict__,
        "blend": {
            "global": dict(
                zip(run.model_names, blender.global_weights_.round(4).tolist(), strict=True)
            ),
            "segments": {
                str(s): dict(zip(run.model_names, w.round(4).tolist(), strict=True))
                for s, w in zip(
                    blender.segment_ids_.tolist(), blender.segment_weights_, strict=True
                )
            },
            "backed_off_to_global": blender.backed_off_,
            "validation_customers": blender.validation_customers_,
            # Who the weights were fitted on: all validation customers up to
            # blend_max_customers, else a seeded sample stratified by segment.
            "sample": run.blend_sample,
            "validation_ndcg": blender.validation_ndcg_,
            "min_customers": blender.min_customers,
            "validation_single_model_ndcg": dict(
                zip(run.model_names, blender.single_ndcg_, strict=True)
            ),
            "repeat_share": blender.repeat_share_,
            "new_product_floor": blender.new_product_floor_,
            "new_product_floor_validation_ndcg": blender.floor_ndcg_,
            "new_product_floor_tolerance": blender.floor_tolerance,
        },
        "hyperparameter_search": {
            "best": run.search.best,
            "trials": run.search.trials,
            "seconds": run.search.seconds,
            "cut_short_by_time": run.search.cut_short,
            "validation_customers": run.search.customers,
        },
        # Boosted trees over the blend's top candidates: the tree size chosen by 2-fold
        # cross-validation on validation, kept only when they beat the blend there.
        "rerank": run.rerank,
        # Validation and test customers are grouped by their segments as of each cut-off.
        "segments_as_of": run.segments_as_of,
        "rating_errors": run.rating_errors,
        # The generator's true preferences as a ranking: the ceiling, synthetic data only.
        "oracle": run.oracle,
        "protocols": protocols,
        "seconds": run.seconds,
    }


def _bars_with_intervals(report: dict[str, Any], protocol: str) -> str:
    intervals = report["protocols"][protocol]["intervals"]
    names = list(intervals)
    means = [intervals[n]["ndcg"]["estimate"] for n in names]
    low = [m - intervals[n]["ndcg"]["low"] for n, m in zip(names, means, strict=True)]
    high = [intervals[n]["ndcg"]["high"] - m for n, m in zip(names, means, strict=True)]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    colours = [
        "tab:red" if n == BLEND else "tab:orange" if n == LINEAR_BLEND else "tab:blue"
        for n in names
    ]
    ax.bar(names, means, yerr=[low, high], color=colours, capsize=3)
    ax.set_ylabel(f"NDCG@{report['k']} (95% bootstrap interval)")
    ax.set_title(f"{protocol}: every model, the blend and the baselines")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return png_base64(fig)


def _rerank_choice(report: dict[str, Any]) -> str:
    """The re-ranker's cross-validated NDCG per tree depth against the blend's, on the
    same validation folds, and the blend on the customers its weights were fitted on."""
    rerank = report["rerank"]
    names = [f"depth {depth}" for depth in rerank["cv_ndcg"]]
    values = list(rerank["cv_ndcg"].values())
    fig, ax = plt.subplots(figsize=(7, 3))
    chosen = f"depth {rerank.get('max_depth')}" if rerank.get("chosen") else None
    ax.bar(names, values, color=["tab:red" if n == chosen else "tab:blue" for n in names])
    ax.axhline(rerank["blend_cv_ndcg"], color="black", label="blend, cross-validated")
    ax.axhline(
        rerank["blend_ndcg_fitted_on_them"],
        color="grey",
        linestyle="--",
        label="blend on the customers it was fitted on",
    )
    # The differences are a few thousandths: show the range they live in.
    shown = [*values, rerank["blend_cv_ndcg"], rerank["blend_ndcg_fitted_on_them"]]
    ax.set_ylim(0.9 * min(shown), 1.05 * max(shown))
    ax.set_ylabel(f"validation NDCG@{report['k']}")
    verdict = "kept" if rerank.get("chosen") else "not kept"
    ax.set_title(f"Re-ranker: 2-fold cross-validation ({verdict}, red: chosen)")
    ax.legend(fontsize=8, loc="lower right")
    return png_base64(fig)


def _rerank_groups(report: dict[str, Any]) -> str:
    """Per blend group, the re-ranker's cross-validated NDCG minus the blend's with its
    paired interval, and whether the group is re-ranked."""
    by_group = report["rerank"]["cv_by_group"]
    names = list(by_group)
    estimate, low, high = np.array([by_group[g]["difference"] for g in names]).T
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.4 * len(names)))
    for row, group in enumerate(names):
        kept = by_group[group]["is_reranked"]
        ax.errorbar(
            estimate[row],
            row,
            xerr=[[estimate[row] - low[row]], [high[row] - estimate[row]]],
            fmt="o",
            color="tab:blue" if kept else "tab:red",
            capsize=3,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    labels = [
        f"{by_group[g].get('name', g)} ({by_group[g]['customers']})"
        + ("" if by_group[g]["is_reranked"] else f": {by_group[g]['reason']}")
        for g in names
    ]
    ax.set_yticks(range(len(names)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"re-ranked minus blend, cross-validated NDCG@{report['k']}")
    ax.set_title("Re-ranker per blend group (validation customers; red: not re-ranked)")
    return png_base64(fig)


def _by_segment(report: dict[str, Any], protocol: str) -> str:
    table = report["protocols"][protocol]["by_group"]["segment_name"]
    segments = list(table)
    models = [m for m in table[segments[0]] if m != "n_customers"]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        ax.bar(
            np.arange(len(segments)) + j * width,
            [table[s][model] or 0 for s in segments],
            width,
            label=model,
            color="tab:red" if model == BLEND else None,
        )
    ax.set_xticks(
        np.arange(len(segments)) + 0.4,
        [f"{s} ({table[s]['n_customers']})" for s in segments],
        rotation=20,
    )
    ax.set_ylabel(f"NDCG@{report['k']}")
    ax.set_title(f"{protocol}: NDCG per segment")
    ax.legend(fontsize=7, ncol=4)
    return png_base64(fig)


def _segment_differences(report: dict[str, Any], protocol: str) -> str:
    body = report["protocols"][protocol]["segments_vs_best_single"]
    comparison = body["segments"]
    names = list(comparison)
    overall = body["overall_best_single_model"]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    positions = np.arange(len(names))
    for offset, key, label in (
        (-0.2, "blend_minus_overall_best", f"vs {overall} (best overall on validation)"),
        (0.2, "blend_minus_best", "vs the segment's best single model (picked on test)"),
    ):
        diffs = [comparison[n][key] for n in names]
        estimate = np.array([d["estimate"] for d in diffs])
        errors = [estimate - [d["low"] for d in diffs], [d["high"] for d in diffs] - estimate]
        ax.bar(positions + offset, estimate, width=0.4, yerr=errors, capsize=3, label=label)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(
        positions,
        [f"{n}\ntest-best:\n{comparison[n]['best_single_model']}" for n in names],
        fontsize=7,
    )
    ax.set_ylabel(f"blend - single, NDCG@{report['k']}")
    ax.set_title(f"{protocol}: blend minus single models per segment (95% interval)")
    ax.legend(fontsize=7)
    return png_base64(fig)


def _ceilings(report: dict[str, Any], protocol: str) -> str:
    body = report["protocols"][protocol]["ceilings"]
    methods = body["methods"]
    baseline = body["baseline"]
    names = list(methods)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    ratios = [methods[n][f"over_{baseline}"] for n in names]
    estimate = np.array([r["estimate"] for r in ratios])
    errors = [estimate - [r["low"] for r in ratios], [r["high"] for r in ratios] - estimate]
    labels = [METHOD_LABELS.get(n, n).split(" (")[0] for n in names]
    left.bar(labels, estimate, yerr=errors, capsize=4, color="tab:red")
    left.axhline(2.0, color="black", linestyle="--", linewidth=0.8, label="2x")
    left.set_ylabel(f"NDCG@{report['k']} over {baseline}")
    left.set_title("mean over popularity's (paired 95% interval)", fontsize=9)
    left.legend(fontsize=7)
    counts = [methods[n]["vs_overall_best"] for n in names]
    positions = np.arange(len(names))
    right.bar(positions - 0.2, [c["ahead"] for c in counts], 0.4, label="ahead")
    right.bar(
        positions + 0.2, [c["ahead_beyond_interval"] for c in counts], 0.4, label="beyond interval"
    )
    right.axhline(counts[0]["of"] / 2, color="black", linestyle="--", linewidth=0.8, label="half")
    right.set_xticks(positions, labels)
    right.set_ylabel("segments")
    right.set_title(
        f"segments ahead of {body['overall_best_single_model']} (of {counts[0]['of']})",
        fontsize=9,
    )
    right.legend(fontsize=7)
    fig.suptitle(f"{protocol}: the blend beside the oracles, by the same yardsticks")
    return png_base64(fig)


def _blend_weights(report: dict[str, Any]) -> str:
    rows = {**report["blend"]["segments"], "global": report["blend"]["global"]}
    models = report["models"]
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.45 * len(rows)))
    left = np.zeros(len(rows))
    for model in models:
        values = np.array([rows[r][model] for r in rows])
        ax.barh(list(rows), values, left=left, label=model)
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("weight")
    ax.set_title(
        "Blend weights per segment (backed off: "
        + str(report["blend"]["backed_off_to_global"])
        + ")"
    )
    ax.legend(fontsize=7, ncol=4, loc="lower right")
    return png_base64(fig)


def _coverage(report: dict[str, Any], protocol: str) -> str:
    summary = report["protocols"][protocol]["summary"]
    names = list(summary)
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.bar(names, [summary[n]["coverage"] or 0 for n in names])
    ax.set_ylabel("catalogue coverage")
    ax.set_title(f"{protocol}: share of the catalogue recommended to someone")
    ax.tick_params(axis="x", rotation=30)
    return png_base64(fig)


def _score_distributions(report: dict[str, Any], protocol: str) -> str:
    histograms = report["protocols"][protocol]["score_histograms"]
    bins = np.array(histograms["bins"])
    methods = histograms["methods"] or {}
    fig, axes = plt.subplots(
        1, len(methods), figsize=(2.2 * len(methods), 2.6), sharey=True, squeeze=False
    )
    centres = (bins[:-1] + bins[1:]) / 2
    for ax, (name, parts) in zip(axes[0], methods.items(), strict=True):
        for part, colour in (("other", "tab:gray"), ("relevant", "tab:red")):
            counts = np.asarray(parts[part], dtype=float)
            share = counts / counts.sum() if counts.sum() else counts
            ax.step(centres, share, where="mid", color=colour, label=part)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("score", fontsize=7)
    axes[0][0].set_ylabel("share of items")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{protocol}: scores of held-out relevant items vs other items", fontsize=9)
    return png_base64(fig)


def write_reports(run: TrainingRun, settings: Settings) -> tuple[Path, Path]:
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    report = report_dict(run, settings)
    json_path = settings.reports_dir / "evaluation.json"
    json_path.write_text(json.dumps(json_ready(report), indent=2, default=str) + "\n")
    figures = []
    for protocol in report["protocols"]:
        figures.append((f"{protocol}: accuracy", _bars_with_intervals(report, protocol)))
        figures.append((f"{protocol}: per segment", _by_segment(report, protocol)))
        figures.append(
            (
                f"{protocol}: blend against single models per segment",
                _segment_differences(report, protocol),
            )
        )
        ceilings = report["protocols"][protocol]["ceilings"]
        ratios = [m.get(f"over_{ceilings['baseline']}") for m in ceilings["methods"].values()]
        # Only beside an oracle, and where the baseline scores (not in new_products).
        if len(ratios) > 1 and all(r and np.isfinite(r["estimate"]) for r in ratios):
            figures.append((f"{protocol}: what the data can show", _ceilings(report, protocol)))
        figures.append((f"{protocol}: coverage", _coverage(report, protocol)))
        if report["protocols"][protocol].get("score_histograms", {}).get("methods"):
            figures.append(
                (f"{protocol}: score distributions", _score_distributions(report, protocol))
            )
    figures.append(("Blend weights", _blend_weights(report)))
    if report["rerank"].get("cv_ndcg"):
        figures.append(("Re-ranker", _rerank_choice(report)))
    if report["rerank"].get("cv_by_group"):
        figures.append(("Re-ranker per blend group", _rerank_groups(report)))
    tables = f"<p>{html.escape(describe_oracle(report['oracle']))}</p>"
    for protocol, body in report["protocols"].items():
        rows = "".join(
            f"<tr><td>{html.escape(METHOD_LABELS.get(name, name))}</td>"
            + "".join(f"<td>{(s['means'].get(m) or 0):.4f}</td>" for m in HEADLINE)
            + f"<td>{(s['coverage'] or 0):.3f}</td></tr>"
            for name, s in body["summary"].items()
        )
        tables += (
            f"<h2>{protocol}</h2><table><tr><th>model</th>"
            + "".join(f"<th>{m}@{report['k']}</th>" for m in HEADLINE)
            + f"<th>coverage</th></tr>{rows}</table>"
        )
    header = {key: report[key] for key in ("split", "customers", "bundle", "oracle")}
    title = f"Evaluation ({report['protocol']} protocol, k={report['k']})"
    page = html_page(title, header, tables, figures)
    html_path = settings.reports_dir / "evaluation.html"
    html_path.write_text(page)
    return json_path, html_path
