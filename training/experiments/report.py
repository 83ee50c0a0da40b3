"""``make ab-report``: per experiment and variant, what was shown and what it earned.

Reads the exposure log (``Settings.exposure_log_dir``), the live event log
(``Settings.event_log_dir``) and the experiments file (``Settings.experiments_file``),
attributes outcomes to exposures (:mod:`training.experiments.attribution`) and writes
``<reports_dir>/ab/ab_report.json`` and ``ab_report.html``.

Per experiment and variant: exposures, customers, click-through rate (CTR),
add-to-cart rate and conversion (shares of exposures with at least one attributed click,
cart or purchase), revenue per exposure and per customer, each with its interval. Each
variant after the first (the control: the first variant in the experiments file) is
compared with the control:

- the three rates per exposure with the customer-clustered z-test
  (:func:`~training.experiments.statistics.clustered_rate_test`),
- the shares of *customers* who clicked, carted or bought at least once with the
  two-proportion z-test (customers are the randomised unit, so these trials are
  independent),
- revenue per exposure and per customer with the customer-resampling bootstrap.

``significant`` marks p < alpha for one comparison; with several metrics, variants and
segments some will cross alpha by chance, so the breakdowns by segment, churn-risk band
and CLV band (point estimates and clustered conversion tests, uncorrected) are for
exploring, not for deciding. Churn risk and CLV band are the customer_value features the
answer was served with (``Settings.churn_band_edges`` cut churn risk into bands). The
segment is the one the exposure was served under: a live session can move a customer to
another segment, and what a variant showed shapes that session, so segment groups are
not randomised groups. The sample-ratio check compares *customers* per variant with the
configured shares (assignment is per customer); a mismatch (p < 0.001) means the
comparison is suspect whatever its p-values say. The experiment's traffic share and
targeting need no correction: every variant is assigned within the same eligible
customers.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segrec.experiments import Experiment, ExperimentsConfig, load_experiments
from segrec.settings import Settings
from training.experiments.attribution import (
    NOT_SCORED,
    Attribution,
    LogReading,
    attribute,
    customer_table,
    load_events,
    load_exposures,
)
from training.experiments.statistics import (
    SRM_THRESHOLD,
    Comparison,
    Estimate,
    bootstrap_ratio_difference,
    bootstrap_ratio_interval,
    clustered_rate_test,
    rate_interval,
    sample_ratio_test,
    two_proportion_ztest,
)

# Report metric -> (per-exposure 0/1 column, per-customer "at least once" column).
RATES = {
    "ctr": ("clicked", "any_click"),
    "add_to_cart_rate": ("carted", "any_cart"),
    "conversion": ("converted", "any_purchase"),
}
CUSTOMER_SHARES = {
    "ctr": "customers_clicking",
    "add_to_cart_rate": "customers_carting",
    "conversion": "customers_converting",
}
# Report key -> (exposure column, label): the groups each experiment is broken down by.
BREAKDOWNS = {
    "segments": ("segment_name", "segment"),
    "churn_bands": ("churn_band", "churn risk band"),
    "clv_bands": ("clv_band", "CLV band"),
}
LABELS = {
    "ctr": "CTR",
    "add_to_cart_rate": "add-to-cart rate",
    "conversion": "conversion",
    "revenue_per_exposure": "revenue / exposure",
    "revenue_per_customer": "revenue / customer",
    "customers_clicking": "customers clicking",
    "customers_carting": "customers carting",
    "customers_converting": "customers converting",
}


@dataclass(frozen=True)
class ReportOptions:
    """How the report tests: ``alpha`` for ``significant``, ``confidence`` of every
    interval, ``n_boot`` bootstrap resamples (0 skips the revenue bootstrap), ``seed``
    of the bootstrap, ``srm_threshold`` below which a split counts as mismatched."""

    alpha: float = 0.05
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 42
    srm_threshold: float = SRM_THRESHOLD
    segments: bool = True  # the breakdowns by segment, churn band and CLV band
    churn_band_edges: tuple[float, float] = (0.3, 0.7)  # Settings.churn_band_edges


def _variant_order(experiment: Experiment | None, seen: Sequence[str]) -> list[str]:
    """Configured variants first, in file order (the first is the control), then any
    variant the log has but the file no longer lists."""
    configured = [v.name for v in experiment.variants] if experiment else []
    return configured + sorted(set(seen) - set(configured))


def _variant_summary(
    exposures: pd.DataFrame,
    customers: pd.DataFrame,
    options: ReportOptions,
    rng: np.random.Generator,
    *,
    revenue: bool = True,
) -> dict[str, Any]:
    n_exposures = len(exposures)
    out: dict[str, Any] = {
        "exposures": n_exposures,
        "customers": len(customers),
        "items_shown": int(exposures["n_items"].sum()),
        "clicks": int(exposures["clicks"].sum()),
        "carts": int(exposures["carts"].sum()),
        "purchases": int(exposures["purchases"].sum()),
        "revenue": float(exposures["revenue"].sum()),
    }
    trials = customers["exposures"].to_numpy()
    for metric, (per_exposure, per_customer) in RATES.items():
        out[metric] = rate_interval(
            customers[per_exposure].to_numpy(), trials, confidence=options.confidence
        ).to_dict()
        share = customers[per_customer].mean() if len(customers) else math.nan
        out[CUSTOMER_SHARES[metric]] = float(share)
    out["clicks_per_exposure"] = (
        float(exposures["clicks"].sum() / n_exposures) if n_exposures else math.nan
    )
    if revenue:
        spend = customers["revenue"].to_numpy()
        n_boot = options.n_boot
        out["revenue_per_exposure"] = bootstrap_ratio_interval(
            spend, trials, n_boot=n_boot, confidence=options.confidence, random_state=rng
        ).to_dict()
        out["revenue_per_customer"] = bootstrap_ratio_interval(
            spend,
            np.ones(len(spend)),
            n_boot=n_boot,
            confidence=options.confidence,
            random_state=rng,
        ).to_dict()
    else:
        rate = out["revenue"] / n_exposures if n_exposures else math.nan
        out["revenue_per_exposure"] = Estimate(rate, math.nan, math.nan, len(customers)).to_dict()
    return out


def _compare(
    control: pd.DataFrame,
    treatment: pd.DataFrame,
    options: ReportOptions,
    rng: np.random.Generator,
    *,
    full: bool = True,
) -> dict[str, dict[str, Any]]:
    """Treatment vs control on customer tables; ``full`` adds customer shares and the
    revenue bootstrap (the per-segment breakdown keeps to the clustered rate tests)."""
    results: dict[str, Comparison] = {}
    for metric, (per_exposure, per_customer) in RATES.items():
        results[metric] = clustered_rate_test(
            control[per_exposure].to_numpy(),
            control["exposures"].to_numpy(),
            treatment[per_exposure].to_numpy(),
            treatment["exposures"].to_numpy(),
            confidence=options.confidence,
        )
        if full:
            results[CUSTOMER_SHARES[metric]] = two_proportion_ztest(
                int(control[per_customer].sum()),
                len(control),
                int(treatment[per_customer].sum()),
                len(treatment),
                confidence=options.confidence,
            )
    if full and options.n_boot > 0:
        for metric, denominator in (
            ("revenue_per_exposure", "exposures"),
            ("revenue_per_customer", None),
        ):
            results[metric] = bootstrap_ratio_difference(
                control["revenue"].to_numpy(),
                control[denominator].to_numpy() if denominator else np.ones(len(control)),
                treatment["revenue"].to_numpy(),
                treatment[denominator].to_numpy() if denominator else np.ones(len(treatment)),
                n_boot=options.n_boot,
                confidence=options.confidence,
                random_state=rng,
            )
    return {
        metric: {**result.to_dict(), "significant": result.significant(options.alpha)}
        for metric, result in results.items()
    }


def _daily(exposures: pd.DataFrame, variants: Sequence[str]) -> dict[str, dict[str, int]]:
    if exposures.empty:
        return {}
    day = exposures["ts"].dt.floor("D").rename("day")  # strftime per row is slow
    table = exposures.groupby([day, "variant"]).size().unstack(fill_value=0)
    table = table.reindex(columns=list(variants), fill_value=0)
    days = pd.DatetimeIndex(table.index).strftime("%Y-%m-%d")
    return {
        day: {str(v): int(n) for v, n in row.items()}
        for day, row in zip(days, table.to_dict("records"), strict=True)
    }


def analyse_experiment(
    name: str,
    per_exposure: pd.DataFrame,
    experiment: Experiment | None,
    options: ReportOptions,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The report section of one experiment from its rows of ``Attribution.per_exposure``."""
    variants = _variant_order(experiment, per_exposure["variant"].unique().tolist())
    control = variants[0]
    customers = customer_table(per_exposure)
    by_variant = {v: customers[customers["variant"] == v] for v in variants}
    exposures_by_variant = {v: per_exposure[per_exposure["variant"] == v] for v in variants}

    crossovers = customers.groupby("customer_id")["variant"].nunique()
    section: dict[str, Any] = {
        "name": name,
        "configured": experiment is not None,
        "control": control,
        "variants_order": variants,
        "shares": experiment.shares() if experiment else None,
        "models": {v.name: v.model for v in experiment.variants} if experiment else None,
        "config_versions": sorted(per_exposure["config_version"].dropna().astype(str).unique()),
        "placements": {str(k): int(v) for k, v in per_exposure["placement"].value_counts().items()},
        "first_exposure": per_exposure["ts"].min().isoformat() if len(per_exposure) else None,
        "last_exposure": per_exposure["ts"].max().isoformat() if len(per_exposure) else None,
        "exposures": len(per_exposure),
        "customers": int(customers["customer_id"].nunique()),
        # Assignment is deterministic: a customer in two variants means the salt or the
        # split changed mid-experiment, or ids were mixed up.
        "customers_in_several_variants": int((crossovers > 1).sum()),
        "variants": {
            v: _variant_summary(exposures_by_variant[v], by_variant[v], options, rng)
            for v in variants
        },
        "daily_exposures": _daily(per_exposure, variants),
    }
    section["comparisons"] = {
        v: _compare(by_variant[control], by_variant[v], options, rng) for v in variants[1:]
    }
    if experiment is None:
        section["srm"] = {"checked": False, "reason": "experiment not in the experiments file"}
    else:
        observed = {v: len(by_variant[v]) for v in variants}
        unknown = [v for v in variants if v not in experiment.shares()]
        if unknown:
            section["srm"] = {
                "checked": False,
                "reason": f"variants {unknown} are not in the experiments file any more",
            }
        else:
            check = sample_ratio_test(
                observed, experiment.shares(), threshold=options.srm_threshold
            )
            section["srm"] = {"checked": True, **check.to_dict()}
        if len(section["config_versions"]) > 1:
            section["srm"]["note"] = (
                f"exposures come from {len(section['config_versions'])} config versions: "
                "if the split changed between them, the check uses the current one"
            )
    if options.segments:
        grouped = per_exposure.assign(
            churn_band=churn_bands(per_exposure["churn_risk"], options.churn_band_edges)
        )
        for key, (column, _) in BREAKDOWNS.items():
            section[key] = _breakdown(grouped, column, variants, options, rng)
    section["verdict"] = _verdict(section, options)
    return section


def churn_bands(risk: pd.Series, edges: tuple[float, float]) -> pd.Series:
    """``low`` / ``medium`` / ``high`` churn risk at exposure (``high`` from the second
    edge up), and ``(not scored)`` where the customer had no churn risk."""
    low, high = edges
    values = risk.to_numpy(dtype=float)
    bands = np.where(values >= high, "high", np.where(values >= low, "medium", "low"))
    return pd.Series(np.where(np.isnan(values), NOT_SCORED, bands), risk.index, dtype=object)


def _breakdown(
    per_exposure: pd.DataFrame,
    column: str,
    variants: Sequence[str],
    options: ReportOptions,
    rng: np.random.Generator,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for segment, rows in per_exposure.groupby(column, sort=True):
        customers = customer_table(rows)
        by_variant = {v: customers[customers["variant"] == v] for v in variants}
        out[str(segment)] = {
            "exposures": len(rows),
            "variants": {
                v: _variant_summary(
                    rows[rows["variant"] == v], by_variant[v], options, rng, revenue=False
                )
                for v in variants
            },
            "comparisons": {
                v: _compare(by_variant[variants[0]], by_variant[v], options, rng, full=False)
                for v in variants[1:]
            },
        }
    return out


def _verdict(section: dict[str, Any], options: ReportOptions) -> list[str]:
    """One plain sentence per treatment variant and headline metric."""
    lines = []
    srm = section["srm"]
    if srm.get("checked") and srm.get("mismatch"):
        lines.append(
            f"SAMPLE RATIO MISMATCH (p = {srm['p_value']:.2g}): customers per variant "
            f"{srm['observed']} against expected {_round(srm['expected'])}; do not trust "
            "the comparisons until the cause is found"
        )
    control = section["control"]
    for variant, comparisons in section["comparisons"].items():
        for metric in ("ctr", "conversion", "revenue_per_exposure"):
            c = comparisons.get(metric)
            if c is None:
                continue
            if c["p_value"] is None or not math.isfinite(c["p_value"]):
                lines.append(
                    f"{variant} vs {control}: {LABELS[metric]} not testable yet "
                    f"({c['n_treatment']} vs {c['n_control']} customers)"
                )
                continue
            money = metric.startswith("revenue")
            diff = f"{c['difference']:+.3f}" if money else f"{100 * c['difference']:+.2f} pp"
            low = f"{c['low']:.3f}" if money else f"{100 * c['low']:.2f}"
            high = f"{c['high']:.3f}" if money else f"{100 * c['high']:.2f}"
            verdict = "significant" if c["significant"] else "not significant"
            lines.append(
                f"{variant} vs {control}: {LABELS[metric]} {diff} "
                f"({100 * c['confidence']:.0f}% CI {low} to {high}), p = {c['p_value']:.3g}, "
                f"{verdict} at alpha {options.alpha}"
            )
    return lines


def _round(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in values.items()}


def build_report(
    exposures: LogReading,
    events: LogReading,
    config: ExperimentsConfig,
    *,
    attribution_hours: float,
    options: ReportOptions | None = None,
    sources: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Attribution]:
    """The whole report (JSON-ready) and the attribution behind it."""
    from training.html_report import json_ready  # matplotlib only when reporting

    options = options or ReportOptions()
    joined = attribute(exposures.frame, events.frame, attribution_hours)
    configured = config.by_name()
    seen = joined.per_exposure["experiment"].unique().tolist()
    names = [e.name for e in config.experiments if e.name in seen]
    names += sorted(set(seen) - set(configured))
    sections = {}
    # One split, not a scan of every exposure per experiment.
    by_experiment = dict(list(joined.per_exposure.groupby("experiment", sort=False)))
    for position, name in enumerate(names):
        rows = by_experiment[name]
        # One generator per experiment, from the seed and its position: adding an
        # experiment does not change another's bootstrap.
        rng = np.random.default_rng([options.seed, position])
        sections[name] = analyse_experiment(name, rows, configured.get(name), options, rng)
    report = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sources": sources or {},
        "config_version": config.version,
        "options": {
            "alpha": options.alpha,
            "confidence": options.confidence,
            "n_boot": options.n_boot,
            "seed": options.seed,
            "srm_threshold": options.srm_threshold,
            "churn_band_edges": list(options.churn_band_edges),
            "attribution_hours": attribution_hours,
        },
        "logs": {"exposures": exposures.summary(), "events": events.summary()},
        "attribution": joined.counts,
        "exposures_total": len(joined.per_exposure),
        "experiments_without_exposures": [e.name for e in config.experiments if e.name not in seen],
        "methods": {
            "rates": "share of exposures with at least one attributed outcome; interval and "
            "test customer-clustered (delta method), since customers are randomised",
            "customer_shares": "share of customers with at least one; two-proportion z-test",
            "revenue": "price x quantity of attributed purchases; customer-resampling "
            "bootstrap (percentile interval, two-sided bootstrap p-value)",
            "srm": "chi-square of customers per variant against the configured shares",
            "control": "the first variant of the experiment in the experiments file",
        },
        "experiments": sections,
    }
    return json_ready(report), joined


# ---- writing ----------------------------------------------------------------------------
def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(entry: dict[str, Any], percent: bool = True) -> str:
    fmt = _pct if percent else _num
    if entry.get("low") is None:
        return fmt(entry.get("estimate"))
    return f"{fmt(entry['estimate'])} [{fmt(entry['low'])}, {fmt(entry['high'])}]"


def _experiment_tables(section: dict[str, Any]) -> str:
    name = html.escape(section["name"])
    parts = [f"<h2>Experiment {name}</h2>"]
    parts.append("".join(f"<p>{html.escape(line)}</p>" for line in section["verdict"]))
    srm = section["srm"]
    if srm.get("checked"):
        state = "MISMATCH" if srm["mismatch"] else "ok"
        parts.append(
            f"<p>Sample ratio: {state} (chi² = {_num(srm['chi2'], 2)}, p = "
            f"{_num(srm['p_value'], 4)}; customers {srm['observed']}, expected "
            f"{_round(srm['expected'])})</p>"
        )
    else:
        parts.append(f"<p>Sample ratio: not checked ({html.escape(srm['reason'])})</p>")
    head = (
        "<tr><th>variant</th><th>model</th><th>customers</th><th>exposures</th><th>CTR</th>"
        "<th>add-to-cart</th><th>conversion</th><th>revenue / exposure</th></tr>"
    )
    rows = ""
    for variant, v in section["variants"].items():
        model = (section["models"] or {}).get(variant, "?")
        rows += (
            f"<tr><td>{html.escape(variant)}</td><td>{html.escape(str(model))}</td>"
            f"<td>{v['customers']}</td><td>{v['exposures']}</td>"
            f"<td>{_interval(v['ctr'])}</td><td>{_interval(v['add_to_cart_rate'])}</td>"
            f"<td>{_interval(v['conversion'])}</td>"
            f"<td>{_interval(v['revenue_per_exposure'], percent=False)}</td></tr>"
        )
    parts.append(f"<table>{head}{rows}</table>")
    head = (
        "<tr><th>variant vs control</th><th>metric</th><th>control</th><th>variant</th>"
        "<th>difference [CI]</th><th>lift</th><th>p</th><th>test</th></tr>"
    )
    rows = ""
    for variant, comparisons in section["comparisons"].items():
        for metric, c in comparisons.items():
            percent = not metric.startswith("revenue")
            fmt = _pct if percent else _num
            mark = " <b>*</b>" if c["significant"] else ""
            rows += (
                f"<tr><td>{html.escape(variant)}</td><td>{LABELS.get(metric, metric)}</td>"
                f"<td>{fmt(c['control'])}</td><td>{fmt(c['treatment'])}</td>"
                f"<td>{fmt(c['difference'])} [{fmt(c['low'])}, {fmt(c['high'])}]</td>"
                f"<td>{_pct(c['relative_lift'], 1)}</td><td>{_num(c['p_value'], 4)}{mark}</td>"
                f"<td>{html.escape(c['method'])}</td></tr>"
            )
    parts.append(f"<table>{head}{rows}</table>")
    for key, (_, label) in BREAKDOWNS.items():
        if section.get(key):
            parts.append(_breakdown_table(section[key], label))
    return "".join(parts)


def _breakdown_table(groups: dict[str, Any], label: str) -> str:
    head = (
        f"<tr><th>{html.escape(label)}</th><th>variant</th><th>customers</th><th>exposures</th>"
        "<th>CTR</th><th>conversion</th><th>conversion p vs control</th></tr>"
    )
    rows = ""
    for group, body in groups.items():
        for variant, v in body["variants"].items():
            c = body["comparisons"].get(variant, {}).get("conversion")
            rows += (
                f"<tr><td>{html.escape(group)}</td><td>{html.escape(variant)}</td>"
                f"<td>{v['customers']}</td><td>{v['exposures']}</td>"
                f"<td>{_pct(v['ctr']['estimate'])}</td>"
                f"<td>{_pct(v['conversion']['estimate'])}</td>"
                f"<td>{_num(c['p_value'], 4) if c else 'control'}</td></tr>"
            )
    return (
        f"<h3>Per {html.escape(label)} (at exposure; exploratory, p-values uncorrected)</h3>"
        f"<table>{head}{rows}</table>"
    )


def _rates_figure(section: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    from training.html_report import png_base64

    variants = section["variants_order"]
    metrics = ["ctr", "add_to_cart_rate", "conversion"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(variants)
    for j, variant in enumerate(variants):
        v = section["variants"][variant]
        est = [v[m]["estimate"] or 0.0 for m in metrics]
        err = [
            [max(e - (v[m]["low"] or e), 0.0) for e, m in zip(est, metrics, strict=True)],
            [max((v[m]["high"] or e) - e, 0.0) for e, m in zip(est, metrics, strict=True)],
        ]
        axes[0].bar(
            np.arange(len(metrics)) + j * width, est, width, yerr=err, capsize=3, label=variant
        )
        rev = v["revenue_per_exposure"]
        r = rev["estimate"] or 0.0
        axes[1].bar(
            [j],
            [r],
            color=f"C{j}",  # the same colour as the variant's bars on the left
            yerr=[[max(r - (rev["low"] or r), 0.0)], [max((rev["high"] or r) - r, 0.0)]],
            capsize=3,
        )
    axes[0].set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, [LABELS[m] for m in metrics])
    axes[0].set_ylabel("share of exposures (95% CI)")
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(range(len(variants)), variants)
    axes[1].set_ylabel("revenue per exposure (95% CI)")
    fig.suptitle(f"{section['name']}: rates by variant (control: {section['control']})")
    return png_base64(fig)


def _breakdown_figure(section: dict[str, Any], key: str) -> str | None:
    segments = section.get(key) or {}
    if not segments:
        return None
    import matplotlib.pyplot as plt

    from training.html_report import png_base64

    variants = section["variants_order"]
    names = list(segments)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / len(variants)
    for j, variant in enumerate(variants):
        values = [segments[s]["variants"][variant]["conversion"]["estimate"] or 0.0 for s in names]
        ax.bar(np.arange(len(names)) + j * width, values, width, label=variant)
    ax.set_xticks(
        np.arange(len(names)) + 0.4 - width / 2,
        [f"{s} ({segments[s]['exposures']})" for s in names],
        rotation=20,
    )
    ax.set_ylabel("conversion per exposure")
    label = BREAKDOWNS[key][1]
    ax.set_title(f"{section['name']}: conversion per {label} (exposures in brackets)")
    ax.legend(fontsize=8)
    return png_base64(fig)


def _daily_figure(section: dict[str, Any]) -> str | None:
    daily = section["daily_exposures"]
    if len(daily) < 2:
        return None  # one day is a single point: the table says it all
    import matplotlib.pyplot as plt

    from training.html_report import png_base64

    days = sorted(daily)
    fig, ax = plt.subplots(figsize=(11, 3))
    for variant in section["variants_order"]:
        ax.plot(days, [daily[d].get(variant, 0) for d in days], marker="o", label=variant)
    ax.set_ylabel("exposures")
    ax.set_title(f"{section['name']}: exposures per day")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    return png_base64(fig)


def write_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """``ab_report.json`` and ``ab_report.html`` (plots embedded) under ``directory``."""
    from training.html_report import html_page

    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "ab_report.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    figures: list[tuple[str, str | None]] = []
    body = ""
    for section in report["experiments"].values():
        body += _experiment_tables(section)
        figures.append((f"{section['name']}: rates", _rates_figure(section)))
        for key, (_, label) in BREAKDOWNS.items():
            figures.append((f"{section['name']}: per {label}", _breakdown_figure(section, key)))
        figures.append((f"{section['name']}: exposures per day", _daily_figure(section)))
    if not report["experiments"]:
        body += "<p>No exposures logged yet: is an experiment running and serving traffic?</p>"
    header = {
        "config_version": report["config_version"],
        "exposures": report["exposures_total"],
        "logs": {
            k: {key: v[key] for key in ("lines", "used", "bad", "bad_by_reason", "duplicates")}
            for k, v in report["logs"].items()
        },
        "attribution": report["attribution"],
        "options": report["options"],
    }
    page = html_page("A/B experiments", header, body, figures)
    html_path = directory / "ab_report.html"
    html_path.write_text(page)
    return json_path, html_path


def run_ab_report(
    settings: Settings, options: ReportOptions | None = None
) -> tuple[dict[str, Any], Path, Path]:
    """Read the logs and the experiments file named by ``settings``, write the report."""
    config = load_experiments(settings.experiments_file)
    exposures = load_exposures(settings.exposure_log_dir)
    events = load_events(settings.event_log_dir)
    report, _ = build_report(
        exposures,
        events,
        config,
        attribution_hours=settings.experiment_attribution_hours,
        options=options
        or ReportOptions(seed=settings.seed, churn_band_edges=settings.churn_band_edges),
        sources={
            "exposure_log_dir": str(settings.exposure_log_dir),
            "event_log_dir": str(settings.event_log_dir),
            "experiments_file": str(settings.experiments_file),
        },
    )
    json_path, html_path = write_report(report, settings.reports_dir / "ab")
    return report, json_path, html_path
