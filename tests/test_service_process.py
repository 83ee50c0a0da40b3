"""Starting a server on a free port: a port taken between the pick and the bind is
tried again on another port; any other early exit fails at once."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from segrec.service_process import PortInUseError, ServiceStartError, running_on_free_port

# Fails like a server whose port was taken the first time it runs, then serves /readyz.
SERVER = """
import http.server, pathlib, sys
marker, port, message = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if not marker.exists():
    marker.write_text("started once")
    print(message, flush=True)
    sys.exit(1)
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
http.server.HTTPServer(("127.0.0.1", port), Ready).serve_forever()
"""


def _command(tmp_path: Path, message: str, ports: list[int]) -> Callable[[int], list[str]]:
    def command_for(port: int) -> list[str]:
        ports.append(port)
        return [sys.executable, "-c", SERVER, str(tmp_path / "marker"), str(port), message]

    return command_for


def test_a_port_taken_meanwhile_is_tried_again_on_another(tmp_path: Path) -> None:
    ports: list[int] = []
    command = _command(tmp_path, "zmq.error.ZMQError: Address already in use", ports)
    with running_on_free_port(command, tmp_path / "server.log", ready_timeout=20) as running:
        assert len(ports) == 2
        assert running.url == f"http://127.0.0.1:{ports[-1]}"
        assert running.process.poll() is None
    assert running.process.poll() is not None  # stopped on leaving


def test_other_early_exits_are_not_retried(tmp_path: Path) -> None:
    ports: list[int] = []
    command = _command(tmp_path, "ImportError: no module named serving", ports)
    log = tmp_path / "server.log"
    with (
        pytest.raises(ServiceStartError, match="ImportError") as raised,
        running_on_free_port(command, log, ready_timeout=20),
    ):
        pass
    assert not isinstance(raised.value, PortInUseError)
    assert len(ports) == 1


def test_the_last_attempt_raises(tmp_path: Path) -> None:
    ports: list[int] = []
    command = _command(tmp_path, "Address already in use", ports)
    log = tmp_path / "server.log"
    with (
        pytest.raises(PortInUseError),
        running_on_free_port(command, log, attempts=1, ready_timeout=20),
    ):
        pass
    assert len(ports) == 1
