"""A picture of the data-quality report: where rows went and what was fixed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt


def plot_quality(report: dict[str, Any], path: Path) -> Path:
    """Write a PNG with rows kept vs set aside per table and every fix and reason counted."""
    tables = report["tables"]
    names = list(tables)
    lines = [
        (f"{name}: {kind} {what}", count)
        for name, table in tables.items()
        for kind, counts in (("fix", table["fixes"]), ("set aside", table["set_aside"]))
        for what, count in counts.items()
    ]
    lines.sort(key=lambda item: item[1])
    height = max(4.0, 0.28 * len(lines) + 1.5)
    fig, (rows_ax, what_ax) = plt.subplots(
        1, 2, figsize=(14, height), gridspec_kw={"width_ratios": [1, 2]}
    )
    kept = [tables[n]["rows_out"] for n in names]
    aside = [tables[n]["rows_set_aside"] for n in names]
    positions = range(len(names))
    rows_ax.bar([p - 0.2 for p in positions], kept, width=0.4, label="kept")
    rows_ax.bar([p + 0.2 for p in positions], aside, width=0.4, label="set aside", color="tab:red")
    rows_ax.set_xticks(list(positions), names)
    rows_ax.set_yscale("log")
    rows_ax.set_title("Rows per table (log scale)")
    rows_ax.legend()
    for i, (k, a) in enumerate(zip(kept, aside, strict=True)):
        rows_ax.annotate(f"{k:,}", (i - 0.2, k), ha="center", va="bottom", fontsize=8)
        rows_ax.annotate(f"{a:,}", (i + 0.2, max(a, 1)), ha="center", va="bottom", fontsize=8)
    if lines:
        labels, counts = zip(*lines, strict=True)
        colors = ["tab:red" if " set aside " in label else "tab:blue" for label in labels]
        what_ax.barh(labels, counts, color=colors)
        what_ax.set_xscale("log")
        what_ax.tick_params(axis="y", labelsize=8)
    what_ax.set_title("Fixes (blue) and set-aside reasons (red), log scale")
    fig.suptitle(f"Data quality, data version {report.get('data_version', '?')}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
