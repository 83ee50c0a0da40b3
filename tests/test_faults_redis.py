"""Redis as the state pods share, and failing, under real ``bentoml serve`` processes.

Two pods (two servers, each on its own data directory) share one real redis-server: an
erasure through one pod holds on the other (the suppression list lives in Redis, not in a
file), and the same event sent to both is counted once (event-id claims in Redis).

Then Redis killed and started again, then frozen (SIGSTOP: connections open, nothing
answers). Every recommendation still answers 200 with the ``store_unavailable`` fallback
within the budget, ``/readyz`` stays up, and personalisation comes back on its own once
Redis does. ``/events`` and ``/admin/erase`` fail closed meanwhile: 503 with Retry-After,
nothing stored, since the suppression list cannot be checked."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from segrec.feature_store import open_store
from segrec.service_process import free_port
from segrec.settings import Settings
from segrec.shared_state import EVENT_KEY_PREFIX
from tests.fault_scenarios import (
    AUTH,
    Server,
    assert_degraded,
    assert_personal,
    call,
    recommend,
    recovery_seconds,
    serve,
    workspace,
)
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUDGET_MS = 300
# Generous for a shared 2-core machine; the point is "the budget, not the store's own
# timeouts" (seconds for a refused connection's retries, forever for a frozen Redis).
ANSWER_BOUND_S = BUDGET_MS / 1000 + 1.5
CUSTOMERS = 20  # loaded online; the tests use these


class Redis:
    """A real redis-server on a fixed port, so it can be killed and started again there."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (make setup)")
        # No automatic snapshots: crash() saves once, and a restart loads exactly that.
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), *options, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self.command("PING") != b"+PONG":
            assert time.monotonic() < deadline and self.process.poll() is None, "no redis"
            time.sleep(0.05)

    def keys(self, pattern: str) -> list[bytes]:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            return list(client.keys(pattern))
        finally:
            client.close()

    def command(self, name: str) -> bytes:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall(name.encode() + b"\r\n")
                return conn.recv(64).strip()
        except OSError:
            return b""

    def crash(self) -> None:
        """Snapshot the data (a restart finds it, as with a persistent Redis), then
        SIGKILL: connections drop and the port refuses."""
        assert self.command("SAVE") == b"+OK"
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)


def _load_online(settings: Settings, customers: list[str]) -> None:
    """Write the newest feature rows of ``customers`` into Redis, view by view, as the
    materialisation job does for everyone (all 5,000 take half a minute here; the tests
    need a few). The registry is the copy the workspace made: definitions only."""
    store = open_store(settings)
    for view in store.list_feature_views():
        path = getattr(view.batch_source, "path", None)
        if view.stream_source is not None or view.entities != ["customer"]:
            continue
        if not path or not Path(path).exists():  # not written by this training run
            continue
        stamp = view.batch_source.timestamp_field
        frame = pd.read_parquet(path, filters=[("customer_id", "in", customers)])
        newest = frame.sort_values(stamp).groupby("customer_id").tail(1)
        columns = ["customer_id", stamp, *(f.name for f in view.features)]
        store.write_to_online_store(view.name, newest[columns])


@pytest.fixture(scope="module")
def redis_server(
    trained_small: tuple[Settings, TrainingRun], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Redis]]:
    root = tmp_path_factory.mktemp("faults-redis")
    redis = Redis(root)
    redis.start()
    try:
        settings = workspace(trained_small, root).model_copy(
            update={"online_store": "redis", "redis_url": redis.address}
        )
        segments = pd.read_parquet(settings.features_dir / "customer_segments.parquet")
        _load_online(settings, list(segments["customer_id"].drop_duplicates()[:CUSTOMERS]))
        env = {
            "SEGREC_ONLINE_STORE": "redis",
            "SEGREC_REDIS_URL": redis.address,
            "SEGREC_SERVING_TIMEOUT_MS": str(BUDGET_MS),
        }
        with serve(trained_small, root, env, settings=settings) as server:
            yield server, redis
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def pod_b(
    redis_server: tuple[Server, Redis],
    trained_small: tuple[Settings, TrainingRun],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """A second pod: its own data directory (no shared suppression file, event log or
    SQLite), the same Redis."""
    first, redis = redis_server
    root = tmp_path_factory.mktemp("faults-redis-pod-b")
    settings = workspace(trained_small, root).model_copy(
        update={"online_store": "redis", "redis_url": redis.address}
    )
    shared = ("SEGREC_ONLINE_STORE", "SEGREC_REDIS_URL", "SEGREC_SERVING_TIMEOUT_MS")
    env = {name: first.env[name] for name in shared}
    started = time.monotonic()
    with serve(trained_small, root, env, settings=settings) as server:
        print(f"\npod B ready in {time.monotonic() - started:.0f} s")
        assert server.env["SEGREC_DATA_DIR"] != first.env["SEGREC_DATA_DIR"]
        yield server


def _view(customer: str, **extra: str) -> dict[str, str]:
    ts = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    return {"customer_id": customer, "product_id": "P000001", "type": "view", "ts": ts, **extra}


def _logged(server: Server, needle: str) -> int:
    """Lines of the server's event log naming ``needle``."""
    logs = server.settings.event_log_dir
    files = list(logs.rglob("*.jsonl")) if logs.exists() else []
    return sum(line.count(needle) for path in files for line in path.read_text().splitlines())


def test_an_erasure_through_one_pod_holds_on_another(
    redis_server: tuple[Server, Redis], pod_b: Server
) -> None:
    pod_a, _ = redis_server
    customer = pod_a.customers()[7]  # loaded online, used by no other test here
    before = call(f"{pod_b.url}/events", {"events": [_view(customer)]})
    assert before.status == 200 and before.body["accepted"] == 1, before

    erased = call(f"{pod_a.url}/admin/erase", {"customer_id": customer}, headers=AUTH)
    assert erased.status == 200 and erased.body["erased"], erased

    after = call(f"{pod_b.url}/events", {"events": [_view(customer, session_id="s2")]})
    assert after.status == 200 and after.body["accepted"] == 0, after
    assert after.body["rejected"] == [
        {"index": 0, "field": "customer_id", "reason": "customer erased: events refused"}
    ]
    # Pod B learnt it from Redis: its own data directory has no suppression file.
    assert not pod_b.settings.suppression_file.exists()
    assert customer in pod_a.settings.suppression_file.read_text()
    assert recommend(pod_b, customer).body["fallback"] == "unknown_customer"


def test_the_same_event_sent_to_two_pods_is_counted_once(
    redis_server: tuple[Server, Redis], pod_b: Server
) -> None:
    pod_a, redis = redis_server
    customer = pod_a.customers()[6]
    event_id = "order-4711-line-1"
    first = call(f"{pod_a.url}/events", {"events": [_view(customer, event_id=event_id)]})
    again = call(f"{pod_b.url}/events", {"events": [_view(customer, event_id=event_id)]})
    assert (first.body["accepted"], first.body["duplicates"]) == (1, 0), first
    assert (again.body["accepted"], again.body["duplicates"]) == (0, 1), again
    # Without an event id, the id derived from the content is shared the same way.
    derived = _view(customer, session_id="s-derived")
    answers = [call(f"{pod.url}/events", {"events": [derived]}) for pod in (pod_b, pod_a)]
    assert [(a.body["accepted"], a.body["duplicates"]) for a in answers] == [(1, 0), (0, 1)]
    assert _logged(pod_a, event_id) == 1 and _logged(pod_b, event_id) == 0
    assert _logged(pod_a, "s-derived") == 0 and _logged(pod_b, "s-derived") == 1
    # Claims are keyed hashes in Redis: the client's id is in no key.
    keys = redis.keys(EVENT_KEY_PREFIX + "*")
    assert keys and not [k for k in keys if b"4711" in k]


def test_redis_killed_then_restarted(redis_server: tuple[Server, Redis]) -> None:
    server, redis = redis_server
    customers = server.customers()[:6]
    assert_personal(server, customers)
    redis.crash()
    assert_degraded(server, customers, ANSWER_BOUND_S)
    view = {"customer_id": customers[0], "product_id": "P000001", "type": "view"}
    # The suppression list cannot be checked: fail closed, nothing stored, retry later.
    logged = _logged(server, customers[0])
    events = call(f"{server.url}/events", {"events": [view]})
    assert events.status == 503 and events.body["field"] == "customer_id", events
    assert events.headers["retry-after"] == "1"
    assert _logged(server, customers[0]) == logged
    erase = call(f"{server.url}/admin/erase", {"customer_id": customers[0]}, headers=AUTH)
    assert erase.status == 503 and erase.headers["retry-after"] == "1", erase
    assert "nothing erased" in erase.body["error"]
    redis.start()
    seconds = recovery_seconds(server, customers[1], time.monotonic())
    print(f"personal again {seconds:.1f} s after Redis restarted (budget {BUDGET_MS} ms)")
    assert_personal(server, customers[1:])
    events = call(f"{server.url}/events", {"events": [view]})
    assert events.status == 200 and events.body["accepted"] == 1, events
    assert events.body["session_updated"] is True


def test_redis_frozen_is_slow_not_down(redis_server: tuple[Server, Redis]) -> None:
    server, redis = redis_server
    customers = server.customers()[8:CUSTOMERS]
    assert_personal(server, customers[:2])
    redis.signal(signal.SIGSTOP)
    try:
        # More requests than reader threads: once all are stuck, answers come at once.
        assert_degraded(server, customers, ANSWER_BOUND_S)
    finally:
        redis.signal(signal.SIGCONT)
    seconds = recovery_seconds(server, customers[0], time.monotonic())
    print(f"personal again {seconds:.1f} s after Redis resumed (budget {BUDGET_MS} ms)")
    assert_personal(server, customers)
