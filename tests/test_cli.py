"""The command line as a user runs it: a real process, real files, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SEGREC = [sys.executable, "-m", "segrec.cli"]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        SEGREC + args,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.integration
def test_data_command_generates_cleans_and_reports(tmp_path: Path) -> None:
    result = run(["data", "--size", "tiny", "--seed", "7"], tmp_path)
    assert result.returncode == 0, result.stderr
    for path in (
        "data/clean/customers.parquet",
        "data/clean/products.parquet",
        "data/clean/events.parquet",
        "data/clean/manifest.json",
        "reports/data_quality.json",
        "data/raw/synthetic/ground_truth.parquet",
    ):
        assert (tmp_path / path).exists(), path
    assert "Data quality" in result.stdout and "duplicate_customer_merged" in result.stdout
    assert "reports/data_quality.json" in result.stdout
    report = json.loads((tmp_path / "reports/data_quality.json").read_text())
    assert report["source"]["seed"] == 7
    assert report["pseudonymisation_secret"].startswith("development default")


@pytest.mark.integration
def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    result = run(
        ["data"],
        tmp_path,
        SEGREC_SIZE="tiny",
        SEGREC_DATA_DIR="elsewhere",
        SEGREC_PSEUDONYMISATION_SECRET="s3cret",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "elsewhere/clean/events.parquet").exists()
    report = json.loads((tmp_path / "reports/data_quality.json").read_text())
    assert report["pseudonymisation_secret"] == "configured"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["data", "--input", "nowhere.csv", "--format", "online-retail"],
            "input nowhere.csv does not exist",
        ),
        (["data", "--format", "movielens"], "--format movielens needs --input PATH"),
        (["data", "--input", "."], "--input needs --format canonical, online-retail or movielens"),
        (["data", "--size", "huge"], "Invalid value for '--size'"),
        (["features"], "no clean data in data/clean: run `make data` first"),
        (["bench", "--online"], "no features in data/features: run `make features` first"),
        (["bench", "--sizes", "tiny,huge"], "--sizes takes sizes from tiny, small, medium"),
    ],
)
def test_bad_arguments_get_a_clear_error_not_a_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run(args, tmp_path)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_settings_command_documents_every_variable(tmp_path: Path) -> None:
    result = run(["settings"], tmp_path)
    assert result.returncode == 0
    for variable in ("SEGREC_DATA_DIR", "SEGREC_SEED", "SEGREC_PSEUDONYMISATION_SECRET"):
        assert variable in result.stdout
    assert "segrec-development-secret" not in result.stdout


def test_the_demo_summary_names_the_best_trained_model_not_the_oracle(tmp_path: Path) -> None:
    """The tour's evaluation summary picks the best single model among the trained ones:
    the random baseline and the generator's oracle sit in the same tables."""
    import pandas as pd
    from rich.console import Console

    from segrec.settings import Settings
    from serving.demo_tour import Tour

    settings = Settings(data_dir=tmp_path / "data", reports_dir=tmp_path / "reports")
    settings.clean_dir.mkdir(parents=True)
    pd.DataFrame({"product_id": ["P1"]}).to_parquet(settings.clean_dir / "products.parquet")
    settings.reports_dir.mkdir(parents=True)
    means = {"popularity": 0.07, "svd": 0.09, "blend": 0.11, "random": 0.01, "oracle": 0.2}
    report = {
        "k": 10,
        "protocol": "temporal",
        "models": ["popularity", "svd"],
        "protocols": {
            "filtered": {"summary": {m: {"means": {"ndcg": v}} for m, v in means.items()}}
        },
    }
    (settings.reports_dir / "evaluation.json").write_text(json.dumps(report))
    console = Console(record=True, width=120)
    Tour(settings, "http://127.0.0.1:1", console).summary()
    text = console.export_text()
    assert "svd 0.090" in text and "oracle" not in text
    assert "re-ranked" not in text and "0.110" in text
    # With a re-ranker kept, the weights alone stand beside the re-ranked blend.
    means["linear_blend"] = 0.1
    report["rerank"] = {"chosen": True}
    report["protocols"]["filtered"]["summary"] = {
        m: {"means": {"ndcg": v}} for m, v in means.items()
    }
    (settings.reports_dir / "evaluation.json").write_text(json.dumps(report))
    console = Console(record=True, width=80)  # the narrowest terminal it must fit
    Tour(settings, "http://127.0.0.1:1", console).summary()
    text = console.export_text()
    assert "re-ranked" in text and "…" not in text
    assert "0.100" in text and "0.110" in text and "linear_blend" not in text
