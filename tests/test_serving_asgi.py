"""The service through its ASGI app in this process (no server): BentoML's own request
handling, validation and lifespan, quicker to probe than a `bentoml serve` process."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from starlette.testclient import TestClient

from segrec.settings import Settings
from tests.conftest import serving_workspace
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(
    trained_small: tuple[Settings, TrainingRun], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    trained, run = trained_small
    assert run.export is not None
    settings = serving_workspace(
        trained, tmp_path_factory.mktemp("asgi"), Path(run.export.bundle_dir)
    )
    env = {
        "SEGREC_DATA_DIR": str(settings.data_dir),
        "SEGREC_FEAST_REPO": str(trained.feast_repo),
        "SEGREC_MAX_BATCH_EVENTS": "3",
        "SEGREC_SERVING_TIMEOUT_MS": "500",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        # The service reads its settings at import: import it under this environment.
        import serving.service

        service = importlib.reload(serving.service)
        with TestClient(service.Segrec.to_asgi()) as test_client:
            yield test_client
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _first_customer(trained_small: tuple[Settings, TrainingRun]) -> str:
    settings, _ = trained_small
    segments = pd.read_parquet(settings.features_dir / "customer_segments.parquet")
    return str(segments["customer_id"].iloc[0])


def test_ready_and_answering(
    client: TestClient, trained_small: tuple[Settings, TrainingRun]
) -> None:
    assert client.get("/readyz").status_code == 200
    answer = client.post("/recommend", json={"customer_id": _first_customer(trained_small)})
    assert answer.status_code == 200 and answer.json()["fallback"] is None
    assert len(answer.json()["items"]) == 10


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/recommend", {"customer_id": "c_x", "k": -1}, "k"),
        ("/recommend", {"customer_id": "c_x", "product_id": ["P1"]}, "product_id"),
        ("/recommend/batch", {"requests": [{"customer_id": "c_x", "k": 1000}]}, "k"),
        ("/recommend/batch", {"requests": [{"customer": "c_x"}]}, "customer_id"),
        ("/similar", {"product_id": "P000001", "k": 0}, "k"),
        ("/segment", {}, "customer_id"),
        ("/events", {"events": "view"}, "events"),
    ],
)
def test_every_endpoint_names_the_bad_field(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.text and "error" in answer.json()


def test_too_many_events_in_one_call_are_refused_whole(client: TestClient) -> None:
    event = {"customer_id": "c_0123456789abcdef", "product_id": "P000001", "type": "view"}
    answer = client.post("/events", json={"events": [event] * 4})
    assert answer.status_code == 400 and answer.json()["field"] == "events"
    assert "SEGREC_MAX_BATCH_EVENTS" in answer.json()["error"]


def test_admin_endpoints_are_off_without_a_token(client: TestClient) -> None:
    answer = client.post("/admin/reload", json={})
    assert answer.status_code == 403 and "SEGREC_ADMIN_TOKEN" in answer.json()["error"]
