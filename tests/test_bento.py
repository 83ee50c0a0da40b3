"""`make bento`: the Bento builds from bentofile.yaml and `bentoml serve <bento>` answers."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from segrec.service_process import bentoml_command, running_on_free_port
from segrec.settings import PROJECT_ROOT, Settings
from serving.bento_build import REQUIREMENTS, build_bento
from tests.conftest import serving_workspace
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_bento_carries_the_bundle_and_serves_it(
    trained_small: tuple[Settings, TrainingRun], tmp_path: Path
) -> None:
    settings, run = trained_small
    assert run.export is not None
    if not REQUIREMENTS.is_file():  # what `make bento` does first
        subprocess.run(
            ["make", "-s", str(REQUIREMENTS.relative_to(PROJECT_ROOT))],
            cwd=PROJECT_ROOT,
            check=True,
        )
    home = str(settings.bentoml_store.resolve())
    os.environ["BENTOML_HOME"] = home  # the store the trained fixture exported into
    built = build_bento(settings)
    assert built.bundle_version == run.export.bundle_version
    manifest = yaml.safe_load((built.path / "bento.yaml").read_text())
    assert [m["tag"] for m in manifest["models"]] == [run.export.bentoml_tag]
    sources = {p.relative_to(built.path / "src").as_posix() for p in built.path.rglob("*.py")}
    assert "serving/service.py" in sources and "feature_repo/feature_definitions.py" in sources
    assert not any(s.startswith("training/") for s in sources), "no training code in serving"
    requirements = (built.path / "env" / "python" / "requirements.txt").read_text()
    for training_only in ("scikit-learn", "implicit", "scikit-surprise", "pandera"):
        assert f"\n{training_only}==" not in requirements

    # Served from the Bento, with no bundles directory: the bundle comes from the model.
    data = serving_workspace(settings, tmp_path).data_dir  # no bundles directory in it
    env = {"SEGREC_DATA_DIR": str(data), "BENTOML_HOME": home}
    with running_on_free_port(
        lambda port: bentoml_command(built.tag, port), tmp_path / "bento.log", env
    ) as service:
        request = urllib.request.Request(
            f"{service.url}/recommend",
            data=json.dumps({"customer_id": "c_nobody", "k": 3}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
    assert body["bundle_version"] == run.export.bundle_version and len(body["items"]) == 3
