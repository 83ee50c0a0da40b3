"""What the ``python -m serving.container`` and ``python -m training.container`` command
lines share: the Typer app with its storage set-up, and how a failed step ends."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import typer


def container_app(description: str) -> typer.Typer:
    """A Typer app whose every command first makes CONTAINERS_STORAGE_CONF absolute."""
    app = typer.Typer(
        help=description,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(absolute_storage_conf)
    return app


def absolute_storage_conf() -> None:
    """A relative CONTAINERS_STORAGE_CONF (serving/container/storage-vfs.conf, as the
    Makefile passes it) made absolute: BentoML runs buildah from its own build directory."""
    conf = os.environ.get("CONTAINERS_STORAGE_CONF")
    if conf:
        os.environ["CONTAINERS_STORAGE_CONF"] = str(Path(conf).resolve())


def fail(step: str, error: Exception) -> NoReturn:
    """End the command with ``<step> FAILED: <error>`` on stderr and exit code 1."""
    print(f"\n{step} FAILED: {error}", file=sys.stderr, flush=True)
    raise typer.Exit(code=1)
