"""The Kubernetes manifests (k8s/), rendered as `make k8s` renders them: schemas, checkov,
and what neither checker knows about segrec (probes, ports, selectors, the PDB at the
HPA's minimum, settings keys, sizes from the capacity file, network flows, job policies)."""

from __future__ import annotations

import http.server
import importlib.util
import json
import math
import shutil
import threading
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from k8s.validate import (
    CAPACITY_FILE,
    K8S_DIR,
    MEASURED_CAPACITY_FILE,
    OVERLAYS,
    PROJECT_ROOT,
    capacity_drift,
    capacity_lines,
    load_objects,
    render_all,
    render_dir,
    run_checkov,
    schema_errors,
)
from segrec.settings import Settings
from serving.container.build import project_version as image_version
from serving.container.build import serving_ref
from training.container.build import training_ref

Objects = list[dict[str, Any]]
WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")
SERVING = {"app.kubernetes.io/name": "segrec", "app.kubernetes.io/component": "serving"}
OUR_IMAGES = ("segrec-serving", "segrec-training")
# checkov checks we skip on purpose; each skip carries its reason on the object. A new skip
# must be added here knowingly.
JUSTIFIED_SKIPS = {"CKV_K8S_35", "CKV_K8S_40", "CKV_K8S_43"}
# Read by serving/loading.py straight from the environment rather than through Settings.
EXTRA_APP_VARIABLES = {"SEGREC_BUNDLE_DIR"}


@pytest.fixture(scope="module")
def rendered_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return render_all(tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="module")
def rendered(rendered_files: dict[str, Path]) -> dict[str, Objects]:
    return {overlay: load_objects(path.read_text()) for overlay, path in rendered_files.items()}


@pytest.fixture(scope="module")
def capacity() -> dict[str, Any]:
    return json.loads(CAPACITY_FILE.read_text())


# ---- helpers ---------------------------------------------------------------------------
def find(objects: Objects, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"])


def pods(objects: Objects) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) for every workload."""
    return [(o, pod_template(o)) for o in objects if o["kind"] in WORKLOADS]


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def serving_container(objects: Objects) -> dict[str, Any]:
    spec = pod_template(one(objects, "Deployment", "segrec-serving"))["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "serving"]
    return dict(container)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Does a label selector (matchLabels/matchExpressions, or a plain map) match labels?"""
    match = selector.get("matchLabels", {} if "matchExpressions" in selector else selector)
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and value not in values:
            return False
        if operator == "NotIn" and value in values:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def quantity(value: str | int | float) -> float:
    """A CPU (cores) or memory (bytes) quantity as a number."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def config_map(objects: Objects, container: dict[str, Any]) -> dict[str, str]:
    """The data of every ConfigMap the container takes whole (envFrom)."""
    data: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        data |= one(objects, "ConfigMap", name)["data"]
    return data


def project_version() -> str:
    return str(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"])


def describe(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def hpa(objects: Objects) -> dict[str, Any]:
    return one(objects, "HorizontalPodAutoscaler", "segrec-serving")


# ---- the checkers ----------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_the_kubernetes_schemas(
    rendered: dict[str, Objects], overlay: str
) -> None:
    assert rendered[overlay], f"{overlay} rendered nothing"
    assert schema_errors(rendered[overlay]) == []


@pytest.mark.slow
def test_checkov_passes_with_every_skip_justified(rendered_files: dict[str, Path]) -> None:
    result = run_checkov(list(rendered_files.values()))
    assert result.failed == [], "\n".join(result.lines())
    assert result.parsing_errors == []
    assert result.passed > 1000  # it did scan the overlays
    skips = result.skips()
    assert set(skips) <= JUSTIFIED_SKIPS, f"unreviewed skips: {set(skips) - JUSTIFIED_SKIPS}"
    for check, reasons in skips.items():
        for reason in reasons:
            assert len(reason) > 40 and reason != "No comment provided", (check, reason)


# ---- probes, resources, sizes ----------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_readiness_differs_from_liveness(rendered: dict[str, Objects], overlay: str) -> None:
    serving = serving_container(rendered[overlay])
    live, ready = serving["livenessProbe"], serving["readinessProbe"]
    assert live["httpGet"]["path"] == "/livez"
    assert ready["httpGet"]["path"] == "/readyz"
    # Startup on /livez: a pod waiting for its first bundle stays alive and unready
    # (serving retries the load) instead of being killed in a loop.
    assert serving["startupProbe"]["httpGet"]["path"] == "/livez"
    startup = serving["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    for _, template in pods(rendered[overlay]):
        for container in template["spec"]["containers"]:
            if "readinessProbe" in container and "livenessProbe" in container:
                assert container["readinessProbe"] != container["livenessProbe"], container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(
    rendered: dict[str, Objects], overlay: str
) -> None:
    for workload, template in pods(rendered[overlay]):
        for container in containers(template["spec"]):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(kind, {}), f"{where}: no {kind}.{resource}"
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                assert request <= quantity(resources["limits"][resource]), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_is_sized_from_the_capacity_file(
    rendered: dict[str, Objects], overlay: str, capacity: dict[str, Any]
) -> None:
    objects = rendered[overlay]
    resources = serving_container(objects)["resources"]
    assert quantity(resources["limits"]["cpu"]) == pytest.approx(capacity["cpu_limit_cores"])
    assert quantity(resources["requests"]["memory"]) == capacity["memory_request_mib"] * 2**20
    assert quantity(resources["limits"]["memory"]) == capacity["memory_limit_mib"] * 2**20
    request = quantity(resources["requests"]["cpu"])
    if overlay == "dev":  # a laptop: a smaller request, documented in the dev overlay
        assert request <= capacity["cpu_request_cores"]
    else:
        assert request == pytest.approx(capacity["cpu_request_cores"])
    target = hpa(objects)["spec"]["metrics"][0]["resource"]["target"]
    assert target == {
        "type": "Utilization",
        "averageUtilization": capacity["hpa_cpu_target_percent"],
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_and_blas_threads_match_the_cpu_limit(
    rendered: dict[str, Objects], overlay: str, capacity: dict[str, Any]
) -> None:
    serving = serving_container(rendered[overlay])
    env = env_of(serving)
    overrides = json.loads(env["BENTOML_CONFIG_OVERRIDES"]["value"])
    workers = overrides["services"]["Segrec"]["workers"]
    assert workers == capacity["workers_per_pod"]
    # One worker is one Python process of about one core: the limit must give each a core.
    assert workers <= math.ceil(quantity(serving["resources"]["limits"]["cpu"]))
    assert env["OPENBLAS_NUM_THREADS"]["value"] == "1"
    assert env["OMP_NUM_THREADS"]["value"] == "1"


def test_the_committed_capacity_figures_are_consistent(capacity: dict[str, Any]) -> None:
    """The derived figures follow loadtests/capacity.py's rules from the knee."""
    from loadtests.capacity import (
        HPA_FRACTION,
        LIMIT_HEADROOM,
        MEMORY_LIMIT_HEADROOM,
        MEMORY_REQUEST_HEADROOM,
        round_up,
    )

    cores = capacity["cpu_cores_at_knee"]
    assert capacity["cpu_request_cores"] == pytest.approx(round_up(cores, 0.1))
    limit = round_up(capacity["cpu_request_cores"] * LIMIT_HEADROOM, 0.1)
    assert capacity["cpu_limit_cores"] == pytest.approx(limit)
    expected = math.floor(100 * HPA_FRACTION * cores / capacity["cpu_request_cores"])
    assert capacity["hpa_cpu_target_percent"] == expected
    rss = capacity["server_rss_mb"]
    assert capacity["memory_request_mib"] == round_up(rss * MEMORY_REQUEST_HEADROOM, 64)
    assert capacity["memory_limit_mib"] == round_up(rss * MEMORY_LIMIT_HEADROOM, 64)
    per_pod = capacity["per_pod_design_rps"]
    # loadtests/capacity.py writes it rounded to hundredths.
    assert per_pod == pytest.approx(HPA_FRACTION * capacity["knee_rps"], abs=0.005)
    for row in capacity["pods_for"]:
        assert row["pods"] == max(2, math.ceil(row["rps"] / per_pod))


def test_manifests_are_not_stale_against_a_newer_measurement(capacity: dict[str, Any]) -> None:
    """reports/capacity.json (make loadtest PROFILE=step) is not committed; when present
    and different, the manifests are stale: warn (a measurement on a busy machine is not
    yet a decision to resize)."""
    if not MEASURED_CAPACITY_FILE.exists():
        pytest.skip(f"no {MEASURED_CAPACITY_FILE}: run make loadtest PROFILE=step to compare")
    drift = capacity_drift(capacity, json.loads(MEASURED_CAPACITY_FILE.read_text()))
    if drift:
        warnings.warn(
            "k8s manifests are sized from k8s/capacity.json, which differs from "
            f"{MEASURED_CAPACITY_FILE}: " + "; ".join(drift),
            stacklevel=1,
        )


def test_a_different_measurement_is_reported_as_stale(
    tmp_path: Path, capacity: dict[str, Any]
) -> None:
    measured = tmp_path / "capacity.json"
    target = capacity["hpa_cpu_target_percent"]
    measured.write_text(json.dumps(capacity | {"hpa_cpu_target_percent": target - 10}))
    lines = capacity_lines(CAPACITY_FILE, measured)
    assert any("STALE" in line for line in lines)
    assert any(f"hpa_cpu_target_percent: manifests use {target}," in line for line in lines)
    measured.write_text(json.dumps(capacity))
    assert "matches" in capacity_lines(CAPACITY_FILE, measured)[-1]


# ---- rollouts and disruptions ----------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdb_allows_a_rolling_update_at_minimum_replicas(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment", "segrec-serving")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    pdb = one(objects, "PodDisruptionBudget", "segrec-serving")
    assert selects(pdb["spec"]["selector"], pod_template(deployment)["metadata"]["labels"])
    minimum = hpa(objects)["spec"]["minReplicas"]
    if "maxUnavailable" in pdb["spec"]:
        allowed = int(pdb["spec"]["maxUnavailable"])
    else:
        allowed = minimum - int(pdb["spec"]["minAvailable"])
    assert allowed >= 1, f"at {minimum} replicas the PDB allows no eviction: drains hang"
    expected_minimum = {"dev": 1, "staging": 2, "prod": 3}[overlay]
    assert minimum == expected_minimum


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_up_fast_and_down_slowly(rendered: dict[str, Objects], overlay: str) -> None:
    spec = hpa(rendered[overlay])["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "segrec-serving",
    }
    if overlay == "dev":  # one pod: SQLite takes one writer
        assert spec["minReplicas"] == spec["maxReplicas"] == 1
    else:
        assert spec["maxReplicas"] > spec["minReplicas"]
    behavior = spec["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shutdown_drains_before_the_grace_period_ends(
    rendered: dict[str, Objects], overlay: str
) -> None:
    pod = pod_template(one(rendered[overlay], "Deployment", "segrec-serving"))["spec"]
    serving = serving_container(rendered[overlay])
    pre_stop = serving["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The longest request: BentoML's traffic timeout, SEGREC_REQUEST_TIMEOUT_SECONDS (the
    # pod's ConfigMap value, else the setting's default).
    configured = config_map(rendered[overlay], serving).get("SEGREC_REQUEST_TIMEOUT_SECONDS")
    default = Settings.model_fields["request_timeout_seconds"].default
    timeout = float(configured) if configured is not None else default
    assert pod["terminationGracePeriodSeconds"] > pre_stop + timeout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prod_spreads_serving_pods(rendered: dict[str, Objects], overlay: str) -> None:
    pod = pod_template(one(rendered[overlay], "Deployment", "segrec-serving"))["spec"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys
    for constraint in pod["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"], SERVING)
    if overlay == "prod":
        assert "topology.kubernetes.io/zone" in keys
        (term,) = pod["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert selects(term["podAffinityTerm"]["labelSelector"], SERVING)


# ---- wiring: selectors, ports, settings, images ----------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_labels(rendered: dict[str, Objects], overlay: str) -> None:
    objects = rendered[overlay]
    templates = [t["metadata"]["labels"] for _, t in pods(objects)]
    for workload in objects:
        if workload["kind"] in ("Deployment", "StatefulSet"):
            labels = pod_template(workload)["metadata"]["labels"]
            assert selects(workload["spec"]["selector"], labels), describe(workload)
        if workload["kind"] == "StatefulSet":
            governing = one(objects, "Service", workload["spec"]["serviceName"])
            assert governing["spec"]["clusterIP"] == "None"
    for service in find(objects, "Service"):
        matched = [t for t in templates if selects(service["spec"]["selector"], t)]
        assert matched, f"Service {service['metadata']['name']} selects no pod"
    for policy in find(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        assert selector == {} or any(selects(selector, t) for t in templates), (
            f"NetworkPolicy {policy['metadata']['name']} selects no pod"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_agree_across_service_probes_container_and_bentoml(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    serving = serving_container(objects)
    (port,) = serving["ports"]
    number, name = port["containerPort"], port["name"]
    args = serving["args"]
    assert args[0] == "serve"  # the image's entrypoint: bentoml serve <args> <bento>
    assert int(args[args.index("--port") + 1]) == number
    # Nothing else may move BentoML's port: no PORT/BENTOML_PORT, no http.port override.
    assert "BENTOML_PORT" not in env_of(serving) and "PORT" not in env_of(serving)
    overrides = json.loads(env_of(serving)["BENTOML_CONFIG_OVERRIDES"]["value"])
    http_config = overrides.get("services", {}).get("Segrec", {}).get("http", {})
    assert http_config.get("port", number) == number
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert serving[probe]["httpGet"]["port"] in (name, number), probe
    annotations = pod_template(one(objects, "Deployment", "segrec-serving"))["metadata"][
        "annotations"
    ]
    assert int(annotations["prometheus.io/port"]) == number
    assert annotations["prometheus.io/path"] == "/metrics"
    for service_name in ("segrec-serving", "segrec-serving-pods"):
        (service_port,) = one(objects, "Service", service_name)["spec"]["ports"]
        assert service_port["targetPort"] in (name, number)
        assert service_port["port"] == number
    policy = one(objects, "NetworkPolicy", "segrec-serving")
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [number]
    reload_args = [
        c["command"]
        for _, t in pods(objects)
        for c in t["spec"]["containers"]
        if c["name"] == "reload"
    ]
    for command in reload_args:
        assert int(command[command.index("--port") + 1]) == number
        assert command[command.index("--service") + 1] == "segrec-serving-pods"


def _settings_variables() -> set[str]:
    return {f"SEGREC_{name.upper()}" for name in Settings.model_fields}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_key_the_app_reads_is_a_setting(
    rendered: dict[str, Objects], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[overlay]
    known = _settings_variables() | EXTRA_APP_VARIABLES
    (config,) = [
        c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith("segrec-config")
    ]
    unknown = set(config["data"]) - known
    assert not unknown, f"ConfigMap keys segrec does not read: {unknown}"
    for workload, template in pods(objects):
        for container in containers(template["spec"]):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for name, entry in env_of(container).items():
                if name.startswith("SEGREC_"):
                    assert name in known, f"{where}: {name} is not a segrec setting"
                secret = entry.get("valueFrom", {}).get("secretKeyRef")
                if secret and secret["name"] == "segrec-secrets":
                    assert secret["key"] == name, f"{where}: {name} reads key {secret['key']}"
    # And Settings accepts every value (types, enums, ranges), as serving would read them.
    for key, value in config_map(objects, serving_container(objects)).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert str(settings.data_dir).startswith("/var/lib/segrec")
    serving_env = env_of(serving_container(objects))
    assert "SEGREC_ADMIN_TOKEN" in serving_env  # the retrain job's reload needs it
    if settings.online_store == "redis":
        assert "SEGREC_REDIS_URL" in serving_env
        assert overlay != "dev"
    else:
        assert overlay == "dev"  # SQLite only where one pod runs on one node


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_data_and_writable_paths_are_volumes(rendered: dict[str, Objects], overlay: str) -> None:
    """With a read-only root filesystem, everything written must land on a volume."""
    objects = rendered[overlay]
    for workload, template in pods(objects):
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"persistentVolumeClaim": claim}
        for container in containers(template["spec"]):
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
            env = {k: v.get("value") for k, v in env_of(container).items()}
            env |= config_map(objects, container)
            for variable in ("TMPDIR", "HOME", "BENTOML_HOME", "MPLCONFIGDIR", "SEGREC_DATA_DIR"):
                path = env.get(variable)
                if path is None:
                    continue
                assert any(path == mount or path.startswith(mount + "/") for mount in mounts), (
                    f"{workload['metadata']['name']}/{container['name']}: {variable}={path}"
                )
    serving = serving_container(objects)
    spec = pod_template(one(objects, "Deployment", "segrec-serving"))["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    by_path = {m["mountPath"]: volumes[m["name"]] for m in serving["volumeMounts"]}
    assert "emptyDir" in by_path["/tmp"]
    assert "emptyDir" in by_path[env_of(serving)["BENTOML_HOME"]["value"]]
    # The Bento (/home/bentoml/bento) stays the image's, read only.
    assert not any(path.startswith("/home/bentoml") for path in by_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_to_the_project_version(
    rendered: dict[str, Objects], overlay: str
) -> None:
    version = project_version()
    seen = set()
    for _, template in pods(rendered[overlay]):
        for container in containers(template["spec"]):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag, f"untagged image {image}"
            assert tag != "latest"
            base = name.rsplit("/", 1)[-1]
            if base in OUR_IMAGES:
                assert tag == version, f"{image}: tag should be the project version {version}"
                seen.add(base)
            assert container["imagePullPolicy"] == "Always"
    assert seen == set(OUR_IMAGES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_run_the_images_the_make_targets_tag(
    rendered: dict[str, Objects], overlay: str
) -> None:
    """Serving runs what `make image` tags and every job what `make image-training` tags:
    the same repository (in whichever registry the overlay names) and tag."""
    version = image_version()
    built = {
        "Deployment": serving_ref(version),
        "Job": training_ref(version),
        "CronJob": training_ref(version),
    }
    assert training_ref(version) == f"localhost/segrec-training:{project_version()}"
    jobs = 0
    for workload, template in pods(rendered[overlay]):
        if workload["kind"] not in built:
            continue  # Redis: its own image
        repository, _, tag = built[workload["kind"]].rsplit("/", 1)[1].partition(":")
        for container in containers(template["spec"]):
            name, _, image_tag = container["image"].rpartition(":")
            assert (name.rsplit("/", 1)[-1], image_tag) == (repository, tag), (
                f"{describe(workload)}/{container['name']} runs {container['image']}"
            )
            jobs += workload["kind"] != "Deployment"
    assert jobs >= 4  # at least feast apply, materialise and the retrain job's two


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered: dict[str, Objects], overlay: str) -> None:
    for workload, template in pods(rendered[overlay]):
        spec = template["spec"]
        name = workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["serviceAccountName"] != "default", name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
    for account in find(rendered[overlay], "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    (namespace,) = find(rendered[overlay], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ---- network policies ------------------------------------------------------------------
def _ports(rules: list[dict[str, Any]]) -> set[int]:
    return {p["port"] for rule in rules for p in rule.get("ports", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_the_flows(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    deny = one(objects, "NetworkPolicy", "segrec-default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    serving = one(objects, "NetworkPolicy", "segrec-serving")["spec"]
    assert _ports(serving["ingress"]) == {3000}
    assert _ports(serving["egress"]) == {53, 6379}  # DNS and Redis only
    redis_rule = next(r for r in serving["egress"] if _ports([r]) == {6379})
    (peer,) = redis_rule["to"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    dns_rule = next(r for r in serving["egress"] if _ports([r]) == {53})
    assert {p["protocol"] for p in dns_rule["ports"]} == {"UDP", "TCP"}

    jobs = one(objects, "NetworkPolicy", "segrec-jobs")["spec"]
    assert "ingress" not in jobs and _ports(jobs["egress"]) == {53, 6379, 3000}

    # Every pod is selected by a policy that allows it something (beyond default deny).
    allowing = [p for p in find(objects, "NetworkPolicy") if p["spec"]["podSelector"]]
    for workload, template in pods(objects):
        labels = template["metadata"]["labels"]
        assert any(selects(p["spec"]["podSelector"], labels) for p in allowing), describe(workload)
    # Only the jobs that reload may call serving from inside the namespace.
    callers = [
        labels
        for _, t in pods(objects)
        if any(c["name"] == "reload" for c in t["spec"]["containers"])
        for labels in [t["metadata"]["labels"]]
    ]
    from_pods = [
        peer["podSelector"]
        for rule in serving["ingress"]
        for peer in rule["from"]
        if "podSelector" in peer and "namespaceSelector" not in peer
    ]
    assert callers and all(any(selects(s, c) for s in from_pods) for c in callers)

    if overlay != "dev":
        redis = one(objects, "NetworkPolicy", "segrec-redis")["spec"]
        assert _ports(redis["ingress"]) == {6379} and "egress" not in redis
        assert redis["policyTypes"] == ["Ingress", "Egress"]


# ---- jobs ------------------------------------------------------------------------------
def _makefile_command(target: str) -> list[str]:
    """The `segrec` command a make target runs (its recipe's first line)."""
    lines = (PROJECT_ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = lines[start + 1].strip()
    assert recipe.startswith("$(SEGREC) "), recipe
    words = recipe.split()[1:]
    return ["segrec", *[w for w in words if not w.startswith("$(")]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_jobs_run_the_make_targets_commands(rendered: dict[str, Objects], overlay: str) -> None:
    objects = rendered[overlay]

    def steps(name: str) -> list[list[str]]:
        spec = pod_template(one(objects, "CronJob", name))["spec"]
        return [c["command"] for c in spec.get("initContainers", [])]

    assert steps("segrec-retrain") == [_makefile_command("train")]
    materialise = pod_template(one(objects, "CronJob", "segrec-materialise"))["spec"]
    assert [c["command"] for c in materialise["containers"]] == [_makefile_command("features")]
    assert steps("segrec-bootstrap") == [
        _makefile_command(t) for t in ("data", "features", "segments", "train")
    ]
    for name in ("segrec-retrain", "segrec-bootstrap"):
        (last,) = pod_template(one(objects, "CronJob", name))["spec"]["containers"]
        assert last["name"] == "reload"
        assert env_of(last)["SEGREC_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == (
            "SEGREC_ADMIN_TOKEN"
        )


def _daily_windows(schedule: str, seconds: int) -> list[tuple[int, int]]:
    """Minutes of the day a `M H * * *` schedule starts at, with its deadline's end."""
    minute, hour, *rest = schedule.split()
    assert rest == ["*", "*", "*"], f"only daily schedules are checked: {schedule}"
    if hour.startswith("*/"):
        hours = list(range(0, 24, int(hour[2:])))
    else:
        hours = [int(h) for h in hour.split(",")]
    return [(h * 60 + int(minute), h * 60 + int(minute) + seconds // 60) for h in hours]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cronjobs_forbid_overlap_and_have_deadlines_and_history(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    windows = {}
    for cron in find(objects, "CronJob"):
        spec = cron["spec"]
        name = cron["metadata"]["name"]
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["startingDeadlineSeconds"] > 0, name
        assert 1 <= spec["successfulJobsHistoryLimit"] <= 5, name
        assert 1 <= spec["failedJobsHistoryLimit"] <= 5, name
        assert spec["timeZone"] == "Etc/UTC", name
        job = spec["jobTemplate"]["spec"]
        assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] <= 2, name
        assert job["template"]["spec"]["restartPolicy"] == "Never", name
        if not spec.get("suspend"):
            windows[name] = _daily_windows(spec["schedule"], job["activeDeadlineSeconds"])
    assert set(windows) == {"segrec-materialise", "segrec-retrain"}
    # Feast's file registry (and SQLite) take one writer: the jobs' windows never meet.
    day = 24 * 60
    for start_a, end_a in windows["segrec-materialise"]:
        for start_b, end_b in windows["segrec-retrain"]:
            for shift in (-day, 0, day):
                assert end_a <= start_b + shift or end_b + shift <= start_a, (
                    f"materialise {start_a}-{end_a} meets retrain {start_b}-{end_b}"
                )
    (apply_job,) = find(objects, "Job")
    assert apply_job["spec"]["activeDeadlineSeconds"] > 0
    assert apply_job["spec"]["ttlSecondsAfterFinished"] > 0
    assert apply_job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


# ---- the online store: in-cluster Redis, or managed ------------------------------------
@pytest.mark.parametrize("overlay", ["staging", "prod"])
def test_redis_runs_with_auth_persistence_and_limits(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    redis = one(objects, "StatefulSet", "segrec-redis")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    container = pod_template(redis)["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "segrec-redis"
    )
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {
        claim["metadata"]["name"]: args[args.index("--dir") + 1]
    }
    # Redis must hit its own maxmemory before the container's memory limit.
    maxmemory = quantity(
        args[args.index("--maxmemory") + 1].replace("mb", "Mi").replace("gb", "Gi")
    )
    assert maxmemory < quantity(container["resources"]["limits"]["memory"])
    if overlay == "prod":
        assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 20 * 2**30
    assert container["readinessProbe"] != container["livenessProbe"]


def test_dev_runs_without_redis(rendered: dict[str, Objects]) -> None:
    assert not find(rendered["dev"], "StatefulSet")
    claim = one(rendered["dev"], "PersistentVolumeClaim", "segrec-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    for overlay in ("staging", "prod"):
        claim = one(rendered[overlay], "PersistentVolumeClaim", "segrec-data")
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_prod_swaps_to_a_managed_redis_by_config_alone(tmp_path: Path) -> None:
    """The swap k8s/README.md describes: in prod's kustomization, the two Redis component
    lines become the managed-redis component. It renders, validates and leaves no Redis
    pod, and serving and the jobs may reach the managed endpoint."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, tree, ignore=shutil.ignore_patterns("__pycache__"))
    kustomization = tree / "overlays" / "prod" / "kustomization.yaml"
    text = kustomization.read_text()
    swapped = text.replace(
        "  - ../../components/redis\n  - redis-sizing\n", "  - ../../components/managed-redis\n"
    )
    assert swapped != text
    kustomization.write_text(swapped)
    objects = load_objects(render_dir(tree / "overlays" / "prod"))
    assert schema_errors(objects) == []
    assert not find(objects, "StatefulSet")
    assert not [s for s in find(objects, "Service") if "redis" in s["metadata"]["name"]]
    policy = one(objects, "NetworkPolicy", "segrec-managed-redis")["spec"]
    (rule,) = policy["egress"]
    assert "ipBlock" in rule["to"][0]
    for _, template in pods(objects):
        assert selects(policy["podSelector"], template["metadata"]["labels"])


# ---- the reload step -------------------------------------------------------------------
def _reload_module() -> ModuleType:
    path = K8S_DIR / "base" / "jobs" / "reload_serving.py"
    spec = importlib.util.spec_from_file_location("reload_serving", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FakeServing(http.server.BaseHTTPRequestHandler):
    status = 200
    calls: list[tuple[str, str | None]] = []  # noqa: RUF012 (reset per test)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).calls.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"swapped": self.status == 200}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_serving() -> Iterator[tuple[int, type[_FakeServing]]]:
    handler = type("Handler", (_FakeServing,), {"calls": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_reload_calls_every_pod_with_the_token(
    fake_serving: tuple[int, type[_FakeServing]],
) -> None:
    reload = _reload_module()
    port, handler = fake_serving
    failed = reload.reload_all("127.0.0.1", port, "s3cret", timeout=5, attempts=1, pause=0)
    assert failed == 0
    assert handler.calls == [("/admin/reload", "Bearer s3cret")]


def test_reload_fails_when_a_pod_refuses_the_bundle(
    fake_serving: tuple[int, type[_FakeServing]], capsys: pytest.CaptureFixture[str]
) -> None:
    reload = _reload_module()
    port, handler = fake_serving
    handler.status = 409
    assert reload.reload_all("127.0.0.1", port, "s3cret", timeout=5, attempts=1, pause=0) == 1
    assert "409" in capsys.readouterr().out


def test_reload_without_pods_or_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reload = _reload_module()
    assert (
        reload.reload_all("no-such-service.invalid", 3000, "t", timeout=1, attempts=1, pause=0) == 0
    )
    assert "no ready pod" in capsys.readouterr().out
    monkeypatch.delenv("SEGREC_ADMIN_TOKEN", raising=False)
    assert reload.main(["--service", "127.0.0.1"]) == 2
