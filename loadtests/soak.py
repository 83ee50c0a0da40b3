"""``make soak``: the storefront mix at a set rate for a long while, watching the server.

``python -m loadtests.soak [--duration 600] [--rps 200] [--workers N] [--no-pin] [--host URL
--server-pid PID]``

Starts ``bentoml serve`` over a scratch copy of the online store (as ``make loadtest``
does, pinned to one core and the load generator to another unless ``--no-pin``) unless
``--host`` is given, then runs the ``steady`` profile (``loadtests.run``: the
same traffic, budgets p95 50 ms, p99 100 ms, failure ratio 0.1%) at ``--rps`` for
``--duration`` seconds while a watcher

- polls ``/readyz`` every second (every answer must be 200),
- samples each worker's resident memory and open file descriptors every 5 s (from
  ``/proc``; needs the server's pid, known when it was started here).

The gate adds to the load test's: no 5xx answer, readiness never failed, each worker's RSS
grew less than ``--max-rss-growth`` (5%) from the middle of the run to its end (minute 5
to 10 of the default; the first half is warm-up: caches, arenas), and its descriptor
count at the end is within ``--max-fd-growth`` (10) of the count in the middle. Results in
``<reports>/loadtest/soak/``: Locust's files and ``soak.json``. Exit 0 when every budget
held, 1 when one broke, 2 on bad input.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import run as loadtest
from segrec.service_process import ServiceStartError, bentoml_command, free_port, running_service
from segrec.settings import Settings

PROBE_INTERVAL_S = 1.0
SAMPLE_INTERVAL_S = 5.0
WORKER_MARK = "_bentoml_impl.worker.service"  # in the command line of BentoML's workers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--rps", type=float, default=200.0, help="set rate (200 req/s)")
    parser.add_argument("--workers", type=int, default=1, help="BentoML workers (own server)")
    parser.add_argument("--host", help="test this service instead of starting one")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    parser.add_argument("--server-pid", type=int, help="pid of --host's server (for RSS, fds)")
    parser.add_argument("--max-rss-growth", type=float, default=0.05, help="0.05 = 5%%")
    parser.add_argument("--max-fd-growth", type=int, default=10, help="descriptors")
    parser.add_argument("--out", type=Path, help="results directory (<reports>/loadtest/soak)")
    return parser.parse_args(argv)


@dataclass
class Watch:
    """What the watcher saw: readiness answers and per-worker samples over time."""

    probes: int = 0
    probe_failures: list[tuple[float, str]] = field(default_factory=list)
    # (seconds since start, {worker pid: (rss bytes, open fds)})
    samples: list[tuple[float, dict[int, tuple[int, int]]]] = field(default_factory=list)


def workers_of(pid: int) -> list[int]:
    """BentoML's worker processes under ``pid`` (its descendants running the worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            stack.append(child)
            try:
                command = (Path("/proc") / str(child) / "cmdline").read_bytes()
            except OSError:
                continue
            if WORKER_MARK.encode() in command:
                found.append(child)
    return found


def sample(pid: int) -> tuple[int, int] | None:
    """(resident bytes, open descriptors) of one process, or None once it is gone."""
    try:
        pages = int((Path("/proc") / str(pid) / "statm").read_text().split()[1])
        fds = len(os.listdir(Path("/proc") / str(pid) / "fd"))
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE"), fds


def watch(url: str, server_pid: int | None, stop: threading.Event, seen: Watch) -> None:
    started = time.monotonic()
    next_sample = started
    while not stop.is_set():
        now = time.monotonic()
        seen.probes += 1
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=PROBE_INTERVAL_S) as answer:
                if answer.status != 200:
                    seen.probe_failures.append((now - started, f"HTTP {answer.status}"))
        except OSError as error:  # HTTPError (503), refused, timed out
            seen.probe_failures.append((now - started, f"{type(error).__name__}: {error}"))
        if server_pid is not None and now >= next_sample:
            found = {pid: sample(pid) for pid in workers_of(server_pid)}
            seen.samples.append((now - started, {p: s for p, s in found.items() if s}))
            next_sample = now + SAMPLE_INTERVAL_S
        stop.wait(max(0.0, PROBE_INTERVAL_S - (time.monotonic() - now)))


def verdict(seen: Watch, max_rss_growth: float, max_fd_growth: int) -> dict[str, Any]:
    """The watcher's budgets: readiness, RSS growth and descriptors from mid-run to the end."""
    answer: dict[str, Any] = {
        "readyz_probes": seen.probes,
        "readyz_failures": len(seen.probe_failures),
        "readyz_failure_examples": seen.probe_failures[:5],
        "workers": {},
        "broken": [],
    }
    if seen.probe_failures:
        answer["broken"].append(f"/readyz failed {len(seen.probe_failures)} times")
    if len(seen.samples) < 2:
        answer["broken"].append("no worker samples (server pid unknown?)")
        return answer
    end = seen.samples[-1][0]
    middle = min(seen.samples, key=lambda s: abs(s[0] - end / 2))
    for pid, (rss_end, fds_end) in seen.samples[-1][1].items():
        if pid not in middle[1]:
            answer["broken"].append(f"worker {pid} appeared after mid-run (a restart?)")
            continue
        rss_mid, fds_mid = middle[1][pid]
        growth = (rss_end - rss_mid) / rss_mid
        answer["workers"][pid] = {
            "rss_mb_mid": round(rss_mid / 2**20, 1),
            "rss_mb_end": round(rss_end / 2**20, 1),
            "rss_growth": round(growth, 4),
            "fds_mid": fds_mid,
            "fds_end": fds_end,
            "fds_max": max(s[1][pid][1] for s in seen.samples if pid in s[1]),
        }
        if growth >= max_rss_growth:
            answer["broken"].append(
                f"worker {pid}: RSS grew {growth:.1%} from mid-run (budget {max_rss_growth:.0%})"
            )
        if fds_end - fds_mid > max_fd_growth:
            answer["broken"].append(
                f"worker {pid}: {fds_end - fds_mid} more descriptors (budget {max_fd_growth})"
            )
    return answer


def server_errors(failures_csv: Path) -> int:
    """Answers with a 5xx status in Locust's failures file (the locustfile names each
    failure ``HTTP <status>: ...``)."""
    if not failures_csv.is_file():
        return 0
    with failures_csv.open(newline="") as handle:
        return sum(
            int(row["Occurrences"])
            for row in csv.DictReader(handle)
            if row["Error"].startswith("HTTP 5")
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings()
    out = args.out or settings.reports_dir / "loadtest" / "soak"
    out.mkdir(parents=True, exist_ok=True)
    try:
        with ExitStack() as stack:
            url, pid = _server(args, settings, out, stack)
            seen, stop = Watch(), threading.Event()
            watcher = threading.Thread(target=watch, args=(url, pid, stop, seen), daemon=True)
            watcher.start()
            code = loadtest.main(
                ["--profile", "steady", "--host", url, "--rps", str(args.rps)]
                + ["--duration", str(args.duration), "--out", str(out)]
                + (["--server-pid", str(pid)] if pid else [])
            )
            stop.set()
            watcher.join()
    except (loadtest.LoadTestError, ServiceStartError) as error:
        print(f"soak: {error}", file=sys.stderr)
        return 2
    result = verdict(seen, args.max_rss_growth, args.max_fd_growth)
    result["loadtest_exit_code"] = code
    result["server_errors"] = server_errors(out / "steady_failures.csv")
    if result["server_errors"]:
        result["broken"].append(f"{result['server_errors']} answers with a 5xx status")
    (out / "soak.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    for pid_, figures in result["workers"].items():
        print(f"worker {pid_}: {figures}")
    print(f"/readyz: {result['readyz_failures']} failures in {result['readyz_probes']} probes")
    for problem in result["broken"]:
        print(f"BROKEN: {problem}")
    print(f"soak results in {out}")
    if code == 2:
        return 2
    return 1 if code or result["broken"] else 0


def _server(
    args: argparse.Namespace, settings: Settings, out: Path, stack: ExitStack
) -> tuple[str, int | None]:
    if args.host:
        return loadtest.normalise_url(args.host), args.server_pid
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segrec-soak-")))
    data_dir = loadtest.scratch_data_dir(settings, scratch / "data")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "SEGREC_DATA_DIR": str(data_dir),
        "SEGREC_FEAST_STATE_DIR": str(data_dir / "feast"),
        "BENTOML_HOME": os.environ.get("BENTOML_HOME") or str(settings.bentoml_store.resolve()),
        "BENTOML_CONFIG_OVERRIDES": json.dumps({"services": {"Segrec": {"workers": args.workers}}}),
    }
    server_core, client_core, pinning = loadtest.choose_cores(args.no_pin)
    print(f"starting bentoml serve with {args.workers} worker(s) on {url} ...")
    service = stack.enter_context(
        running_service(
            bentoml_command(loadtest.SERVICE_TARGET, port),
            url,
            out / "server.log",
            env,
            core=server_core,
        )
    )
    if client_core is not None:
        # Locust (a child of this process), the probes and the sampler stay off the
        # server's core, as `make loadtest` does.
        os.sched_setaffinity(0, {client_core})
    print(f"pinning: {pinning}")
    return url, service.pid


if __name__ == "__main__":
    sys.exit(main())
