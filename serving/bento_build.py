"""Build the serving Bento (``make bento``) from ``bentofile.yaml``.

The Bento carries the service code (segrec/ and serving/, never training/), the Feast
repository definitions, the newest exported bundle as the ``segrec_bundle`` model, and the
serving requirements exported from ``uv.lock`` by ``make bento``. Inside it the service
finds no bundles directory and loads the bundle from the Bento's own model store.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from segrec.bundle import DEFAULT_MODEL_NAME
from segrec.settings import PROJECT_ROOT, Settings

BENTOFILE = PROJECT_ROOT / "bentofile.yaml"
REQUIREMENTS = PROJECT_ROOT / "build" / "requirements-serving.txt"


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: Path
    bundle_version: str
    size_bytes: int
    files: int


def build_bento(settings: Settings) -> BuiltBento:
    """Build the Bento into the BentoML store of ``settings`` (``BENTOML_HOME`` wins)."""
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_store.resolve()))
    import bentoml
    from bentoml.exceptions import NotFound

    if not REQUIREMENTS.is_file():
        raise FileNotFoundError(
            f"{REQUIREMENTS} is missing: `make bento` exports it from uv.lock first"
        )
    try:
        model = bentoml.models.get(f"{DEFAULT_MODEL_NAME}:latest")
    except NotFound:
        raise FileNotFoundError(
            f"no {DEFAULT_MODEL_NAME} model in {os.environ['BENTOML_HOME']}: run `make train`"
        ) from None
    bundle_version = model.info.labels.get("bundle_version", "unknown")
    bento = bentoml.bentos.build_bentofile(
        str(BENTOFILE),
        build_ctx=str(PROJECT_ROOT),
        version=dt.datetime.now(dt.UTC).strftime("%Y%m%dt%H%M%S"),  # tags are lower case
        labels={"bundle_version": bundle_version, "model_tag": str(model.tag)},
    )
    root = Path(bento.path)
    files = [p for p in root.rglob("*") if p.is_file()]
    return BuiltBento(
        tag=str(bento.tag),
        path=root,
        bundle_version=bundle_version,
        size_bytes=sum(p.stat().st_size for p in files),
        files=len(files),
    )
