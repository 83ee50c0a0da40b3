"""One benchmark report: ``reports/bench.json`` and ``reports/bench.html``.

Gathers every benchmark whose results exist under ``reports/bench/`` (``data.json``,
``online.json``, ``serving_latency.json``, ``scale.json``, ``training.json``), keeps each
one's figures as they are (medians over repeated runs, with min and max), adds a headline
(the catalogue size where exhaustive scoring outgrows the request budget, each training
stage's growth exponent) and renders tables and plots on one self-contained page. The
plots are drawn from the JSON (scale, training) or embedded from the benches' own PNGs
(data, serving latency).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.html_report import html_page, json_ready, png_base64

SECTIONS = ("data", "online", "serving_latency", "scale", "training")
PNG_SECTIONS = ("data", "serving_latency")  # benches that draw their own plot
MAX_FLAT_ROWS = 400


def collect(bench_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The results present in ``bench_dir`` by section, and their PNGs as base64."""
    results = {
        name: json.loads((bench_dir / f"{name}.json").read_text())
        for name in SECTIONS
        if (bench_dir / f"{name}.json").exists()
    }
    pngs = {
        name: base64.b64encode((bench_dir / f"{name}.png").read_bytes()).decode()
        for name in PNG_SECTIONS
        if name in results and (bench_dir / f"{name}.png").exists()
    }
    return results, pngs


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a reader wants first."""
    out: dict[str, Any] = {}
    scale = results.get("scale")
    if scale:
        out["scale"] = {
            "budget_ms": scale["budget_ms"],
            "ann_needed_above_items": scale.get("ann_needed_above_items"),
            "exhaustive_max_items_by_factors": {
                factors: found["exhaustive_max_items"]
                for factors, found in scale.get("growth", {}).items()
            },
        }
    training = results.get("training")
    if training:
        out["training"] = {
            "exponent_seconds": {
                stage: fits["seconds"]["exponent"]
                for stage, fits in training.get("growth", {}).items()
            },
            "exponent_peak_mb": {
                stage: fits["peak_mb"]["exponent"]
                for stage, fits in training.get("growth", {}).items()
            },
            "extrapolated": {
                events: {
                    "run_minutes": found["run_minutes"],
                    "fits_time_box": found["fits_time_box"],
                    "peak_mb": found["peak_mb"],
                }
                for events, found in training.get("extrapolated", {}).items()
            },
        }
    return out


# ---- tables ---------------------------------------------------------------------------------
def _spread(found: dict[str, Any], digits: int = 2) -> str:
    """``median [min-max]`` of a :func:`training.benchmarks.growth.spread` dict."""
    return f"{found['median']:.{digits}f} [{found['min']:.{digits}f}-{found['max']:.{digits}f}]"


def _table(caption: str, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<h3>{html.escape(caption)}</h3><table><tr>{head}</tr>{body}</table>"


Grid = tuple[str, list[str], list[list[Any]]]  # caption, header, rows


def scale_grids(scale: dict[str, Any]) -> list[Grid]:
    """The scale bench as tables: every cell, then growth and thresholds per factor size."""
    stages = list(scale["cells"][0]["stages_mean_ms"]) if scale["cells"] else []
    rows = [
        [
            f"{cell['items']:,}",
            cell["factors"],
            _spread(cell["request_ms"]["p50"], 3),
            _spread(cell["request_ms"]["p99"], 3),
            _spread(cell["numpy_bound_ms"]["p50"], 3),
            cell["ratio_to_bound"],
            *(f"{cell['stages_mean_ms'][s]['median']:.3f}" for s in stages),
        ]
        for cell in scale["cells"]
    ]
    cells = (
        f"Per-request scoring (ms, median [min-max] over {scale['repeats']} runs; "
        f"{scale['history_events']} events per customer, one thread)",
        [
            "items",
            "factors",
            "request p50",
            "request p99",
            "numpy bound p50",
            "request / bound",
            *(f"{s} (mean)" for s in stages),
        ],
        rows,
    )
    growth = (
        f"Growth in catalogue size and where exhaustive scoring exceeds "
        f"{scale['budget_ms']:g} ms (p99)",
        [
            "factors",
            "request p99 exponent",
            "bound p99 exponent",
            "exhaustive scoring fits up to (items)",
            "numpy bound fits up to (items)",
        ],
        [
            [
                factors,
                found["request_p99_growth"]["exponent"],
                found["numpy_bound_p99_growth"]["exponent"],
                _items(found["exhaustive_max_items"])
                + ("" if found.get("within_measured") else " (extrapolated)"),
                _items(found["numpy_bound_max_items"]),
            ]
            for factors, found in scale.get("growth", {}).items()
        ],
    )
    return [cells, growth]


def _items(count: int | None) -> str:
    return "never (no growth)" if count is None else f"{count:,}"


def training_grids(training: dict[str, Any]) -> list[Grid]:
    """The training bench as tables: stages by size with exponents, then extrapolations."""
    sizes = training.get("sizes", {})
    stages: list[str] = list(next(iter(sizes.values()))["stages"]) if sizes else []
    growth = training.get("growth", {})
    rows = []
    for stage in stages:
        row: list[Any] = [stage]
        for found in sizes.values():
            figures = found["stages"].get(stage)  # a count cut short lacks later stages
            row += (
                [_spread(figures["seconds"], 1), _spread(figures["peak_mb"], 0)]
                if figures
                else ["not run", ""]
            )
        fits = growth.get(stage)
        row += [fits["seconds"]["exponent"], fits["peak_mb"]["exponent"]] if fits else ["", ""]
        rows.append(row)
    header = ["stage"]
    for found in sizes.values():
        runs = found["stages"][stages[0]]["seconds"]["runs"]
        events = f"{found['events']:,} events ({runs} runs)"
        header += [f"{events}: s", f"{events}: peak MB"]
    header += ["time exponent", "memory exponent"]
    out = [
        (
            "Training stages (median [min-max] over the runs, own process each, "
            f"OPENBLAS_NUM_THREADS={training['openblas_threads']})",
            header,
            rows,
        )
    ]
    for events, found in training.get("extrapolated", {}).items():
        verdict = "fits" if found["fits_time_box"] else "does not fit"
        out.append(
            (
                f"Extrapolated to {int(events):,} events: one run of every stage "
                f"{found.get('one_run_minutes', '?')} min, {training['repeats']} runs "
                f"{found['run_minutes']} min ({verdict} in {found['time_box_minutes']:g} min), "
                f"peak {found['peak_mb']:,} MB",
                ["stage", "seconds (stage)", "seconds (whole process)", "peak MB"],
                [
                    [s, f["seconds"], f.get("wall_seconds", ""), f["peak_mb"]]
                    for s, f in found["stages"].items()
                ],
            )
        )
    return out


def tables(grids: list[Grid]) -> str:
    return "".join(_table(*grid) for grid in grids)


def _flat(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Leaves of nested results as (path, text); ``x`` with ``x_range`` beside it reads
    ``median [min-max]``."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.endswith("_range") and key[: -len("_range")] in value:
                continue
            where = f"{path}.{key}" if path else str(key)
            ranged = value.get(f"{key}_range")
            if isinstance(ranged, list) and len(ranged) == 2 and not isinstance(inner, dict):
                yield where, f"{inner} [{ranged[0]}-{ranged[1]}]"
            else:
                yield from _flat(inner, where)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for n, inner in enumerate(value):
            yield from _flat(inner, f"{path}[{n}]")
    else:
        yield path, json.dumps(value) if isinstance(value, list) else str(value)


def flat_table(caption: str, results: dict[str, Any]) -> str:
    rows = [list(row) for row in _flat(results)][:MAX_FLAT_ROWS]
    return _table(caption, ["figure", "value (median [min-max])"], rows)


# ---- plots ----------------------------------------------------------------------------------
def scale_figure(scale: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for colour, factors in enumerate(sorted({c["factors"] for c in scale["cells"]})):
        cells = sorted(
            (c for c in scale["cells"] if c["factors"] == factors), key=lambda c: c["items"]
        )
        items = [c["items"] for c in cells]
        for key, style, label in (
            ("request_ms", "-o", "request"),
            ("numpy_bound_ms", "--s", "numpy bound"),
        ):
            p99 = [c[key]["p99"] for c in cells]
            ax.errorbar(
                items,
                [p["median"] for p in p99],
                yerr=[
                    [p["median"] - p["min"] for p in p99],
                    [p["max"] - p["median"] for p in p99],
                ],
                fmt=style,
                color=f"C{colour}",
                capsize=3,
                label=f"{label}, {factors} factors",
            )
    ax.axhline(scale["budget_ms"], color="red", lw=1, label=f"budget {scale['budget_ms']:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalogue size (items)")
    ax.set_ylabel("p99 per request (ms)")
    ax.set_title("Exhaustive scoring per request vs catalogue size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def training_figure(training: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    sizes = list(training.get("sizes", {}).values())
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    if not sizes:
        return fig
    events = [s["events"] for s in sizes]
    furthest = max([*events, *(int(e) for e in training.get("extrapolated", {}))])
    line = np.geomspace(min(events), furthest, 20)
    for metric, ax, label in (
        ("seconds", axes[0], "seconds"),
        ("peak_mb", axes[1], "peak resident MB"),
    ):
        for stage in sizes[0]["stages"]:
            having = [s for s in sizes if stage in s["stages"]]
            found = [s["stages"][stage][metric] for s in having]
            shown = ax.errorbar(
                [s["events"] for s in having],
                [f["median"] for f in found],
                yerr=[
                    [f["median"] - f["min"] for f in found],
                    [f["max"] - f["median"] for f in found],
                ],
                fmt="o",
                capsize=3,
            )
            fit = training.get("growth", {}).get(stage, {}).get(metric)
            name = stage
            if fit:
                name = f"{stage} (exponent {fit['exponent']:.2f})"
                ax.plot(
                    line,
                    fit["coefficient"] * line ** fit["exponent"],
                    "--",
                    color=shown[0].get_color(),
                )
            shown.set_label(name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_ylabel(label)
        ax.set_title(f"Training stages: {label} (dashed: fitted power law)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return fig


# ---- the report -----------------------------------------------------------------------------
def build_report(results: dict[str, Any], pngs: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The JSON document and the HTML page for ``results`` by section."""
    document = json_ready(
        {
            "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "sections": sorted(results),
            "headline": headline(results),
            **results,
        }
    )
    body = ""
    figures: list[tuple[str, str | None]] = []
    titles = {
        "data": "Data layer: generation, import, cleaning",
        "online": "Online feature reads (Feast, SQLite and Redis)",
        "serving_latency": "Serving: BentoML vs bare Starlette",
    }
    for name in ("data", "online", "serving_latency"):
        if name in results:
            body += f"<h2>{titles[name]}</h2>" + flat_table(name, results[name])
            if name in pngs:
                figures.append((titles[name], pngs[name]))
    if "scale" in results:
        body += "<h2>Scale: scoring vs catalogue and factor size</h2>"
        body += tables(scale_grids(results["scale"]))
        figures.append(("Scale", png_base64(scale_figure(results["scale"]))))
    if "training" in results:
        body += "<h2>Training: time and peak memory by events</h2>"
        body += tables(training_grids(results["training"]))
        figures.append(("Training", png_base64(training_figure(results["training"]))))
    page = html_page("benchmarks", document["headline"], body, figures)
    return document, page


def write_report(reports_dir: Path) -> tuple[Path, Path]:
    """``reports/bench.json`` and ``reports/bench.html`` from ``reports/bench/*.json``."""
    results, pngs = collect(reports_dir / "bench")
    if not results:
        raise FileNotFoundError(f"no benchmark results in {reports_dir / 'bench'}")
    document, page = build_report(results, pngs)
    json_path, html_path = reports_dir / "bench.json", reports_dir / "bench.html"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    html_path.write_text(page)
    return json_path, html_path
