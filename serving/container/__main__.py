"""``python -m serving.container build|smoke``: what ``make image`` and ``make image-smoke`` run."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

from segrec.settings import get_settings
from serving.container.commands import container_app, fail
from serving.container.oci import ImageError

app = container_app(
    "The serving container image, built and started with buildah (no Docker engine)."
)


@app.command()
def build(
    uv_version: Annotated[
        str, typer.Option(help="uv for the base image (the Makefile passes its UV_VERSION).")
    ] = "0.13.8",
    rebuild_base: Annotated[
        bool, typer.Option(help="Rebuild localhost/python:3.11-slim even if it exists.")
    ] = False,
) -> None:
    """Build the base image once, containerise the newest Bento (`make bento` first), tag
    it localhost/segrec-serving:<version>, print its id, size and layers."""
    from serving.container.build import build_image

    try:
        build_image(get_settings(), uv_version, rebuild_base=rebuild_base)
    except ImageError as error:
        fail("make image", error)


@app.command()
def smoke(
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for /readyz.")] = 300.0,
) -> None:
    """Start localhost/segrec-serving:<version> with buildah on the data directory
    (SEGREC_DATA_DIR, default data/), ask it for a carousel, post an event, read /metrics,
    stop it; print start-up time and image size. Non-zero exit on any failure."""
    from serving.container.smoke import smoke as run_smoke

    # make or CI stopping us still runs the cleanup (`buildah rm`) in the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run_smoke(get_settings(), ready_timeout)
    except ImageError as error:
        fail("make image-smoke", error)


if __name__ == "__main__":
    app()
