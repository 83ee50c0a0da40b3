"""Start ``bentoml serve`` as a child process, wait until it is ready, stop it cleanly.

For everything that needs a real server for a while: the demo, the HTTP tests, the
latency benchmark. The server's output goes to a log file (a pipe nobody reads fills up
and blocks the server); a server that dies or is not ready in time raises with the tail
of that log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segrec.settings import PROJECT_ROOT

READY_PATH = "/readyz"


class ServiceStartError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log."""


class PortInUseError(ServiceStartError):
    """The server exited at start because its port was taken meanwhile."""


@dataclass(frozen=True)
class RunningService:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bentoml_command(target: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """``bentoml serve <target>`` on 127.0.0.1:``port`` with this interpreter's bentoml."""
    bentoml = Path(sys.executable).parent / "bentoml"
    return [str(bentoml), "serve", target, "--host", "127.0.0.1", "--port", str(port), *extra]


@contextmanager
def running_service(
    command: Sequence[str],
    url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    ready_timeout: float = 120.0,
    stop_timeout: float = 30.0,
    cwd: Path = PROJECT_ROOT,
    ready_path: str = READY_PATH,
    core: int | None = None,
) -> Iterator[RunningService]:
    """Run ``command`` (its own process group, pinned to CPU ``core`` when given), yield
    once ``url + ready_path`` answers 200, then SIGTERM the group (SIGKILL after
    ``stop_timeout``), whatever happened in the block."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pin_to_core(core),  # in the child before exec: its whole tree inherits it
        )
        try:
            _wait_ready(process, url + ready_path, log_path, ready_timeout)
            yield RunningService(url, process, log_path)
        finally:
            _stop(process, stop_timeout)


@contextmanager
def running_on_free_port(
    command_for: Callable[[int], Sequence[str]],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    attempts: int = 3,
    **options: Any,
) -> Iterator[RunningService]:
    """:func:`running_service` of ``command_for(port)`` at ``http://127.0.0.1:port`` on a
    port :func:`free_port` picks. Another process can take that port between the pick and
    the server's bind (BentoML's own zmq endpoints among them), so a start that fails with
    the address in use is tried again on a new port, ``attempts`` times in all."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        with ExitStack() as stack:
            try:
                service = stack.enter_context(
                    running_service(
                        command_for(port), f"http://127.0.0.1:{port}", log_path, env, **options
                    )
                )
            except PortInUseError:
                if attempt == attempts:
                    raise
                continue
            yield service
            return


def pin_to_core(core: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning a child process to one CPU (None: no pinning)."""
    if core is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _tail(log)
            error = PortInUseError if "Address already in use" in tail else ServiceStartError
            raise error(f"{url}: server exited early:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise ServiceStartError(f"{url}: not ready within {timeout:.0f} s:\n{_tail(log)}")


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:  # the group is gone already
        pass


def _tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
