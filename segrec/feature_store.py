"""Open segrec's Feast feature store from the settings, for training and serving alike.

``feature_repo/feature_store.yaml`` reads ``${SEGREC_FEAST_*}`` variables; this module
derives them from the one settings object, so SQLite locally and Redis on Kubernetes are
a change of ``SEGREC_ONLINE_STORE`` only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from segrec.settings import Settings

DEFINITIONS_MODULE = "feature_definitions.py"
# The registry changes only when `make features` applies; serving re-reads it this often.
REGISTRY_CACHE_SECONDS = 60


def feast_environment(settings: Settings) -> dict[str, str]:
    """The variables ``feature_store.yaml`` and the definitions module expand."""
    feast_dir = settings.feast_dir.resolve()
    if settings.online_store == "redis":
        online = f'{{type: redis, connection_string: "{settings.redis_url}"}}'
    else:
        online = f"{{type: sqlite, path: {feast_dir / 'online.db'}}}"
    registry = f"{{path: {feast_dir / 'registry.db'}, cache_ttl_seconds: {REGISTRY_CACHE_SECONDS}}}"
    return {
        "SEGREC_FEAST_REGISTRY": registry,
        "SEGREC_FEAST_ONLINE_STORE": online,
        "SEGREC_FEATURES_DIR": str(settings.features_dir.resolve()),
    }


def quiet_feast() -> None:
    """Feast warns on every call about preview features and deprecations; keep logs readable."""
    logging.getLogger("feast").setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning, UserWarning, RuntimeWarning):
        warnings.filterwarnings("ignore", category=category, module=r"feast(\.|$)")


def open_store(settings: Settings) -> Any:
    """A ``feast.FeatureStore`` on the repository, configured from ``settings``."""
    from feast import FeatureStore

    quiet_feast()
    os.environ.update(feast_environment(settings))
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.feast_repo.resolve()))


def load_definitions(settings: Settings) -> dict[str, Any]:
    """Import the definitions module afresh (its paths depend on the environment) and return
    its Feast objects by name."""
    from feast import Entity, FeatureService, FeatureView, PushSource
    from feast.data_source import DataSource

    os.environ.update(feast_environment(settings))
    path = Path(settings.feast_repo) / DEFINITIONS_MODULE
    spec = importlib.util.spec_from_file_location("segrec_feature_definitions", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no Feast definitions at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kinds = (Entity, FeatureService, FeatureView, PushSource, DataSource)
    return {
        getattr(obj, "name", name): obj
        for name, obj in vars(module).items()
        if isinstance(obj, kinds)
    }
