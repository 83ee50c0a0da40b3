"""What the fault tests share: a real ``bentoml serve`` on its own data directory, plain
HTTP calls that report a refused connection instead of raising, a paced client holding a
set request rate, and reading one figure off ``/metrics``."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from segrec.service_process import RunningService, bentoml_command, running_on_free_port
from segrec.settings import Settings
from tests.conftest import serving_workspace
from training.train.pipeline import TrainingRun

TOKEN = "fault-test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REFUSED = 0  # the status recorded when no HTTP answer came (refused, reset, timed out)


@dataclass
class Answer:
    status: int
    body: Any
    seconds: float
    error: str | None = None  # why there is no HTTP answer (status REFUSED)
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case


def call(
    url: str,
    body: Any = None,
    *,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Answer:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text, status = response.read().decode(), response.status
            headers = {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        text, status = error.read().decode(), error.code
        headers = {k.lower(): v for k, v in error.headers.items()}
    except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out
        return Answer(REFUSED, None, time.perf_counter() - started, f"{type(error).__name__}")
    seconds = time.perf_counter() - started
    try:
        return Answer(status, json.loads(text), seconds, headers=headers)
    except json.JSONDecodeError:
        return Answer(status, text, seconds, headers=headers)


@dataclass
class Server:
    url: str
    settings: Settings  # of the server's own data directory
    bundle_version: str
    running: RunningService
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.running.log_path.read_text(errors="replace")

    def customers(self) -> list[str]:
        segments = pd.read_parquet(self.settings.features_dir / "customer_segments.parquet")
        return list(segments["customer_id"].drop_duplicates())


def workspace(
    trained_small: tuple[Settings, TrainingRun], root: Path, *, with_bundle: bool = True
) -> Settings:
    """A data directory for one server under ``root`` (see ``serving_workspace``)."""
    trained, run = trained_small
    assert run.export is not None
    return serving_workspace(trained, root, Path(run.export.bundle_dir) if with_bundle else None)


@contextmanager
def serve(
    trained_small: tuple[Settings, TrainingRun],
    root: Path,
    env: Mapping[str, str] | None = None,
    *,
    settings: Settings | None = None,
    ready_path: str = "/readyz",
) -> Iterator[Server]:
    """``bentoml serve serving.service:Segrec`` on ``settings``' data directory (default: a
    fresh :func:`workspace` under ``root``), ``env`` added to the usual variables."""
    trained, run = trained_small
    assert run.export is not None
    settings = settings or workspace(trained_small, root)
    full_env = {
        "SEGREC_DATA_DIR": str(settings.data_dir),
        "SEGREC_FEAST_REPO": str(trained.feast_repo),
        "SEGREC_ADMIN_TOKEN": TOKEN,
        "SEGREC_SERVING_TIMEOUT_MS": "500",
        "BENTOML_HOME": str(root / "bentoml_home"),
        **(env or {}),
    }
    with running_on_free_port(
        lambda port: bentoml_command("serving.service:Segrec", port),
        root / "server.log",
        full_env,
        ready_path=ready_path,
    ) as running:
        yield Server(running.url, settings, run.export.bundle_version, running, full_env)


@dataclass
class Sent:
    path: str
    answer: Answer
    at: float  # seconds since the load started


def paced_load(
    base_url: str,
    requests: Callable[[int], tuple[str, Any]],
    rps: float,
    stop: threading.Event,
    *,
    threads: int = 8,
    timeout: float = 30.0,
) -> tuple[list[Sent], Callable[[], None]]:
    """Send ``requests(n)`` (path, body) on one shared clock at ``rps`` from ``threads``
    threads until ``stop`` is set; returns the list the answers land in and a function
    that waits for the threads. A late thread sends at once (it never skips a slot)."""
    sent: list[Sent] = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    started = time.monotonic()

    def worker() -> None:
        while not stop.is_set():
            with lock:
                n = next(counter)
            delay = started + n / rps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop.is_set():
                return
            path, body = requests(n)
            at = time.monotonic() - started
            answer = call(base_url + path, body, timeout=timeout)
            with lock:
                sent.append(Sent(path, answer, at))

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()

    def join() -> None:
        for thread in workers:
            thread.join()

    return sent, join


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}(\{{(.*?)\}})?\s+(\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- a broken online store: degraded answers, then recovery ----------------------------
RECOVERY_S = 30.0  # the bound for personalisation to come back on its own


def recommend(server: Server, customer: str) -> Answer:
    answer = call(f"{server.url}/recommend", {"customer_id": customer, "k": 5})
    assert answer.status == 200, answer
    return answer


def assert_personal(server: Server, customers: list[str]) -> None:
    fallbacks = [recommend(server, c).body["fallback"] for c in customers]
    assert fallbacks == [None] * len(customers)


def assert_degraded(server: Server, customers: list[str], bound_s: float) -> list[Answer]:
    """While the store is broken: 200 with the ``store_unavailable`` fallback and popular
    items within ``bound_s``; ``/segment`` too; ``/readyz`` and ``/livez`` stay 200."""
    answers = [recommend(server, c) for c in customers]
    print("\ndegraded answers in " + ", ".join(f"{a.seconds * 1000:.0f}" for a in answers) + " ms")
    assert [a.body["fallback"] for a in answers] == ["store_unavailable"] * len(answers)
    assert all(len(a.body["items"]) == 5 for a in answers), "popular items, not nothing"
    assert max(a.seconds for a in answers) < bound_s
    segment = call(f"{server.url}/segment", {"customer_id": customers[0]})
    assert segment.status == 200 and segment.body["fallback"] == "store_unavailable"
    assert call(f"{server.url}/readyz", method="GET").status == 200
    assert call(f"{server.url}/livez", method="GET").status == 200
    return answers


def recovery_seconds(server: Server, customer: str, since: float) -> float:
    """Seconds from ``since`` until ``customer`` gets a personal answer again."""
    while time.monotonic() < since + RECOVERY_S:
        if recommend(server, customer).body["fallback"] is None:
            return time.monotonic() - since
        time.sleep(0.2)
    raise AssertionError(f"not personal again within {RECOVERY_S:.0f} s of the store's return")


def metrics_text(server: Server) -> str:
    answer = call(f"{server.url}/metrics", method="GET")
    assert answer.status == 200
    return str(answer.body)
