"""Schemathesis against a real `bentoml serve` process: every operation of ``/docs.json``.

Each operation gets schema-valid and schema-violating requests (coverage and fuzzing
phases, ``--mode all``), checked by schemathesis' default checks: no 5xx, only documented
statuses, answers matching the documented schemas, valid input accepted, invalid input
refused, and a generous response-time limit for this shared 2-core box. The admin
operations are called without a valid token and must refuse. Generation is
deterministic, so a run finds the same cases every time. Half the generated customer
and product ids are real ones (a ``schemathesis.toml`` dictionary), so personal answers
and ``/similar`` are reached, not only fallbacks and 404s.

The ``st`` command line runs it: schemathesis' pytest loader for a schema served by a
fixture (``from_fixture``) does not work with pytest 9 (it reads ``Function._nodeid``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from segrec.settings import Settings
from serving.api_schema import honest_spec
from tests.conftest import new_serving_workspace, serve_workspace
from training.train.pipeline import TrainingRun

MAX_EXAMPLES = 25  # per operation and phase: the whole run takes about half a minute
MAX_RESPONSE_SECONDS = 2.0


@dataclass(frozen=True)
class Server:
    url: str
    config_dir: Path  # holds the run's schemathesis.toml


@pytest.fixture(scope="module")
def server(
    trained_small: tuple[Settings, TrainingRun], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    trained, _ = trained_small
    root, settings = new_serving_workspace(trained_small, tmp_path_factory, "schemathesis")
    env = {
        "SEGREC_ADMIN_TOKEN": "schemathesis-never-sends-this",
        "SEGREC_MAX_REQUEST_BYTES": "200000",
    }
    with serve_workspace(settings, trained, root, env) as url:
        _write_config(url, settings, root / "st")
        yield Server(url, root / "st")


def _write_config(url: str, settings: Settings, directory: Path) -> None:
    """A ``schemathesis.toml`` in ``directory`` making half the generated ids real
    customers and products, so the personal paths and ``/similar`` are reached too."""
    request = urllib.request.Request(
        f"{url}/recommend",
        data=json.dumps({"customer_id": "c_nobody", "k": 20}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        products = [item["product_id"] for item in json.loads(response.read())["items"]]
    segments = pd.read_parquet(settings.features_dir / "customer_segments.parquet")
    customers = [str(c) for c in segments["customer_id"].iloc[:20]]
    directory.mkdir()
    (directory / "schemathesis.toml").write_text(
        f"""[dictionaries.products]
values = {json.dumps(products)}

[dictionaries.customers]
values = {json.dumps(customers)}

[parameters]
"body.product_id" = {{ dictionary = "products", probability = 0.5 }}
"body.customer_id" = {{ dictionary = "customers", probability = 0.5 }}
"""
    )


@pytest.mark.integration
@pytest.mark.slow
def test_every_operation_keeps_its_documented_contract(server: Server) -> None:
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{server.url}/docs.json",
        "--mode",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--max-response-time",
        str(MAX_RESPONSE_SECONDS),
        "--continue-on-failure",
        # Generating big bodies is slow on a loaded box: not the service's fault.
        "--suppress-health-check",
        "too_slow,data_too_large,filter_too_much",
        "--no-color",
    ]
    # From the directory holding our schemathesis.toml (and no other).
    run = subprocess.run(
        command, cwd=server.config_dir, capture_output=True, text=True, timeout=600
    )
    output = run.stdout + run.stderr
    summary = output[output.rfind("SUMMARY") :] if "SUMMARY" in output else output[-3000:]
    print(summary)
    assert run.returncode == 0, output[-8000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert cases is not None, summary
    assert int(cases.group(1)) > 200 and cases.group(1) == cases.group(2), summary
    with urllib.request.urlopen(f"{server.url}/docs.json", timeout=30) as response:
        operations = sum(len(item) for item in json.loads(response.read())["paths"].values())
    assert f"Tested: {operations}" in output, ("every operation was tested", summary)
    assert "Missing test data" not in output, ("real ids reached every operation", summary)


@pytest.mark.integration
@pytest.mark.slow
def test_the_served_schema_documents_what_the_service_answers(server: Server) -> None:
    with urllib.request.urlopen(f"{server.url}/docs.json", timeout=30) as response:
        spec = json.loads(response.read())
    recommend = spec["paths"]["/recommend"]["post"]
    assert recommend["requestBody"]["required"] is True
    body = recommend["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["category"]["nullable"] is True
    assert {"400", "413", "415", "429", "503", "504"} <= set(recommend["responses"])
    for status in ("429", "503"):  # ours, with a JSON body and when to retry
        answer = spec["paths"]["/events"]["post"]["responses"][status]
        assert "Retry-After" in answer["headers"], status
        assert answer["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    reload = spec["paths"]["/admin/reload"]["post"]
    assert {"401", "403", "409"} <= set(reload["responses"])
    assert "401" not in recommend["responses"]


def test_nullable_fields_and_required_bodies_are_restored() -> None:
    bentoml_spec = {
        "paths": {
            "/similar": {
                "post": {
                    "x-bentoml-name": "similar",
                    "responses": {"200": {"description": "ok"}, "404": {"description": "Gone"}},
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {"properties": {"p": {"type": "string"}}}
                            }
                        }
                    },
                }
            },
            "/livez": {"get": {"responses": {"200": {"description": "ok"}}}},
        },
        "components": {
            "schemas": {
                "similar__Input": {
                    "required": ["p"],
                    "properties": {"p": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                }
            }
        },
    }
    fixed = honest_spec(bentoml_spec)
    operation = fixed["paths"]["/similar"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["p"] == {"type": "string", "nullable": True}
    assert operation["requestBody"]["required"] is True
    assert operation["responses"]["404"]["description"] == "Gone"
    assert "schema" in operation["responses"]["404"]["content"]["application/json"]
    assert set(operation["responses"]["429"]["headers"]) == {"Retry-After"}
    assert "headers" not in operation["responses"]["400"]
    assert "content" not in operation["responses"]["504"]  # BentoML's body, not promised
    assert fixed["paths"]["/livez"] == bentoml_spec["paths"]["/livez"]
    assert "anyOf" in bentoml_spec["components"]["schemas"]["similar__Input"]["properties"]["p"]
