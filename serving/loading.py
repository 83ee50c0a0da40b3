"""Build the request-path engine from the settings: the bundle and the online store.

One place for what ``serving.service`` and any other front end (the bare Starlette app
of the latency benchmark) load, so they serve exactly the same thing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from segrec.bundle import (
    Bundle,
    BundleError,
    bentoml_bundle_versions,
    load_from_bentoml,
    read_bundle,
)
from segrec.feature_store import open_store
from segrec.online_features import OnlineFeatureReader
from segrec.settings import Settings
from serving.engine import FeatureSource, RecommendationEngine, ServingPolicy
from serving.personalisation import Personalisation, load_personalisation

SERVING_FEATURE_SERVICE = "customer_serving_v3"
BUNDLE_VERSION = re.compile(r"bundle-[0-9A-Za-z._-]{1,64}")


def newest_bundle(settings: Settings) -> Path:
    """``SEGREC_BUNDLE_DIR`` when set, else the newest bundle under ``<data_dir>/bundles``."""
    configured = os.environ.get("SEGREC_BUNDLE_DIR")
    if configured:
        return Path(configured)
    bundles = sorted(p for p in settings.bundles_dir.glob("bundle-*") if p.is_dir())
    if not bundles:
        raise FileNotFoundError(f"no bundle under {settings.bundles_dir}: run `make train`")
    return bundles[-1]


def load_bundle(settings: Settings, version: str | None = None) -> Bundle:
    """The bundle to serve, checksums verified.

    ``SEGREC_BUNDLE_DIR`` when set. Otherwise bundles come from two places: the bundles
    directory ``make train`` writes (and a retraining job publishes to), and the BentoML
    model store (where a Bento carries the bundle it was built with, as the
    ``segrec_bundle`` model). ``version`` names one bundle, such as
    ``bundle-20261123T101500``, never a path, so a caller cannot point the service at
    arbitrary files; without it the newest of both places wins (versions are UTC
    timestamps, so newest is largest).
    """
    if version is not None and not BUNDLE_VERSION.fullmatch(version):
        raise BundleError(f"bad bundle version {version!r}: expected e.g. bundle-20261123T101500")
    if version is None and os.environ.get("SEGREC_BUNDLE_DIR"):
        return read_bundle(newest_bundle(settings))
    local = {p.name: p for p in settings.bundles_dir.glob("bundle-*") if p.is_dir()}
    stored = bentoml_bundle_versions()
    wanted = version or max([*local, *stored], default=None)
    if wanted is None:
        raise FileNotFoundError(
            f"no bundle under {settings.bundles_dir} nor in the BentoML model store: "
            "run `make train`"
        )
    if wanted in local:
        return read_bundle(local[wanted])
    if wanted in stored:
        return load_from_bentoml(stored[wanted])
    raise BundleError(f"no bundle {wanted!r} in {settings.bundles_dir} or the BentoML store")


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


def open_reader(settings: Settings) -> OnlineFeatureReader:
    """The online feature reader of ``customer_serving_v3`` (reads the Feast registry)."""
    return OnlineFeatureReader(
        open_store(settings), SERVING_FEATURE_SERVICE, "customer_id", clock=feature_clock(settings)
    )


def build_engine(
    settings: Settings,
    bundle: Bundle | None = None,
    features: FeatureSource | None = None,
) -> RecommendationEngine:
    """The engine over ``bundle`` (default :func:`load_bundle`) and ``features`` (default
    :func:`open_reader`), with the settings' serving policy, feature clock, tactics and
    experiments (raises :class:`serving.personalisation.PersonalisationError` when those
    files do not fit the bundle)."""
    engine = RecommendationEngine(
        bundle or load_bundle(settings),
        features or open_reader(settings),
        clock=feature_clock(settings),
        policy=serving_policy(settings),
    )
    engine.personalisation = personalisation_for(settings, engine)
    return engine


def personalisation_for(settings: Settings, engine: RecommendationEngine) -> Personalisation:
    """The settings' tactics and experiments files, checked against ``engine``'s bundle."""
    return load_personalisation(settings.tactics_file, settings.experiments_file, engine.catalogue)


def serving_policy(settings: Settings) -> ServingPolicy:
    return ServingPolicy(
        viewed=settings.session_viewed_items,
        carted=settings.session_carted_items,
        session_boost=settings.session_boost,
        context_weight=settings.placement_context_weight,
    )
