"""Build the request-path engine from the settings: the bundle and the online store.

One place for what ``serving.service`` and any other front end (the bare Starlette app
of the latency benchmark) load, so they serve exactly the same thing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

from segrec.bundle import read_bundle
from segrec.feature_store import open_store
from segrec.online_features import OnlineFeatureReader
from segrec.settings import Settings
from serving.engine import RecommendationEngine

SERVING_FEATURE_SERVICE = "customer_serving_v2"


def newest_bundle(settings: Settings) -> Path:
    """``SEGREC_BUNDLE_DIR`` when set, else the newest bundle under ``<data_dir>/bundles``."""
    configured = os.environ.get("SEGREC_BUNDLE_DIR")
    if configured:
        return Path(configured)
    bundles = sorted(p for p in settings.bundles_dir.glob("bundle-*") if p.is_dir())
    if not bundles:
        raise FileNotFoundError(f"no bundle under {settings.bundles_dir}: run `make train`")
    return bundles[-1]


def feature_clock(settings: Settings) -> Callable[[], dt.datetime]:
    """What "now" is when judging online features stale (``SEGREC_FEATURE_CLOCK``).

    ``wall`` is the real clock. ``data`` is the newest feature snapshot, for replaying a
    historical export (the synthetic storefront ends on 2026-10-31) as if it were live:
    without it every training feature would be past its ttl.
    """
    if settings.feature_clock == "wall":
        return lambda: dt.datetime.now(dt.UTC)
    manifest = json.loads((settings.features_dir / "manifest.json").read_text())
    newest = max(dt.datetime.fromisoformat(t) for t in manifest["snapshots"])
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=dt.UTC)
    offset = dt.datetime.now(dt.UTC) - newest
    # Time still moves (sessions expire), but from the data's end rather than today.
    return lambda: dt.datetime.now(dt.UTC) - offset


def build_engine(settings: Settings, bundle_dir: Path | None = None) -> RecommendationEngine:
    """The engine over ``bundle_dir`` (default :func:`newest_bundle`) and Feast's store."""
    reader = OnlineFeatureReader(
        open_store(settings), SERVING_FEATURE_SERVICE, "customer_id", clock=feature_clock(settings)
    )
    return RecommendationEngine(read_bundle(bundle_dir or newest_bundle(settings)), reader)
