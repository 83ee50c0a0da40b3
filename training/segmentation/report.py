"""``reports/segments.json`` and ``reports/segments.html`` (plots embedded as PNG)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from training.html_report import html_page, png_base64
from training.segmentation.pipeline import SegmentationRun

TSNE_SAMPLE = 2000
SCATTER_SAMPLE = 5000


def report_dict(run: SegmentationRun) -> dict[str, Any]:
    model = run.model
    positions = {int(s): i for i, s in enumerate(model.segment_ids)}
    segments = []
    for segment_id, name in zip(model.segment_ids.tolist(), model.segment_names, strict=True):
        profile = run.profiles[positions[segment_id]]
        stages = run.assignments.loc[
            run.assignments["segment_id"] == segment_id, "lifecycle_stage"
        ].value_counts()
        segments.append(
            {
                "id": segment_id,
                "name": name,
                **profile.as_dict(),
                "lifecycle": {str(k): int(v) for k, v in stages.items()},
            }
        )
    return {
        "version": model.version,
        "mode": model.metadata.get("mode"),
        "algorithm": model.metadata.get("algorithm"),
        "k": model.n_segments,
        "feature_cutoff": run.inputs.cutoff.isoformat(),
        "customers": {
            "segmented": len(run.assignments),
            "requested": run.inputs.requested,
            "excluded_no_consent": run.inputs.excluded_no_consent,
            "outliers": int(run.assignments["segment_outlier"].sum()),
        },
        "preprocessing": model.metadata.get("preprocessing"),
        "k_selection": None if run.choice is None else run.choice.as_dict(),
        "stability": None if run.stability is None else run.stability.as_dict(),
        "segments": segments,
        "lifecycle": {
            str(k): int(v) for k, v in run.assignments["lifecycle_stage"].value_counts().items()
        },
        "matching": run.matching.as_dict(),
        "transition": None if run.transition is None else run.transition.as_dict(),
        "drift": run.drift,
        "persona_agreement": run.persona_agreement,
        "online_rows": run.online_rows,
        "seconds": run.seconds,
        "metadata": model.metadata,
    }


def _k_selection_plot(report: dict[str, Any]) -> str | None:
    selection = report["k_selection"]
    if not selection or len(selection["candidates"]) < 2:
        return None
    candidates = selection["candidates"]
    ks = [c["k"] for c in candidates]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, key, better in zip(
        axes,
        ("silhouette", "davies_bouldin", "calinski_harabasz", "inertia"),
        ("higher", "lower", "higher", "elbow"),
        strict=True,
    ):
        ax.plot(ks, [c[key] for c in candidates], marker="o")
        ax.axvline(selection["chosen_k"], color="tab:red", linestyle="--", label="chosen")
        if key == "inertia":
            ax.axvline(selection["elbow_k"], color="tab:grey", linestyle=":", label="elbow")
        ax.set_title(f"{key} ({better} is better)")
        ax.set_xlabel("k")
        ax.legend(fontsize=7)
    return png_base64(fig)


def _colours(run: SegmentationRun, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    ids = run.assignments["segment_id"].to_numpy()[rows]
    order = run.model.segment_ids.tolist()
    return np.array([order.index(i) for i in ids]), list(run.model.segment_names)


def _scatter(ax: Any, points: np.ndarray, colours: np.ndarray, names: list[str]) -> None:
    cmap = plt.get_cmap("tab10")
    for position, name in enumerate(names):
        chosen = colours == position
        ax.scatter(*points[chosen].T, s=4, alpha=0.5, color=cmap(position % 10), label=name)
    ax.legend(fontsize=7, markerscale=3)


def _projection_plots(run: SegmentationRun, seed: int) -> str:
    rng = np.random.default_rng(seed)
    space = run.space
    rows = np.sort(rng.choice(len(space), size=min(SCATTER_SAMPLE, len(space)), replace=False))
    colours, names = _colours(run, rows)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    pca = PCA(n_components=2, random_state=seed).fit(space)
    _scatter(axes[0], pca.transform(space[rows]), colours, names)
    explained = pca.explained_variance_ratio_.sum()
    axes[0].set_title(f"PCA (2 components, {explained:.0%} of variance)")
    tsne_rows = rows[: min(TSNE_SAMPLE, len(rows))]
    embedded = TSNE(n_components=2, random_state=seed, init="pca").fit_transform(space[tsne_rows])
    _scatter(axes[1], embedded, colours[: len(tsne_rows)], names)
    axes[1].set_title(f"t-SNE on a sample of {len(tsne_rows)}")
    return png_base64(fig)


def _heatmap_plot(report: dict[str, Any]) -> str:
    segments = report["segments"]
    features = list(segments[0]["z"])
    values = np.array([[s["z"][f] for f in features] for s in segments])
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(features), 0.6 + 0.5 * len(segments)))
    limit = max(1.0, float(np.abs(values).max()))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(features)), features, rotation=45, ha="right")
    ax.set_yticks(range(len(segments)), [f"{s['id']}: {s['name']}" for s in segments])
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="z (segment mean vs everyone)")
    ax.set_title("Segment profiles")
    return png_base64(fig)


def _sizes_plot(report: dict[str, Any]) -> str:
    segments = report["segments"]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(segments)))
    ax.barh([f"{s['id']}: {s['name']}" for s in segments], [s["size"] for s in segments])
    ax.invert_yaxis()
    ax.set_xlabel("customers")
    ax.set_title("Segment sizes")
    return png_base64(fig)


def _transition_plot(report: dict[str, Any]) -> str | None:
    moved = report["transition"]
    if not moved:
        return None
    matrix = np.array(moved["matrix"]["customers"], dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * matrix.shape[1], 1 + 0.5 * matrix.shape[0]))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(matrix.shape[1]), moved["matrix"]["new"])
    ax.set_yticks(range(matrix.shape[0]), moved["matrix"]["previous"])
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=7)
    ax.set_xlabel(f"{report['version']} segment")
    ax.set_ylabel(f"{moved['previous_version']} segment")
    ax.set_title(f"Customers moving between versions (ARI {moved['adjusted_rand_vs_previous']})")
    return png_base64(fig)


def write_reports(run: SegmentationRun, reports_dir: Path, seed: int) -> tuple[Path, Path]:
    reports_dir.mkdir(parents=True, exist_ok=True)
    report = report_dict(run)
    json_path = reports_dir / "segments.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    figures = [
        ("Choosing k", _k_selection_plot(report)),
        ("Projections", _projection_plots(run, seed)),
        ("Profiles", _heatmap_plot(report)),
        ("Sizes", _sizes_plot(report)),
        ("Movement between versions", _transition_plot(report)),
    ]
    rows = "".join(
        f"<tr><td>{s['id']}</td><td>{html.escape(s['name'])}</td><td>{s['size']:,}</td>"
        f"<td>{s['share']:.1%}</td><td>{html.escape('; '.join(s['distinguishing']))}</td></tr>"
        for s in report["segments"]
    )
    summary = {
        "version": report["version"],
        "algorithm": report["algorithm"],
        "k": report["k"],
        "customers": report["customers"],
        "stability": report["stability"],
        "persona agreement": None
        if not report["persona_agreement"]
        else {
            k: report["persona_agreement"][k] for k in ("adjusted_rand", "normalized_mutual_info")
        },
        "drift": report["drift"],
    }
    table = (
        "<table><tr><th>id</th><th>name</th><th>customers</th><th>share</th>"
        f"<th>distinguishing features</th></tr>{rows}</table>"
    )
    page = html_page(f"Segments {report['version']}", summary, table, figures)
    html_path = reports_dir / "segments.html"
    html_path.write_text(page)
    return json_path, html_path
