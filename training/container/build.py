"""``make image-training``: ``localhost/segrec-training:<version>`` built with buildah.

The base image is the serving image's ``localhost/python:3.11-slim`` (built once, by the
same code). The build context is assembled in a temporary directory, so only what the
jobs need goes in: ``Containerfile``, the exported requirements and the project's source
(no data, reports, tests or virtualenvs).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from segrec.settings import PROJECT_ROOT
from serving.container import BASE_IMAGE
from serving.container.build import BUILD_ENV, build_base, project_version
from serving.container.oci import (
    ImageError,
    ImageInfo,
    capture,
    ensure_tools,
    images_named,
    inspect_image,
    report_build,
    run,
)
from training.container import RUN_AS_UID, TRAINING_IMAGE

CONTAINERFILE = Path(__file__).with_name("Containerfile")
# `make image-training` exports it from uv.lock first (the Makefile's rule).
REQUIREMENTS = PROJECT_ROOT / "build" / "requirements-training.txt"
# The project as the jobs need it: the packages `segrec` imports, the Feast repository, and
# what hatchling reads to install it (pyproject.toml names README.md as the readme).
APP_PATHS = ("pyproject.toml", "README.md", "segrec", "training", "serving", "feature_repo")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def training_ref(version: str) -> str:
    return f"{TRAINING_IMAGE}:{version}"


def build_command(context: Path, version: str, *, cache: bool = True) -> list[str]:
    return [
        "buildah", "build", "--isolation", "chroot", "--network", "host", "--layers",
        "--pull=never", *([] if cache else ["--no-cache"]),
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg", f"SEGREC_UID={RUN_AS_UID}",
        "--build-arg", f"VERSION={version}",
        "-f", str(context / CONTAINERFILE.name),
        "-t", training_ref(version),
        str(context),
    ]  # fmt: skip


def assemble_context(context: Path, requirements: Path = REQUIREMENTS) -> None:
    """Containerfile, requirements and ``app/`` (the source) into ``context``."""
    if not requirements.is_file():
        raise ImageError(f"no {requirements}: `make image-training` exports it from uv.lock")
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONTAINERFILE, context / CONTAINERFILE.name)
    shutil.copy(requirements, context / "requirements-training.txt")
    for name in APP_PATHS:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / "app" / name, ignore=IGNORED)
        else:
            (context / "app").mkdir(exist_ok=True)
            shutil.copy2(source, context / "app" / name)


def build_image(uv_version: str, *, rebuild_base: bool = False, cache: bool = True) -> ImageInfo:
    """Build the base once, then the training image; print its id, size and layers."""
    ensure_tools()
    started = time.monotonic()
    built_base = build_base(uv_version, rebuild=rebuild_base)
    base_seconds = time.monotonic() - started
    version = project_version()
    target = training_ref(version)
    previous = images_named(TRAINING_IMAGE).get(target)
    with tempfile.TemporaryDirectory(prefix="segrec-training-image-") as scratch:
        context = Path(scratch)
        assemble_context(context)
        run(build_command(context, version, cache=cache), env=BUILD_ENV)
    info = inspect_image(target)
    # The image the tag named before is untagged now; its own top layers are unused.
    removed = []
    if previous and previous != info.id and capture(["buildah", "rmi", previous], check=False):
        removed.append(previous[:12])
    report_build(
        info,
        removed=removed,
        total_seconds=time.monotonic() - started,
        base_seconds=base_seconds if built_base else None,
        next_step="make image-training-smoke (runs the jobs' commands in it)",
    )
    return info
