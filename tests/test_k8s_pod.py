"""The pod contract: the serving container exactly as the dev overlay renders it, run here.

No cluster and no image runtime on this machine, so the container is translated, piece by
piece, from the rendered Deployment (nothing below is hand-written twice):

- **command**: the Deployment sets none, so the image's ENTRYPOINT runs: BentoML's
  ``env/docker/entrypoint.sh``, which turns ``serve <flags>`` into ``exec bentoml serve
  <flags> $BENTO_PATH`` (``/home/bentoml/bento``). Here: ``.venv/bin/bentoml serve
  <flags> serving.service:Segrec``, the same service the Bento packages, from a copy of
  the Bento's source (``bentofile.yaml``'s ``include``) as the working directory, as
  BentoML does with the Bento's ``src/``. ``--host 0.0.0.0`` becomes 127.0.0.1 and
  ``--port`` a free port (the container's port is checked against the Service and probes
  by tests/test_k8s.py).
- **env**: the ConfigMap's values and the container's ``env``; Secrets get test values.
  Paths under a volume's ``mountPath`` are moved to a local stand-in: the data PVC
  (``/var/lib/segrec``) to a workspace holding the trained small storefront
  (``tests.conftest.serving_workspace``), each ``emptyDir`` (``/tmp``, the BentoML home)
  to a fresh temporary directory.
- **read-only root filesystem**: only those stand-ins may be written. Everything else the
  server could write in the image (the Bento's source) is the copy, which must come out
  unchanged; the image's source is not writable either, so bytecode caching is off
  (``PYTHONDONTWRITEBYTECODE``), as it silently fails there.
- **probes**: the startup probe's budget (period x failure threshold) is the time allowed
  to turn ready; then the startup, liveness and readiness paths must answer 200 on the
  container port, Prometheus' scrape path too, and one ``/recommend`` must succeed. The
  server's resident memory must fit the container's memory limit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from k8s.validate import load_objects, render
from segrec.service_process import RunningService, running_on_free_port
from segrec.settings import PROJECT_ROOT, Settings
from tests.conftest import serving_workspace
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICE_TARGET = "serving.service:Segrec"
TEST_SECRETS = {
    "SEGREC_ADMIN_TOKEN": "pod-contract-token",
    "SEGREC_PSEUDONYMISATION_SECRET": "pod-contract-secret",
    "SEGREC_REDIS_URL": "127.0.0.1:1",  # dev uses SQLite; an unused, unreachable Redis
}


@dataclass
class Container:
    """The serving container and its pod, as rendered for dev."""

    spec: dict[str, Any]
    volumes: dict[str, dict[str, Any]]
    config: dict[str, str]

    @classmethod
    def rendered(
        cls,
        overlay: str = "dev",
        kind: str = "Deployment",
        name: str = "segrec-serving",
        container: str = "serving",
    ) -> Container:
        objects = load_objects(render(overlay))
        (workload,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        pod = workload["spec"]["template"]["spec"]
        (spec,) = [c for c in pod["containers"] if c["name"] == container]
        config: dict[str, str] = {}
        for source in spec.get("envFrom", []):
            name = source["configMapRef"]["name"]
            (config_map,) = [
                o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name
            ]
            config |= config_map["data"]
        return cls(spec, {v["name"]: v for v in pod["volumes"]}, config)

    def mounts(self) -> dict[str, dict[str, Any]]:
        """mountPath -> the volume mounted there."""
        return {m["mountPath"]: self.volumes[m["name"]] for m in self.spec["volumeMounts"]}

    def environment(self, secrets: dict[str, str]) -> dict[str, str]:
        env = dict(self.config)
        for entry in self.spec.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            else:
                env[entry["name"]] = secrets[entry["valueFrom"]["secretKeyRef"]["key"]]
        return env

    def flags(self, port: int) -> list[str]:
        """The container's ``serve`` flags, with the host and port made local."""
        args = list(self.spec["args"])
        assert "command" not in self.spec and args[0] == "serve", "expects the image entrypoint"
        flags = args[1:]
        flags[flags.index("--host") + 1] = "127.0.0.1"
        flags[flags.index("--port") + 1] = str(port)
        return flags

    def probe_path(self, probe: str) -> str:
        return str(self.spec[probe]["httpGet"]["path"])


def localise(value: str, stand_ins: dict[str, Path]) -> str:
    """A container path under a mount, moved to the mount's local stand-in."""
    for mount, local in sorted(stand_ins.items(), key=lambda item: -len(item[0])):
        if value == mount or value.startswith(mount + "/"):
            return str(local) + value[len(mount) :]
    return value


def copy_bento_source(target: Path) -> None:
    """What `make bento` puts in the Bento's src/: bentofile.yaml's include globs."""
    bentofile = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())
    for pattern in bentofile["include"]:
        for path in PROJECT_ROOT.glob(pattern):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            destination = target / path.relative_to(PROJECT_ROOT)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() or p.is_dir()
    }


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status)


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status), json.loads(response.read())


def _resident_mb(pid: int) -> float:
    import psutil

    parent = psutil.Process(pid)
    processes = [parent, *parent.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes) / 2**20


@dataclass
class Pod:
    container: Container
    service: RunningService
    settings: Settings  # of the data volume's stand-in
    image_root: Path
    image_before: dict[str, tuple[int, int]]
    env: dict[str, str]  # the server's environment, localised
    resident_mb: float  # when it turned ready
    ready_seconds: float


@dataclass
class FeastApply:
    process: subprocess.Popen[str]
    data_dir: Path


@pytest.fixture(scope="module")
def feast_apply(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastApply]:
    """The one-off job of every deploy, started in the background (it overlaps the
    serving pod's start-up), translated the same way: ``python`` is this environment's,
    the training image's ``/app`` (the project) a copy of the feature repository, the data
    volume a fresh directory."""
    root = tmp_path_factory.mktemp("feast-apply")
    job = Container.rendered("dev", "Job", "segrec-feast-apply", "feast-apply")
    stand_ins = {mount: root / volume_name(job, mount) for mount in job.mounts()}
    stand_ins["/app"] = root / "app"
    shutil.copytree(PROJECT_ROOT / "feature_repo", stand_ins["/app"] / "feature_repo")
    for path in stand_ins.values():
        path.mkdir(parents=True, exist_ok=True)
    env = {k: localise(v, stand_ins) for k, v in job.environment(TEST_SECRETS).items()}
    assert job.spec["command"][0] == "python"
    command = [str(PROJECT_ROOT / ".venv" / "bin" / "python"), *job.spec["command"][1:]]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SEGREC_")}
    process = subprocess.Popen(
        command,
        env={**inherited, **env, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield FeastApply(process, Path(env["SEGREC_DATA_DIR"]))
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def pod(
    trained_small: tuple[Settings, TrainingRun],
    tmp_path_factory: pytest.TempPathFactory,
    feast_apply: FeastApply,
) -> Iterator[Pod]:
    trained, run = trained_small
    assert run.export is not None
    container = Container.rendered("dev")
    root = tmp_path_factory.mktemp("pod")
    stand_ins: dict[str, Path] = {}
    for mount, volume in container.mounts().items():
        if "persistentVolumeClaim" in volume:
            stand_ins[mount] = root / "pvc"
        else:
            assert "emptyDir" in volume, f"{mount}: only emptyDir and the data PVC expected"
            stand_ins[mount] = root / "empty" / volume_name(container, mount)
            stand_ins[mount].mkdir(parents=True)
    data_mount = next(m for m, v in container.mounts().items() if "persistentVolumeClaim" in v)
    stand_ins[data_mount].mkdir()
    settings = serving_workspace(trained, stand_ins[data_mount], Path(run.export.bundle_dir))

    env = {k: localise(v, stand_ins) for k, v in container.environment(TEST_SECRETS).items()}
    assert Path(env["SEGREC_DATA_DIR"]) == settings.data_dir
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    image_root = root / "bento-src"
    copy_bento_source(image_root)
    image_before = snapshot(image_root)

    bentoml = str(PROJECT_ROOT / ".venv" / "bin" / "bentoml")
    startup = container.spec["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        # Only what the pod sets: nothing from the developer's shell.
        for name in list(os.environ):
            if name.startswith(("SEGREC_", "BENTOML_")):
                patch.delenv(name)
        with running_on_free_port(
            lambda port: [bentoml, "serve", *container.flags(port), SERVICE_TARGET],
            root / "server.log",
            env,
            ready_timeout=budget,
            cwd=image_root,
            ready_path=container.probe_path("readinessProbe"),
        ) as service:
            yield Pod(
                container,
                service,
                settings,
                image_root,
                image_before,
                env,
                _resident_mb(service.pid),
                time.monotonic() - started,
            )


def volume_name(container: Container, mount: str) -> str:
    (name,) = [m["name"] for m in container.spec["volumeMounts"] if m["mountPath"] == mount]
    return str(name)


def test_probes_answer_on_the_container_port(pod: Pod) -> None:
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert _get(pod.service.url + pod.container.probe_path(probe)) == 200, probe
    assert _get(pod.service.url + "/metrics") == 200


def test_one_recommendation_succeeds(pod: Pod) -> None:
    segments = pd.read_parquet(pod.settings.features_dir / "customer_segments.parquet")
    customer = str(segments["customer_id"].iloc[0])
    status, body = _post(f"{pod.service.url}/recommend", {"customer_id": customer, "k": 5})
    assert status == 200
    assert len(body["items"]) == 5 and body["fallback"] is None
    assert body["segment"] is not None


def test_it_fits_the_memory_limit(pod: Pod) -> None:
    """Resident memory (the server's whole process tree) after 300 carousels for 100
    customers stays within the container's memory request: the limit's headroom is for
    load (capacity.json's rule: request 1.25x, limit 1.5x the resident size)."""
    segments = pd.read_parquet(pod.settings.features_dir / "customer_segments.parquet")
    customers = segments["customer_id"].drop_duplicates().head(100).tolist()
    for i in range(300):
        body = {"customer_id": customers[i % len(customers)], "k": 10}
        assert _post(f"{pod.service.url}/recommend", body)[0] == 200
    resident = _resident_mb(pod.service.pid)
    resources = pod.container.spec["resources"]
    request, limit = (mebibytes(resources[k]["memory"]) for k in ("requests", "limits"))
    print(
        f"serving resident memory: {pod.resident_mb:.0f} MB when ready, {resident:.0f} MB "
        f"after 300 requests (request {request:.0f} Mi, limit {limit:.0f} Mi); ready in "
        f"{pod.ready_seconds:.1f} s"
    )
    assert resident < request <= limit


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    assert quantity[-2:] in units, quantity
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_only_volumes_were_written(pod: Pod) -> None:
    """Runs last (file order): after the requests above, the Bento's source is unchanged."""
    after = snapshot(pod.image_root)
    changed = {
        k for k in after.keys() | pod.image_before.keys() if after.get(k) != pod.image_before.get(k)
    }
    assert not changed, f"written outside the volumes: {sorted(changed)}"
    # The emptyDir stand-in took what the read-only root could not (BentoML's home).
    assert any(Path(pod.env["BENTOML_HOME"]).iterdir()), "BentoML wrote nothing to its home"


def test_the_feast_apply_job_registers_the_definitions(feast_apply: FeastApply) -> None:
    """The feast-apply job's command, on an empty data volume, registers every definition
    (serving's readiness waits for that registry)."""
    out, err = feast_apply.process.communicate(timeout=300)
    assert feast_apply.process.returncode == 0, err[-3000:]
    assert "customer_serving_v2" in out
    assert (feast_apply.data_dir / "feast" / "registry.db").stat().st_size > 0
