"""Shared fixtures: small seeded data sets generated and cleaned once per session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segrec.settings import PROJECT_ROOT, Settings
from training.data.pipeline import CleanSummary, clean_dataset
from training.data.raw import RawDataset
from training.data.synthetic.generator import generate

SEED = 42
END = dt.date(2026, 10, 31)


def make_settings(root: Path, **overrides: object) -> Settings:
    return Settings(data_dir=root / "data", reports_dir=root / "reports", **overrides)


@dataclass
class Dataset:
    settings: Settings
    raw: RawDataset
    summary: CleanSummary

    def clean(self, table: str) -> pd.DataFrame:
        return pd.read_parquet(self.settings.clean_dir / f"{table}.parquet")

    def personas(self) -> pd.Series:
        """The planted persona of each original customer, by clean (pseudonymous) id."""
        from segrec.pseudonym import pseudonymise_many

        secret = self.settings.pseudonymisation_secret.get_secret_value()
        truth = pd.read_parquet(self.raw.directory / "ground_truth.parquet")
        truth = truth[truth["duplicate_of"].isna()]
        ids = pseudonymise_many(truth["raw_customer_id"], secret)
        return pd.Series(truth["persona"].to_numpy(), index=ids, name="persona")


def _build(root: Path, size: str) -> Dataset:
    settings = make_settings(root, size=size, seed=SEED)
    raw_dir = settings.raw_dir / "synthetic"
    generate(raw_dir, size, SEED, END, progress=False)
    raw = RawDataset(raw_dir)
    return Dataset(settings, raw, clean_dataset(raw, settings))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The tiny synthetic storefront, generated and cleaned."""
    return _build(tmp_path_factory.mktemp("tiny"), "tiny")


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The small synthetic storefront (5k customers): enough for structure statistics."""
    return _build(tmp_path_factory.mktemp("small"), "small")


def feast_workspace(root: Path, dataset: Dataset, **overrides: object) -> Settings:
    """Settings under ``root`` with a copy of the feature repo and of ``dataset``'s clean
    and raw data (so tests can apply and write without touching each other)."""
    import shutil

    settings = make_settings(root, feast_repo=root / "feature_repo", **overrides)
    shutil.copytree(
        PROJECT_ROOT / "feature_repo",
        settings.feast_repo,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(dataset.settings.clean_dir, settings.clean_dir)
    shutil.copytree(dataset.settings.raw_dir, settings.raw_dir)
    return settings


def prepare_feast(root: Path, dataset: Dataset, **overrides: object) -> Settings:
    """:func:`feast_workspace` with features built, applied and loaded online (SQLite)."""
    from training.features.build import build_features
    from training.features.materialize import apply_and_materialise

    settings = feast_workspace(root, dataset, **overrides)
    build_features(settings, progress=False)
    apply_and_materialise(settings)
    return settings


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory: pytest.TempPathFactory, small: Dataset) -> tuple[Settings, Any]:
    """The small storefront segmented (k = 6), trained, evaluated and exported."""
    from training.segmentation.pipeline import run_segmentation
    from training.train.pipeline import run_training

    root = tmp_path_factory.mktemp("trained")
    settings = prepare_feast(
        root,
        small,
        segment_k=6,
        segment_bootstrap_rounds=2,
        blend_max_seconds=10.0,
        search_max_seconds=8.0,
        bentoml_home=root / "bentoml",
    )
    run_segmentation(settings, progress=False)
    return settings, run_training(settings)


def serving_workspace(trained: Settings, root: Path, bundle_dir: Path | None = None) -> Settings:
    """A data directory for one serving process under ``root``: the trained features
    (read only, linked), a copy of the Feast registry and online store (sessions are
    written there) and, when given, a copy of the bundle. Events, sessions and reloads
    there do not leak into other tests."""
    import shutil

    data = root / "data"
    data.mkdir(parents=True)
    (data / "features").symlink_to(trained.features_dir.resolve())
    shutil.copytree(trained.feast_dir, data / "feast")
    if bundle_dir is not None:
        shutil.copytree(bundle_dir, data / "bundles" / bundle_dir.name)
    return trained.model_copy(update={"data_dir": data, "feast_state_dir": None})


def new_serving_workspace(
    trained_small: tuple[Settings, Any], tmp_path_factory: pytest.TempPathFactory, name: str
) -> tuple[Path, Settings]:
    """A fresh directory ``name`` and a :func:`serving_workspace` in it holding the trained
    small storefront's exported bundle: (root, workspace settings)."""
    trained, run = trained_small
    assert run.export is not None, "the trained fixture exports a bundle"
    root = tmp_path_factory.mktemp(name)
    return root, serving_workspace(trained, root, Path(run.export.bundle_dir))


@contextmanager
def serve_workspace(
    workspace: Settings, trained: Settings, root: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """A real ``bentoml serve`` over ``workspace`` (from :func:`serving_workspace`), the
    trained feature repo and its own BentoML home under ``root``; yields its URL. The
    server's log is ``root / "server.log"``; ``env`` adds or overrides settings."""
    from segrec.service_process import bentoml_command, running_on_free_port

    full_env = {
        "SEGREC_DATA_DIR": str(workspace.data_dir),
        "SEGREC_FEAST_REPO": str(trained.feast_repo),
        # Generous for a busy 2-core CI box.
        "SEGREC_SERVING_TIMEOUT_MS": "500",
        "BENTOML_HOME": str(root / "bentoml_home"),
        **(env or {}),
    }
    with running_on_free_port(
        lambda port: bentoml_command("serving.service:Segrec", port),
        root / "server.log",
        full_env,
    ) as running:
        yield running.url
