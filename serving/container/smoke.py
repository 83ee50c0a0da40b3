"""``make image-smoke``: start the built image for real and ask it what a storefront asks.

``buildah from --pull=never`` the image, copy a trained data directory in (where a Pod
mounts its volume), then ``buildah run --isolation chroot --network host`` the image's
entrypoint in the background with the environment the Kubernetes dev overlay passes. Once
``/readyz`` answers: a carousel (``POST /recommend``, personal, i.e. read from the Feast
online store inside the container), an event (``POST /events``, folded into the live
session), the carousel again (the session shows), an admin reload with the token from the
environment, and ``/metrics``. Then SIGTERM to ``bentoml serve`` inside and, after it has
stopped, the files it wrote: only under /tmp, the BentoML home and the data volume, which
is what a read-only root filesystem needs. The container is always removed.

Before starting, the image itself is checked: it runs as a non-root user, and its Python
environment holds exactly the Bento's serving requirements (no training library).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from segrec.service_process import free_port
from segrec.settings import PROJECT_ROOT, Settings
from serving.container.build import project_version, serving_ref
from serving.container.oci import (
    ImageError,
    ImageInfo,
    capture,
    descendants,
    ensure_tools,
    image_exists,
    inspect_image,
    log_tail,
    megabytes,
    process_table,
    process_uid,
    remove_stale_containers,
    say,
    serve_process,
)

# Inside the container, as the Kubernetes serving Deployment mounts them: the data volume
# (PVC segrec-data: bundles, Feast registry and SQLite store, feature snapshots, event
# logs) and an emptyDir for BentoML's home; /tmp is an emptyDir too.
DATA_VOLUME = "/var/lib/segrec"
DATA_DIR = f"{DATA_VOLUME}/data"  # SEGREC_DATA_DIR
BENTOML_HOME = "/var/lib/bentoml"
WRITABLE_ROOTS = ("/tmp", BENTOML_HOME, DATA_VOLUME)
SECRETS = ("SEGREC_ADMIN_TOKEN", "SEGREC_PSEUDONYMISATION_SECRET")
# buildah run writes these itself when it sets the container up.
RUNTIME_FILES = frozenset({"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run/.containerenv"})
MARKER = "/tmp/.segrec-smoke-start"
# Dependency groups of pyproject.toml that must stay out of the serving image (what of
# them the serving requirements need anyway, such as tqdm for Feast, is allowed).
NOT_FOR_SERVING_GROUPS = ("training", "loadtest", "dev")
CONTAINER_PREFIX = "segrec-smoke-"
LOG = PROJECT_ROOT / "build" / "container" / "smoke.log"
CUSTOMERS_TRIED = 20
STOP_TIMEOUT = 30.0


def container_env(admin_token: str, secret: str) -> dict[str, str]:
    """The environment of the serving pod in the Kubernetes dev overlay: k8s/base/config.env
    with the dev overlay's literals, the Deployment's own variables, and the two secrets
    (random here). tests/test_image.py checks this against k8s/."""
    return {
        # k8s/base/config.env, dev literals applied (SQLite store, the data's clock)
        "SEGREC_DATA_DIR": DATA_DIR,
        "SEGREC_REPORTS_DIR": f"{DATA_VOLUME}/reports",
        "SEGREC_ONLINE_STORE": "sqlite",
        "SEGREC_FEATURE_CLOCK": "data",  # the synthetic history ends on 2026-10-31
        "SEGREC_SERVING_TIMEOUT_MS": "50",
        "SEGREC_MAX_REQUEST_BYTES": "1000000",
        "SEGREC_CONFIG_POLL_SECONDS": "5",
        "SEGREC_SIZE": "small",
        # the serving Deployment's env
        "BENTOML_CONFIG_OVERRIDES": '{"services": {"Segrec": {"workers": 1}}}',
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "BENTOML_HOME": BENTOML_HOME,
        "HOME": BENTOML_HOME,
        "TMPDIR": "/tmp",
        "BENTOML_DO_NOT_TRACK": "true",
        # the Secret segrec-secrets (SEGREC_REDIS_URL too, unused with SQLite)
        "SEGREC_ADMIN_TOKEN": admin_token,
        "SEGREC_PSEUDONYMISATION_SECRET": secret,
    }


def run_command(
    container: str, env: Mapping[str, str], entrypoint: Sequence[str], port: int
) -> list[str]:
    """``buildah run`` of the image's entrypoint with the Deployment's arguments
    (``serve --host --port``), on 127.0.0.1:``port`` of the host network."""
    command = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
    for name, value in env.items():
        command += ["-e", f"{name}={value}"]
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    return [*command, container, "--", *entrypoint, *serve]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(text: str) -> set[str]:
    """Distribution names in a requirements file (``name[extra]==1.0 ; marker`` lines)."""
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match and not line.startswith("-"):
            names.add(normalise(match.group(0)))
    return names


def not_for_serving(
    required: set[str], pyproject: Path = PROJECT_ROOT / "pyproject.toml"
) -> set[str]:
    """Training, load-test and dev packages (scikit-learn, scikit-surprise, implicit, ...)
    the serving requirements do not need."""
    groups = tomllib.loads(pyproject.read_text()).get("dependency-groups", {})
    names = set()
    for group in NOT_FOR_SERVING_GROUPS:
        names |= requirement_names("\n".join(str(d) for d in groups.get(group, [])))
    return names - required


def package_problems(
    installed: Iterable[str], required: set[str], forbidden: set[str]
) -> list[str]:
    """Why the installed distributions are not just the serving requirements (none: fine)."""
    names = {normalise(name) for name in installed}
    problems = []
    training = sorted(names & forbidden)
    if training:
        problems.append(f"training or dev packages in the image: {', '.join(training)}")
    extra = sorted(names - required - forbidden)
    if extra:
        problems.append(f"packages not in the Bento's requirements: {', '.join(extra)}")
    return problems


def unexpected_writes(paths: Iterable[str]) -> tuple[list[str], int]:
    """Files written outside the writable places, and the number of Python bytecode caches
    (harmless: Python skips writing them on a read-only root filesystem)."""
    unexpected, bytecode = [], 0
    for path in paths:
        if path in RUNTIME_FILES:
            continue
        if "/__pycache__/" in path:
            bytecode += 1
        elif not any(path == root or path.startswith(root + "/") for root in WRITABLE_ROOTS):
            unexpected.append(path)
    return unexpected, bytecode


def trained_data(settings: Settings) -> Path:
    """The data directory to serve: ``SEGREC_DATA_DIR`` (default ``data/``), trained."""
    data = settings.data_dir.resolve()
    needed = ["feast/registry.db", "feast/online.db", "features/manifest.json"]
    missing = [name for name in needed if not (data / name).is_file()]
    if missing or not any(data.glob("bundles/bundle-*")):
        raise ImageError(
            f"{data} holds no trained data (missing: {', '.join(missing) or 'bundles/'}): run "
            "`make train` first (from nothing: `make data SIZE=tiny && make features segments "
            "train`), or point SEGREC_DATA_DIR at a trained directory"
        )
    return data


def sample_customers(data: Path, count: int = CUSTOMERS_TRIED) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(data / "features" / "customer_features.parquet", columns=["customer_id"])
    return list(dict.fromkeys(table.column(0).to_pylist()))[:count]


def request(
    url: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """(status, JSON body or text) of a POST with a JSON ``body``, or a GET without one."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def smoke(settings: Settings, ready_timeout: float = 300.0) -> None:
    """Run every check; raises :class:`ImageError` with the reason on the first failure."""
    ensure_tools(("buildah", "podman"))
    ref = serving_ref(project_version())
    if not image_exists(ref):
        raise ImageError(f"no image {ref}: run `make image` first")
    info = inspect_image(ref)
    data = trained_data(settings)
    customers = sample_customers(data)
    remove_stale_containers(CONTAINER_PREFIX)
    say(f"image-smoke: {ref} ({megabytes(info.size_bytes)}), data from {data}")
    name = f"{CONTAINER_PREFIX}{os.getpid()}"
    container = capture(["buildah", "from", "--pull=never", "--name", name, ref]).strip()
    report: list[str] = []
    try:
        report += check_image(container, info)
        # The volumes: owned by the image's user, as fsGroup makes them on Kubernetes.
        owner = f"{info.user}:{info.user}"
        in_container(container, "mkdir", "-p", DATA_VOLUME, BENTOML_HOME, user="root")
        in_container(container, "chown", owner, DATA_VOLUME, BENTOML_HOME, user="root")
        with tempfile.TemporaryDirectory(prefix="segrec-smoke-") as scratch:
            stage = Path(scratch) / "data"
            shutil.copytree(data, stage, ignore=_not_served(data))
            capture(["buildah", "copy", "--chown", owner, container, str(stage), DATA_DIR])
        in_container(container, "touch", MARKER)
        report += serve_and_ask(container, info, customers, ready_timeout)
        report += check_writes(container)
    finally:
        capture(["buildah", "rm", container], check=False)
    say("\nimage-smoke passed:")
    for line in report:
        say(f"  {line}")
    say(f"  image:     {ref}, {megabytes(info.size_bytes)}, {len(info.layers)} layers")


def _not_served(root: Path) -> Any:
    """copytree ignore: the BentoML store and benchmark scratch (the image has its Bento)."""

    def ignore(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(directory) == root and n in {"bentoml", "bench"}]

    return ignore


def in_container(container: str, *command: str, user: str | None = None) -> str:
    as_user = ["--user", user] if user else []
    return capture(["buildah", "run", "--isolation", "chroot", *as_user, container, "--", *command])


def check_image(container: str, info: ImageInfo) -> list[str]:
    uid = int(in_container(container, "id", "-u").strip())
    if uid == 0 or info.user in ("", "root", "0"):
        raise ImageError(f"the image runs as root (user {info.user!r}, uid {uid})")
    bento = info.env.get("BENTO_PATH", "/home/bentoml/bento")
    required = requirement_names(
        in_container(container, "cat", f"{bento}/env/python/requirements.txt")
    )
    listing = in_container(
        container,
        "python",
        "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps(sorted({d.metadata['Name'] for d in m.distributions()})))",
    )
    installed = json.loads(listing)
    forbidden = not_for_serving(required)
    problems = package_problems(installed, required, forbidden)
    if problems:
        raise ImageError("; ".join(problems))
    compilers = in_container(container, "sh", "-c", "command -v gcc cc g++ || true").split()
    named = [n for n in ("scikit-learn", "scikit-surprise", "implicit") if n in forbidden]
    return [
        f"user:      {info.user} (uid {uid}), not root",
        f"packages:  {len(installed)}, all from the Bento's serving requirements; none of the "
        f"{len(forbidden)} training/load-test/dev-only ones ({', '.join(named)}, ...)",
        "compilers: "
        + (f"{' '.join(compilers)} (BentoML's default apt step)" if compilers else "none"),
    ]


def serve_and_ask(
    container: str, info: ImageInfo, customers: list[str], ready_timeout: float
) -> list[str]:
    token, secret = secrets.token_hex(16), secrets.token_hex(16)
    env = container_env(token, secret)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = run_command(container, env, info.entrypoint, port)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    say(
        f"starting: buildah run ... {container} -- {shlex.join(command[command.index('--') + 1 :])}"
    )
    say(f"          (log: {LOG.relative_to(PROJECT_ROOT)})")
    load = os.getloadavg()[0]
    with LOG.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            ready = wait_ready(process, url, ready_timeout) - started
            say(f"ready after {ready:.1f} s")
            server = serve_process(process_table(), process.pid)
            if server is None:
                raise ImageError("ready, but no `bentoml serve` process under buildah run")
            uid = process_uid(server)
            if uid == 0:
                raise ImageError("bentoml serve runs as root")
            lines = [
                f"start:     {ready:.1f} s from buildah run to /readyz 200 (load average "
                f"{load:.1f} on {os.cpu_count()} cores); bentoml serve runs as uid {uid}"
            ]
            lines += ask(url, customers, token)
        except BaseException:
            with contextlib.suppress(ImageError):  # the first failure is the one to report
                stop(process)
            raise
        lines.append(stop(process))
    return lines


def wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float) -> float:
    """The monotonic time at which ``/readyz`` first answered 200. Gives up early when the
    service has failed to load twice (it retries every 5 s, for a bundle published later;
    the smoke's data will not change)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ImageError(
                f"the container exited ({process.returncode}) before ready:\n{log_tail(LOG)}"
            )
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic()
        except OSError:
            pass
        reasons = load_failures(log_tail(LOG, 20_000))
        if len(reasons) >= 2:
            raise ImageError(
                f"the service does not load: {reasons[-1]} (a data directory older than the "
                "code? `make features segments train` brings it up to date)"
            )
        time.sleep(0.25)
    raise ImageError(f"not ready within {timeout:.0f} s:\n{log_tail(LOG)}")


def load_failures(log: str) -> list[str]:
    """The reasons the service logged for not being ready (``serving/service.py``)."""
    return [m.strip() for m in re.findall(r"\] not ready: ([^(\n]+)", log)]


def ask(url: str, customers: list[str], token: str) -> list[str]:
    fallbacks: Counter[str] = Counter()
    answer, customer, elapsed = None, "", 0.0
    for customer in customers:
        started = time.monotonic()
        status, body = request(
            f"{url}/recommend", {"customer_id": customer, "k": 5, "placement": "home"}
        )
        elapsed = time.monotonic() - started
        if status != 200 or not isinstance(body, dict) or not body.get("items"):
            raise ImageError(f"POST /recommend for {customer}: {status} {str(body)[:500]}")
        if body.get("fallback") is None:
            answer = body
            break
        fallbacks[str(body["fallback"])] += 1
    if answer is None:
        raise ImageError(
            f"every carousel fell back ({dict(fallbacks)}): the container does not read the "
            "Feast online store in the data directory"
        )
    segment = answer.get("segment") or {}
    lines = [
        f"recommend: {len(answer['items'])} items for {customer} in {elapsed * 1000:.0f} ms, "
        f"segment {segment.get('name')!r}, bundle {answer['bundle_version']}, personal"
        + (f" (after {sum(fallbacks.values())} fallbacks: {dict(fallbacks)})" if fallbacks else "")
    ]

    product = answer["items"][0]["product_id"]
    event = {
        "customer_id": customer,
        "product_id": product,
        "type": "view",
        "session_id": "image-smoke",
    }
    status, body = request(f"{url}/events", {"events": [event]})
    if status != 200 or not isinstance(body, dict) or body.get("accepted") != 1:
        raise ImageError(f"POST /events: {status} {str(body)[:500]}")
    if body.get("session_updated") is not True:
        raise ImageError(
            f"POST /events accepted the event but did not update the live session: "
            f"{body.get('session_error')} (a data directory older than the code? `make features`)"
        )
    status, again = request(f"{url}/recommend", {"customer_id": customer, "k": 5})
    if status != 200 or not isinstance(again, dict) or again.get("live_session") is not True:
        raise ImageError(
            f"the carousel after the event shows no live session: {status} {str(again)[:300]}"
        )
    lines.append(
        "events:    1 view accepted, session updated; the next carousel has live_session true"
    )

    status, body = request(f"{url}/admin/reload", {}, {"Authorization": f"Bearer {token}"})
    if status != 200:
        raise ImageError(f"POST /admin/reload with SEGREC_ADMIN_TOKEN: {status} {str(body)[:300]}")
    lines.append("admin:     /admin/reload 200 with SEGREC_ADMIN_TOKEN from the environment")

    status, metrics = request(f"{url}/metrics")
    wanted = ['segrec_events_total{outcome="accepted"} 1.0', "segrec_bundle_info{"]
    missing = [w for w in wanted if w not in str(metrics)]
    if status != 200 or missing:
        raise ImageError(f"GET /metrics: {status}, missing {missing}")
    series = sum(1 for line in str(metrics).splitlines() if line and not line.startswith("#"))
    lines.append(
        f"metrics:   200, {series} samples, segrec_events_total and segrec_bundle_info present"
    )
    return lines


def stop(process: subprocess.Popen[bytes]) -> str:
    """SIGTERM to ``bentoml serve`` inside (its workers follow it); SIGKILL the whole tree
    after ``STOP_TIMEOUT``. Returns the report line."""
    if process.poll() is not None:
        return f"stop:      the container had exited already ({process.returncode})"
    table = process_table()
    server = serve_process(table, process.pid)
    started = time.monotonic()
    os.kill(server if server is not None else process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        for pid in [*reversed(descendants(process_table(), process.pid)), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
        raise ImageError(
            f"bentoml serve did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM"
        ) from None
    seconds = time.monotonic() - started
    return (
        f"stop:      SIGTERM to bentoml serve, stopped in {seconds:.1f} s (buildah run exit {code})"
    )


def check_writes(container: str) -> list[str]:
    listing = in_container(  # as root: the whole filesystem, unreadable corners included
        container, "find", "/", "-xdev", "-newer", MARKER, "!", "-type", "d", "-print", user="root"
    )
    unexpected, bytecode = unexpected_writes(listing.split())
    if unexpected:
        shown = ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else "")
        raise ImageError(f"the service wrote outside {', '.join(WRITABLE_ROOTS)}: {shown}")
    return [
        f"writes:    only under {', '.join(WRITABLE_ROOTS)} (read-only root ready)"
        + (
            f"; {bytecode} .pyc caches beside the Bento's code, skipped on a read-only root"
            if bytecode
            else ""
        )
    ]
