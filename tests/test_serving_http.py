"""A real `bentoml serve` process over real HTTP, on the trained small storefront."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segrec.settings import PROJECT_ROOT, Settings
from training.features.local_redis import free_port
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {"error": error.read().decode()}


@pytest.fixture(scope="module")
def server(
    trained_small: tuple[Settings, TrainingRun], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    settings, _ = trained_small
    port = free_port()
    env = {
        **os.environ,
        "SEGREC_DATA_DIR": str(settings.data_dir),
        "SEGREC_FEAST_REPO": str(settings.feast_repo),
        "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home")),
    }
    bentoml = Path(sys.executable).parent / "bentoml"
    process = subprocess.Popen(
        [
            str(bentoml),
            "serve",
            "serving.service:Segrec",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"bentoml serve exited early:\n{output[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("bentoml serve did not become ready within 120 s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_recommend_over_http(server: str, trained_small: tuple[Settings, TrainingRun]) -> None:
    settings, run = trained_small
    customer = pd.read_parquet(settings.features_dir / "customer_segments.parquet").iloc[0]
    status, body = _post(f"{server}/recommend", {"customer_id": customer["customer_id"], "k": 5})
    assert status == 200, body
    assert len(body["items"]) == 5 and body["fallback"] is None
    assert body["segment"]["id"] == customer["segment_id"]
    assert run.export is not None and body["bundle_version"] == run.export.bundle_version
    status, body = _post(f"{server}/recommend", {"customer_id": "c_nobody", "k": 3})
    assert status == 200 and body["fallback"] == "unknown_customer" and len(body["items"]) == 3


def test_bad_requests_are_refused_with_a_reason(server: str) -> None:
    status, body = _post(f"{server}/recommend", {"customer_id": "c_x", "k": 0})
    assert status == 400 and "k" in body["error"]
    status, body = _post(f"{server}/recommend", {"k": 3})
    assert status == 400 and "customer_id" in body["error"]
    status, body = _post(f"{server}/recommend", {"customer_id": "c_x", "placement": "moon"})
    assert status == 400 and "placement" in body["error"]


def test_similar_over_http(server: str) -> None:
    status, body = _post(f"{server}/similar", {"product_id": "P000001", "k": 4})
    assert status == 200 and len(body["items"]) == 4
    status, body = _post(f"{server}/similar", {"product_id": "P-none"})
    assert status == 200 and body["items"] == [] and "unknown product_id" in body["error"]


def test_segment_over_http(server: str, trained_small: tuple[Settings, TrainingRun]) -> None:
    settings, _ = trained_small
    customer = pd.read_parquet(settings.features_dir / "customer_segments.parquet").iloc[2]
    status, body = _post(f"{server}/segment", {"customer_id": customer["customer_id"]})
    assert status == 200 and body["segment"]["name"] == customer["segment_name"]
    assert body["lifecycle_stage"] == customer["lifecycle_stage"]
    assert "repeat_view_share" in body["profile"]
    status, body = _post(f"{server}/segment", {"customer_id": "c_nobody"})
    assert status == 200 and body["segment"] is None and body["fallback"] == "unknown_customer"
