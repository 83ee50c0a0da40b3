"""The pieces every HTML report shares: figures embedded as PNG, and one page layout."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI

STYLE = (
    "body{font-family:sans-serif;margin:2em}"
    "td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}"
    "img{max-width:100%}"
)


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
