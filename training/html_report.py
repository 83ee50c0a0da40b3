"""The pieces every HTML report shares: figures embedded as PNG, and one page layout."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; no display on servers or in CI

STYLE = (
    "body{font-family:sans-serif;margin:2em}"
    "td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}"
    "img{max-width:100%}"
)


def json_ready(value: Any) -> Any:
    """``value`` made JSON-ready: NaN and infinities become null (JSON has no NaN), numpy
    scalars plain Python, mapping keys strings, dataclasses dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_ready(dataclasses.asdict(value))  # e.g. EventWeights in search trials
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def png_base64(fig: Any) -> str:
    """A matplotlib figure as base64 PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def html_page(
    title: str, summary: dict[str, Any], body: str, figures: Sequence[tuple[str, str | None]]
) -> str:
    """A self-contained page: heading, the summary as JSON, ``body`` (tables), then each
    titled figure (figures that could not be drawn are ``None`` and left out)."""
    images = "".join(
        f"<h2>{html.escape(name)}</h2><img src='data:image/png;base64,{png}'/>"
        for name, png in figures
        if png
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>segrec: {html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<pre>{html.escape(json.dumps(summary, indent=2, default=str))}</pre>"
        f"{body}{images}</body></html>"
    )
