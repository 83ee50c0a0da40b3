"""``make image-training-smoke``: the Kubernetes jobs' containers, run in the training image.

Everything a job container is comes from the dev overlay as ``kubectl kustomize`` renders
it, nothing is written here twice: for the ``feast apply`` Job, then the materialise
CronJob, then the retrain CronJob (its ``train`` init container, then ``reload``), in that
order (a deploy, then the schedules), each container's ``command``/``args``, environment
(ConfigMap values and literals; Secrets get random test values), user (the pod's
``runAsUser``/``runAsGroup``) and volumes become one ``buildah run --isolation chroot``:

- the data PVC (``/var/lib/segrec``) is a copy of ``SEGREC_DATA_DIR`` (default ``data/``:
  clean data and segments; without its BentoML store), owned by the pods' uid as
  ``fsGroup`` makes it, bind-mounted into every job;
- each ``emptyDir`` (``/tmp``) a fresh directory per pod, bind-mounted;
- each ConfigMap volume (the reload script) the rendered ConfigMap's files, read-only.

Then: every container exited 0; the retrain produced a new bundle (manifest, BentoML
model), and every file the jobs wrote on the volume belongs to that non-root uid; the
container's own filesystem is unchanged (nothing written outside the volumes, which is
what ``readOnlyRootFilesystem: true`` needs: buildah cannot mount the root read-only
itself). Before that, the image is checked: a numeric non-root user equal to the
manifests', the packages of ``build/requirements-training.txt`` and nothing else, no
compiler. The reload step finds no serving pod here (no cluster) and says so; that it runs
at all shows the rendered script and ``python`` work in this image.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k8s.validate import ManifestError, load_objects, render
from segrec.settings import PROJECT_ROOT, Settings
from serving.container.build import project_version
from serving.container.oci import (
    ImageError,
    ImageInfo,
    capture,
    ensure_tools,
    image_exists,
    inspect_image,
    log_tail,
    megabytes,
    remove_stale_containers,
    say,
)
from serving.container.smoke import RUNTIME_FILES, in_container, normalise, requirement_names
from training.container import APP_DIR, REQUIREMENTS_IN_IMAGE, TRAINING_IMAGE
from training.container.build import training_ref

OVERLAY = "dev"
# The job pods, in the order a deploy and the schedules run them.
JOBS = (
    ("Job", "segrec-feast-apply"),
    ("CronJob", "segrec-materialise"),
    ("CronJob", "segrec-retrain"),
)
# Values for the Secret keys the jobs reference (random per run: nothing real here).
SECRET_KEYS = ("SEGREC_ADMIN_TOKEN", "SEGREC_PSEUDONYMISATION_SECRET")
TEST_REDIS_URL = "127.0.0.1:6379"  # the dev overlay's store is SQLite: never dialled
# Dependency groups of pyproject.toml that must stay out of the training image.
NOT_IN_IMAGE_GROUPS = ("loadtest", "dev")
MARKER = "/tmp/.segrec-training-smoke-start"
CONTAINER_PREFIX = "segrec-training-smoke-"
LOG = PROJECT_ROOT / "build" / "container" / "training-smoke.log"


@dataclass(frozen=True)
class Volume:
    """A pod volume: its kind (``persistentVolumeClaim``, ``emptyDir``, ``configMap``)
    and, for a ConfigMap, the files it holds."""

    name: str
    kind: str
    files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class JobContainer:
    """One container of a job pod, as rendered."""

    workload: str  # "CronJob/segrec-retrain"
    name: str
    image: str
    command: tuple[str, ...]  # command + args
    env: tuple[tuple[str, str], ...]
    mounts: tuple[tuple[str, Volume, bool], ...]  # (mount path, volume, read only)
    user: tuple[int, int]  # (uid, gid)

    @property
    def label(self) -> str:
        return f"{self.workload}/{self.name}"


def job_containers(
    objects: Sequence[dict[str, Any]], secret_values: Mapping[str, str]
) -> list[JobContainer]:
    """The containers of :data:`JOBS` in run order: init containers, then the others."""
    found = []
    for kind, name in JOBS:
        matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        if len(matches) != 1:
            raise ImageError(f"the {OVERLAY} overlay renders {len(matches)} {kind}/{name}")
        spec = matches[0]["spec"]
        if kind == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pod = spec["template"]["spec"]
        volumes = {v["name"]: pod_volume(objects, v) for v in pod.get("volumes", [])}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            if "runAsUser" not in context:
                raise ImageError(f"{kind}/{name}/{container['name']}: no runAsUser")
            if not container.get("command"):
                # Every job names its program; the image's entrypoint is only a default.
                raise ImageError(f"{kind}/{name}/{container['name']}: no command")
            found.append(
                JobContainer(
                    workload=f"{kind}/{name}",
                    name=container["name"],
                    image=container["image"],
                    command=(*container.get("command", []), *container.get("args", [])),
                    env=tuple(container_env(objects, container, secret_values).items()),
                    mounts=tuple(
                        (m["mountPath"], volumes[m["name"]], bool(m.get("readOnly", False)))
                        for m in container.get("volumeMounts", [])
                    ),
                    user=(int(context["runAsUser"]), int(context.get("runAsGroup", 0))),
                )
            )
    return found


def pod_volume(objects: Sequence[dict[str, Any]], volume: dict[str, Any]) -> Volume:
    name = volume["name"]
    if "configMap" in volume:
        data = config_map(objects, volume["configMap"]["name"])
        return Volume(name, "configMap", tuple(sorted(data.items())))
    for kind in ("persistentVolumeClaim", "emptyDir"):
        if kind in volume:
            return Volume(name, kind)
    raise ImageError(f"volume {name}: only PVCs, emptyDirs and ConfigMaps are translated")


def config_map(objects: Sequence[dict[str, Any]], name: str) -> dict[str, str]:
    (found,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    return {k: str(v) for k, v in found.get("data", {}).items()}


def container_env(
    objects: Sequence[dict[str, Any]], container: dict[str, Any], secret_values: Mapping[str, str]
) -> dict[str, str]:
    """ConfigMaps taken whole (``envFrom``), then ``env``: literals, ConfigMap keys, and
    Secret keys from ``secret_values``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" not in source:
            raise ImageError(f"{container['name']}: envFrom other than a ConfigMap")
        env |= config_map(objects, source["configMapRef"]["name"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        reference = entry.get("valueFrom", {})
        if "secretKeyRef" in reference:
            key = reference["secretKeyRef"]["key"]
            if key not in secret_values:
                raise ImageError(f"{container['name']}: no test value for Secret key {key}")
            env[entry["name"]] = secret_values[key]
        elif "configMapKeyRef" in reference:
            ref = reference["configMapKeyRef"]
            env[entry["name"]] = config_map(objects, ref["name"])[ref["key"]]
        else:
            raise ImageError(f"{container['name']}: env {entry['name']} is not translated")
    return env


def random_secrets() -> dict[str, str]:
    return {
        **{key: secrets.token_hex(16) for key in SECRET_KEYS},
        "SEGREC_REDIS_URL": TEST_REDIS_URL,
    }


def run_command(container_id: str, job: JobContainer, binds: Mapping[str, Path]) -> list[str]:
    """``buildah run`` of the job container's command as its user, with its environment and
    ``binds`` (mount path -> host directory) in place of its volumes."""
    command = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
    command += ["--user", f"{job.user[0]}:{job.user[1]}"]
    for path, _volume, read_only in job.mounts:
        command += ["--volume", f"{binds[path]}:{path}" + (":ro" if read_only else "")]
    for name, value in job.env:
        command += ["-e", f"{name}={value}"]
    return [*command, container_id, "--", *job.command]


def expected_image(job: JobContainer, version: str) -> str | None:
    """Why ``job`` would not run the image ``make image-training`` tags (None: it would)."""
    name, _, tag = job.image.rpartition(":")
    wanted = TRAINING_IMAGE.rsplit("/", 1)[1]
    if name.rsplit("/", 1)[-1] != wanted or tag != version:
        return f"{job.label} runs {job.image}, not {wanted}:{version}"
    return None


def writes_outside(paths: Iterable[str], roots: Iterable[str]) -> list[str]:
    """Files written in the container's own filesystem outside ``roots`` (buildah's own
    runtime files aside)."""
    allowed = tuple(roots)
    return [
        path
        for path in paths
        if path not in RUNTIME_FILES
        and not any(path == root or path.startswith(root.rstrip("/") + "/") for root in allowed)
    ]


def package_problems(
    installed: Iterable[str], required: set[str], forbidden: set[str], project: str = "segrec"
) -> list[str]:
    """Why the image's distributions are not exactly the exported requirements plus the
    project (none: fine)."""
    names = {normalise(name) for name in installed}
    problems = []
    missing = sorted(required - names)
    if missing:
        problems.append(f"required but not installed: {', '.join(missing)}")
    unwanted = sorted(names & (forbidden - required))
    if unwanted:
        problems.append(f"load-test or dev packages in the image: {', '.join(unwanted)}")
    extra = sorted(names - required - forbidden - {project})
    if extra:
        problems.append(f"packages not in the requirements: {', '.join(extra)}")
    return problems


def applicable_requirements(text: str, environment: Mapping[str, str]) -> set[str]:
    """Distribution names of a requirements file (hashed, with ``\\`` continuations) whose
    markers hold in ``environment`` (the image's Python: ``packaging``'s marker variables);
    ``cffi ; implementation_name == 'pypy'`` is left out on CPython."""
    from packaging.markers import Marker

    names = set()
    for line in text.replace("\\\n", " ").splitlines():
        requirement, _, marker = line.split("#", 1)[0].partition(";")
        marker = re.sub(r"\s--hash=\S+", "", marker).strip()
        if not marker or Marker(marker).evaluate(dict(environment)):
            names |= requirement_names(requirement)
    return names


def not_in_image(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> set[str]:
    groups = tomllib.loads(pyproject.read_text()).get("dependency-groups", {})
    names: set[str] = set()
    for group in NOT_IN_IMAGE_GROUPS:
        names |= requirement_names("\n".join(str(d) for d in groups.get(group, [])))
    return names


def job_data(settings: Settings) -> Path:
    """The data directory the jobs start from: clean data and segments (``make data``,
    ``make segments``), as on a volume the bootstrap job has filled."""
    data = settings.data_dir.resolve()
    needed = ["clean/manifest.json", "features/customer_segments.parquet"]
    missing = [name for name in needed if not (data / name).is_file()]
    if missing:
        raise ImageError(
            f"{data} lacks {', '.join(missing)}: run `make data SIZE=tiny && make features "
            "segments` first, or point SEGREC_DATA_DIR at such a directory"
        )
    return data


def smoke(settings: Settings) -> None:
    """Run every check; raises :class:`ImageError` with the reason on the first failure."""
    started = time.monotonic()
    ensure_tools(("buildah", "podman"))
    version = project_version()
    ref = training_ref(version)
    if not image_exists(ref):
        raise ImageError(f"no image {ref}: run `make image-training` first")
    info = inspect_image(ref)
    data = job_data(settings)
    try:
        rendered = render(OVERLAY)
    except ManifestError as error:  # kubectl missing, or the overlay does not render
        raise ImageError(str(error)) from error
    jobs = job_containers(load_objects(rendered), random_secrets())
    wrong = [reason for job in jobs if (reason := expected_image(job, version))]
    if wrong:
        raise ImageError("; ".join(wrong))
    remove_stale_containers(CONTAINER_PREFIX)
    say(f"image-training-smoke: {ref} ({megabytes(info.size_bytes)}), data from {data}")
    name = f"{CONTAINER_PREFIX}{os.getpid()}"
    container = capture(["buildah", "from", "--pull=never", "--name", name, ref]).strip()
    report: list[str] = []
    try:
        report += check_image(container, info, jobs)
        with tempfile.TemporaryDirectory(prefix="segrec-training-smoke-") as scratch:
            report += run_jobs(container, jobs, data, Path(scratch))
        report += check_writes(container, jobs)
    finally:
        capture(["buildah", "rm", container], check=False)
    say("\nimage-training-smoke passed:")
    for line in report:
        say(f"  {line}")
    say(f"  image:     {ref}, {megabytes(info.size_bytes)}, {len(info.layers)} layers")
    say(f"  time:      {time.monotonic() - started:.0f} s in all")


def check_image(container: str, info: ImageInfo, jobs: Sequence[JobContainer]) -> list[str]:
    uid, _, gid = info.user.partition(":")
    users = {job.user for job in jobs}
    if not uid.isdigit() or int(uid) == 0:
        raise ImageError(f"the image's user is {info.user!r}: want a numeric non-root uid")
    if users != {(int(uid), int(gid or uid))}:
        raise ImageError(f"the image runs as {info.user}, the job pods as {sorted(users)}")
    # Asked twice if need be: once here buildah 1.28's chroot run lost this short command's
    # output (exit 0, nothing printed).
    running = in_container(container, "id", "-u").strip() or in_container(container, "id", "-u")
    running = running.strip()
    if running != uid:
        raise ImageError(f"a command in the image runs as uid {running}, not {uid}")
    listing = in_container(
        container,
        "python",
        "-c",
        "import importlib.metadata as m, json; from packaging.markers import default_environment; "
        "print(json.dumps([sorted({d.metadata['Name'] for d in m.distributions()}), "
        "default_environment()]))",
    )
    installed, environment = json.loads(listing)
    requirements = in_container(container, "cat", REQUIREMENTS_IN_IMAGE)
    required = applicable_requirements(requirements, environment)
    forbidden = not_in_image()
    problems = package_problems(installed, required, forbidden)
    if problems:
        raise ImageError("; ".join(problems))
    compilers = in_container(container, "sh", "-c", "command -v gcc cc g++ || true").split()
    if compilers:
        raise ImageError(f"compilers in the image: {', '.join(compilers)}")
    return [
        f"user:      {info.user} (uid {running}), not root, the job pods' runAsUser",
        f"packages:  {len(installed)}: build/requirements-training.txt and segrec (editable, "
        f"{APP_DIR}); none of the {len(forbidden - required)} load-test/dev-only ones",
        "compilers: none",
        f"entrypoint: {' '.join(info.entrypoint)}",
    ]


def run_jobs(container: str, jobs: Sequence[JobContainer], data: Path, scratch: Path) -> list[str]:
    """Each job container in turn, on a copy of ``data`` as the data volume."""
    uid, gid = jobs[0].user
    claim = scratch / "pvc"
    shutil.copytree(data, claim / "data", ignore=_not_copied(data), symlinks=True)
    _chown_tree(claim, uid, gid)  # fsGroup's doing on a cluster
    bundles_before = set(_bundles(claim / "data"))
    in_container(container, "touch", MARKER, user="root")
    time.sleep(1.1)  # file times after the marker's, even at one-second resolution
    start = time.time()
    LOG.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    with LOG.open("w") as log:
        for job in jobs:
            binds = volume_binds(job, scratch, claim, uid, gid)
            command = run_command(container, job, binds)
            say(f"{job.label}: {shlex.join(job.command)[:160]}")
            log.write(f"\n==== {job.label}: {shlex.join(job.command)}\n")
            log.flush()
            began = time.monotonic()
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
            seconds = time.monotonic() - began
            if result.returncode != 0:
                failure = f"{job.label} exited {result.returncode} after {seconds:.0f} s"
                raise ImageError(f"{failure}:\n{log_tail(LOG)}")
            lines.append(f"ran:       {job.label} in {seconds:.0f} s, exit 0")
    lines += check_outputs(claim / "data", bundles_before, start, uid)
    return lines


def volume_binds(
    job: JobContainer, scratch: Path, claim: Path, uid: int, gid: int
) -> dict[str, Path]:
    """Host directories for the container's volumes: the claim (shared by every pod),
    one directory per pod and emptyDir, ConfigMap files."""
    binds = {}
    pod_dir = scratch / re.sub(r"\W+", "-", job.workload)
    for path, volume, _ in job.mounts:
        if volume.kind == "persistentVolumeClaim":
            binds[path] = claim
            continue
        directory = pod_dir / volume.name
        if not directory.exists():
            directory.mkdir(parents=True)
            for file_name, content in volume.files:
                (directory / file_name).write_text(content)
                (directory / file_name).chmod(0o444)
            if volume.kind == "emptyDir":
                os.chown(directory, uid, gid)
        binds[path] = directory
    return binds


def check_outputs(data: Path, bundles_before: set[str], start: float, uid: int) -> list[str]:
    new = sorted(set(_bundles(data)) - bundles_before)
    if not new:
        raise ImageError(f"the retrain job published no new bundle in {data / 'bundles'}")
    bundle = data / "bundles" / new[-1]
    if not (bundle / "manifest.json").is_file():
        raise ImageError(f"{bundle} has no manifest.json")
    models = list((data / "bentoml" / "models").glob("*/*/model.yaml"))
    online = data / "feast" / "online.db"
    if not online.is_file() or online.stat().st_mtime < start:
        raise ImageError(f"{online} was not written by the materialise job")
    written = [p for p in data.rglob("*") if p.lstat().st_mtime >= start]
    foreign = [p for p in written if p.lstat().st_uid != uid]
    if foreign:
        shown = ", ".join(str(p.relative_to(data)) for p in foreign[:5])
        raise ImageError(f"files on the volume not owned by uid {uid}: {shown}")
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    return [
        f"bundle:    {new[-1]} ({megabytes(size)}, manifest.json), {len(models)} BentoML "
        "model(s) in the volume's store; online store written",
        f"volume:    {len(written)} files written, all owned by uid {uid}",
    ]


def check_writes(container: str, jobs: Sequence[JobContainer]) -> list[str]:
    listing = in_container(  # as root: the whole filesystem, unreadable corners included
        container, "find", "/", "-xdev", "-newer", MARKER, "!", "-type", "d", "-print", user="root"
    )
    mounts = sorted({path for job in jobs for path, _, _ in job.mounts})
    unexpected = writes_outside(listing.split(), mounts)
    if unexpected:
        shown = ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else "")
        raise ImageError(f"the jobs wrote outside their volumes ({', '.join(mounts)}): {shown}")
    return [f"writes:    none outside the volumes {', '.join(mounts)} (read-only root ready)"]


def _bundles(data: Path) -> list[str]:
    return [p.name for p in (data / "bundles").glob("bundle-*") if p.is_dir()]


def _not_copied(root: Path) -> Any:
    """copytree ignore: the BentoML store (the jobs start their own) and scratch."""

    def ignore(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(directory) == root and n in {"bentoml", "bench"}]

    return ignore


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for path in root.rglob("*"):
        os.chown(path, uid, gid, follow_symlinks=False)
