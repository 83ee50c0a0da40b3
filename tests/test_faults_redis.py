"""The Redis online store failing under a real ``bentoml serve``: a real redis-server
killed and started again, then frozen (SIGSTOP: connections open, nothing answers). Every
request still answers 200 with the ``store_unavailable`` fallback within the budget,
``/readyz`` stays up, and personalisation comes back on its own once Redis does."""

from __future__ import annotations

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
from tests.fault_scenarios import (
    Server,
    assert_degraded,
    assert_personal,
    call,
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


def test_redis_killed_then_restarted(redis_server: tuple[Server, Redis]) -> None:
    server, redis = redis_server
    customers = server.customers()[:6]
    assert_personal(server, customers)
    redis.crash()
    assert_degraded(server, customers, ANSWER_BOUND_S)
    view = {"customer_id": customers[0], "product_id": "P000001", "type": "view"}
    events = call(f"{server.url}/events", {"events": [view]})
    # Durable in the event log whatever the store does; only the live session waits.
    assert events.status == 200 and events.body["accepted"] == 1, events
    assert events.body["session_updated"] is False
    redis.start()
    seconds = recovery_seconds(server, customers[1], time.monotonic())
    print(f"personal again {seconds:.1f} s after Redis restarted (budget {BUDGET_MS} ms)")
    assert_personal(server, customers[1:])


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
