"""``python -m training.container build|smoke``: what ``make image-training`` and
``make image-training-smoke`` run."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

from serving.container.commands import container_app, fail
from serving.container.oci import ImageError

app = container_app(
    "The training container image (the Kubernetes jobs'), built and run with buildah."
)


@app.command()
def build(
    uv_version: Annotated[
        str, typer.Option(help="uv for the base image (the Makefile passes its UV_VERSION).")
    ] = "0.13.8",
    rebuild_base: Annotated[
        bool, typer.Option(help="Rebuild localhost/python:3.11-slim even if it exists.")
    ] = False,
    cache: Annotated[
        bool, typer.Option(help="Reuse the layers of earlier builds (--no-cache: build anew).")
    ] = True,
) -> None:
    """Build the base image once, then localhost/segrec-training:<version> from
    build/requirements-training.txt and the source; print its id, size and layers."""
    from training.container.build import build_image

    try:
        build_image(uv_version, rebuild_base=rebuild_base, cache=cache)
    except ImageError as error:
        fail("make image-training", error)


@app.command()
def smoke() -> None:
    """Run the feast-apply Job and the materialise and retrain CronJobs of the dev overlay
    in localhost/segrec-training:<version>, on a copy of SEGREC_DATA_DIR (default data/:
    clean data and segments needed); check a bundle comes out, the uid, and that nothing
    was written outside the pods' volumes. Non-zero exit on any failure."""
    from segrec.settings import get_settings
    from training.container.smoke import smoke as run_smoke

    # make or CI stopping us still runs the cleanup (`buildah rm`) in the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run_smoke(get_settings())
    except ImageError as error:
        fail("make image-training-smoke", error)


if __name__ == "__main__":
    app()
