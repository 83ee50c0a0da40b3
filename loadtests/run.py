"""``make loadtest``: run a load profile with Locust as a gate, against a given or own server.

``python -m loadtests.run --profile smoke|steady|step [--host URL] [--users N] [--rps R]
[--duration S] [--step-seconds S] [--p95-ms X --p99-ms X --max-failure-ratio X]``

1. **Target.** ``--host`` (any URL, e.g. a port-forwarded Kubernetes service) must answer
   ``/readyz``. Without it, a service answering on ``http://127.0.0.1:3000`` (``make
   serve``) is used; when none answers (or with ``--start-server``) this starts ``bentoml
   serve`` itself on a free port, over a scratch copy of the data directory's online
   store (the load's events and sessions do not land in your data: the features and
   bundles are linked, read only), waits for ``/readyz`` and stops it afterwards.
2. **Cores.** On this 2-core machine the load generator competes with the server: a
   server started here runs on one core (0) and Locust on another (1), and the output says
   so. With a server started elsewhere nothing is pinned.
3. **Load.** ``locust -f loadtests/locustfile.py --headless`` as a subprocess with the
   profile from ``loadtests/profiles.toml``; customer and product ids come from the data
   directory's features (written once to a small JSON file for Locust).
4. **Results** in ``<reports>/loadtest/``: ``<profile>.html`` (Locust's report),
   ``<profile>_stats.csv`` and friends, ``<profile>.json`` (the summary: per endpoint and
   total p50/p95/p99, RPS, failures, budgets, verdict, server CPU per request when the
   server is local); the step profile also writes ``<reports>/capacity.json``.

The exit code is the gate's: 0 when every budget held, 1 when one broke (the output names
it and by how much), 2 for bad input (unknown profile, unreachable host, no data).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.workload import (
    PROFILES_PATH,
    IdSet,
    Profile,
    ProfileError,
    load_ids,
    load_profile,
    profile_names,
)
from segrec.service_process import (
    ServiceStartError,
    bentoml_command,
    free_port,
    pin_to_core,
    running_service,
)
from segrec.settings import PROJECT_ROOT, Settings

DEFAULT_URL = "http://127.0.0.1:3000"  # where `make serve` listens
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
SERVICE_TARGET = "serving.service:Segrec"
READY_TIMEOUT_SECONDS = 180.0
PROBE_TIMEOUT_SECONDS = 5.0
GRACE_SECONDS = 120.0  # Locust's start-up and shut-down beyond the profile's own length
NOT_LINKED = ("feast", "events")  # copied (the online store) or fresh (the event log)


class LoadTestError(RuntimeError):
    """Bad input or a missing prerequisite; the message says what to do."""


@dataclass(frozen=True)
class Target:
    url: str
    started_here: bool
    server_pid: int | None
    server_core: int | None
    client_core: int | None
    pinning: str
    server_log: Path | None = None


# ---- the command line ---------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--profile", default="smoke", help=f"one of {', '.join(profile_names())} (default smoke)"
    )
    parser.add_argument("--host", help=f"the service's URL (default: {DEFAULT_URL} or own)")
    parser.add_argument("--start-server", action="store_true", help="always start our own")
    parser.add_argument("--users", type=int, help="simulated shoppers (concurrency)")
    parser.add_argument("--rps", type=float, help="steady: the set rate; step: the top rate")
    parser.add_argument("--duration", type=float, help="seconds (smoke, steady)")
    parser.add_argument("--step-seconds", type=float, help="seconds per step (step)")
    parser.add_argument("--seed", type=int, help="seed of the traffic (default: the profile's)")
    parser.add_argument("--unknown-share", type=float, help="share of unknown customers")
    parser.add_argument("--p95-ms", type=float, help="p95 budget (or SEGREC_LOADTEST_P95_MS)")
    parser.add_argument("--p99-ms", type=float, help="p99 budget (or SEGREC_LOADTEST_P99_MS)")
    parser.add_argument(
        "--max-failure-ratio", type=float, help="(or SEGREC_LOADTEST_MAX_FAILURE_RATIO)"
    )
    parser.add_argument("--server-pid", type=int, help="measure the CPU of this local server")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    parser.add_argument("--profiles", type=Path, default=PROFILES_PATH, help="profiles file")
    parser.add_argument("--ids", type=Path, help="JSON id set instead of the data's features")
    parser.add_argument("--out", type=Path, help="results directory (<reports>/loadtest)")
    return parser.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "users": args.users,
        "rps": args.rps,
        "duration_s": args.duration,
        "step_s": args.step_seconds,
        "seed": args.seed,
        "unknown_share": args.unknown_share,
        "p95_ms": args.p95_ms,
        "p99_ms": args.p99_ms,
        "max_failure_ratio": args.max_failure_ratio,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (LoadTestError, ProfileError, ServiceStartError) as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return 130


# ---- the run ------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Resolve the target, run Locust on the profile, report; the gate's exit code."""
    profile = load_profile(args.profile, args.profiles, overrides_of(args))
    settings = Settings()
    out_dir = args.out or settings.reports_dir / "loadtest"
    host = normalise_url(args.host) if args.host else None
    if host is not None and not answers(host):
        raise LoadTestError(
            f"no service answers at {host}/readyz: start one (make serve, or kubectl "
            "port-forward for a cluster) or leave HOST unset to let the load test start its own"
        )
    ids = _id_set(args, settings)
    print(
        f"load test: profile {profile.name} ({profile.description}); "
        f"{len(ids.customers)} customers, {len(ids.products)} products from {ids.source}"
    )
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segrec-lt-")))
        ids_file = ids.write(scratch / "ids.json")
        target = _target(args, host, settings, out_dir, scratch, stack)
        print(f"target: {target.url}" + (" (started here)" if target.started_here else ""))
        print(f"pinning: {target.pinning}")
        warm_up(target.url, ids)
        code = run_locust(profile, args, target, ids_file, out_dir)
    return report(profile, target, out_dir, code, settings)


def _id_set(args: argparse.Namespace, settings: Settings) -> IdSet:
    try:
        if args.ids:
            return IdSet.read(args.ids)
        return load_ids(settings.features_dir)
    except FileNotFoundError as error:
        raise LoadTestError(str(error)) from None
    except (ValueError, KeyError) as error:
        raise LoadTestError(f"bad id set {args.ids}: {error}") from None


def _target(
    args: argparse.Namespace,
    host: str | None,
    settings: Settings,
    out_dir: Path,
    scratch: Path,
    stack: ExitStack,
) -> Target:
    if host is not None or (not args.start_server and answers(DEFAULT_URL)):
        url = host or DEFAULT_URL
        note = "not pinned: the server was not started here"
        if host is None:
            print(
                f"a service answers on {DEFAULT_URL}: testing it (--start-server for a fresh one)"
            )
        return Target(url, False, args.server_pid, None, None, note)
    server_core, client_core, pinning = choose_cores(args.no_pin)
    data_dir = scratch_data_dir(settings, scratch / "data")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = out_dir / f"{args.profile}-server.log"
    env = {
        "SEGREC_DATA_DIR": str(data_dir),
        "SEGREC_FEAST_STATE_DIR": str(data_dir / "feast"),
        # The bundle may live in the BentoML model store: keep reading the real one.
        "BENTOML_HOME": os.environ.get("BENTOML_HOME") or str(settings.bentoml_store.resolve()),
    }
    print(
        f"starting bentoml serve {SERVICE_TARGET} on {url} over a scratch copy of "
        f"{settings.feast_dir} (log {log}) ..."
    )
    started = time.monotonic()
    service = stack.enter_context(
        running_service(
            bentoml_command(SERVICE_TARGET, port),
            url,
            log,
            env,
            core=server_core,
            ready_timeout=READY_TIMEOUT_SECONDS,
        )
    )
    print(f"server ready in {time.monotonic() - started:.1f} s (pid {service.pid})")
    if settings.online_store == "redis":
        print(
            f"note: the online store is Redis ({settings.redis_url}): "
            "the load's live sessions land there"
        )
    return Target(url, True, service.pid, server_core, client_core, pinning, log)


def choose_cores(no_pin: bool) -> tuple[int | None, int | None, str]:
    """Server core, load-generator core and a sentence saying what was done."""
    available = sorted(os.sched_getaffinity(0))
    if no_pin:
        return None, None, "not pinned (--no-pin): the load generator competes with the server"
    if len(available) < 2:
        return None, None, "not pinned: one CPU only, the load generator competes with the server"
    server, client = available[0], available[1]
    return (
        server,
        client,
        f"server (bentoml serve and its worker) on core {server}, load generator (Locust) "
        f"on core {client}: they do not compete for a core",
    )


def scratch_data_dir(settings: Settings, data: Path) -> Path:
    """A data directory for the server: everything linked from ``settings.data_dir`` except
    the online store (copied: sessions are written there) and the event log (fresh)."""
    source = settings.data_dir
    if not source.is_dir():
        raise LoadTestError(
            f"no data directory at {source}: run make data features segments train first "
            "(or set SEGREC_DATA_DIR)"
        )
    data.mkdir(parents=True)
    for child in source.iterdir():
        if child.name not in NOT_LINKED:
            (data / child.name).symlink_to(child.resolve())
    if settings.feast_dir.is_dir():
        shutil.copytree(settings.feast_dir, data / "feast")
    else:
        raise LoadTestError(f"no online store at {settings.feast_dir}: run make features first")
    return data


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def answers(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether ``url/readyz`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def warm_up(url: str, ids: IdSet) -> None:
    """One request per endpoint before the clock starts. First calls pay for lazy imports,
    schema building and the store's first write; in a few seconds of smoke they would be
    most of the p99, and no steady-state request pays them."""
    customer, product = ids.customers[0], ids.products[0]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/recommend", {"customer_id": customer, "k": 4}),
        (
            "/recommend",
            {"customer_id": customer, "k": 4, "placement": "product", "product_id": product},
        ),
        ("/similar", {"product_id": product, "k": 4}),
        (
            "/events",
            {
                "events": [
                    {
                        "customer_id": customer,
                        "product_id": product,
                        "type": "view",
                        "session_id": "lt-warm-up",
                    }
                ]
            },
        ),
        ("/recommend", {"customer_id": customer, "k": 4, "placement": "cart"}),
        ("/recommend/batch", {"requests": [{"customer_id": customer, "k": 4}]}),
    ]
    started = time.monotonic()
    problems = []
    for path, body in calls:
        request = urllib.request.Request(
            url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        except (OSError, ValueError) as error:  # the run will count such answers as failures
            problems.append(f"{path}: {error}")
    note = f"; problems: {'; '.join(problems)}" if problems else ""
    print(
        f"warm-up: {len(calls)} requests in {time.monotonic() - started:.1f} s, not measured{note}"
    )


def locust_command(
    profile: Profile, args: argparse.Namespace, target: Target, ids_file: Path, out_dir: Path
) -> list[str]:
    locust = Path(sys.executable).parent / "locust"
    if not locust.exists():
        raise LoadTestError(f"no {locust}: run make setup (dependency group loadtest)")
    command = [
        str(locust),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        target.url,
        "--csv",
        str(out_dir / profile.name),
        "--html",
        str(out_dir / f"{profile.name}.html"),
        "--load-profile",
        profile.name,
        "--profiles-file",
        str(args.profiles),
        "--ids-file",
        str(ids_file),
        "--summary-json",
        str(out_dir / f"{profile.name}.json"),
    ]
    flags = {
        "--profile-users": args.users,
        "--profile-rps": args.rps,
        "--profile-duration": args.duration,
        "--step-seconds": args.step_seconds,
        "--seed": args.seed,
        "--unknown-share": args.unknown_share,
        "--p95-ms": args.p95_ms,
        "--p99-ms": args.p99_ms,
        "--max-failure-ratio": args.max_failure_ratio,
        "--server-pid": target.server_pid,
    }
    for flag, value in flags.items():
        if value is not None:
            command += [flag, str(value)]
    return command


def run_locust(
    profile: Profile, args: argparse.Namespace, target: Target, ids_file: Path, out_dir: Path
) -> int:
    """Locust as a child (pinned to the client core when there is one); its exit code."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = out_dir / f"{profile.name}.json"
    summary.unlink(missing_ok=True)  # never report an earlier run's figures
    command = locust_command(profile, args, target, ids_file, out_dir)
    timeout = profile.planned_seconds + GRACE_SECONDS
    print(
        f"running Locust for up to {profile.planned_seconds:g} s: {' '.join(command)}", flush=True
    )
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=pin_to_core(target.client_core),
    )
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise LoadTestError(f"Locust did not finish within {timeout:.0f} s: killed") from None
    except BaseException:
        process.terminate()
        process.wait()
        raise


# ---- the report ---------------------------------------------------------------------------
def report(profile: Profile, target: Target, out_dir: Path, code: int, settings: Settings) -> int:
    """Add the run's setting to the summary, print it and, for the step profile, write the
    capacity model. Returns the exit code: the gate's, or Locust's own when it failed."""
    summary_path = out_dir / f"{profile.name}.json"
    if not summary_path.exists():
        raise LoadTestError(f"Locust exited with {code} and wrote no summary: see its output")
    summary = json.loads(summary_path.read_text())
    summary["runner"] = {
        "server_started": target.started_here,
        "server_command": " ".join(bentoml_command(SERVICE_TARGET, 0))
        if target.started_here
        else None,
        "server_log": str(target.server_log) if target.server_log else None,
        "server_core": target.server_core,
        "load_generator_core": target.client_core,
        "pinning": target.pinning,
        "locust_exit_code": code,
        "cpu_count": os.cpu_count(),
    }
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    outputs = [
        summary_path,
        out_dir / f"{profile.name}.html",
        out_dir / f"{profile.name}_stats.csv",
    ]
    if profile.step is not None:
        from loadtests.capacity import describe, write_capacity

        capacity_path = settings.reports_dir / "capacity.json"
        try:
            print(describe(write_capacity(summary, capacity_path)))
            outputs.append(capacity_path)
        except ValueError as error:
            print(f"capacity: not written: {error}")
    print("-> " + ", ".join(str(p) for p in outputs))
    return code


def format_summary(summary: dict[str, Any]) -> str:
    """The endpoint table, server CPU and the verdict, as printed after a run."""
    rows = [("endpoint", "requests", "fail", "req/s", "p50", "p95", "p99")]
    for name, entry in [*summary["endpoints"].items(), ("total", summary["total"])]:
        rows.append(
            (
                name,
                str(entry["requests"]),
                str(entry["failures"]),
                f"{entry['rps']:.1f}",
                f"{entry['p50_ms']:g}",
                f"{entry['p95_ms']:g}",
                f"{entry['p99_ms']:g}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  (latencies in ms)")
    server = summary.get("server") or {}
    if server.get("cpu_ms_per_request") is not None:
        lines.append(
            f"server CPU: {server['cpu_ms_per_request']} ms per request, "
            f"{server['cpu_cores_mean']} cores on average, {server.get('rss_mb')} MB resident"
        )
    else:
        lines.append("server CPU: not measured (the server was not started here)")
    warning = summary.get("offered", {}).get("warning")
    if warning:
        lines.append(f"warning: {warning}")
    budgets = summary["budgets"]
    verdict = "PASS" if summary["passed"] else "FAIL"
    lines.append(
        f"gate {verdict}: budgets p95 {budgets['p95_ms']:g} ms, p99 {budgets['p99_ms']:g} ms, "
        f"failures {budgets['max_failure_ratio']:.2%}; {summary['requests']} requests in "
        f"{summary['duration_s']:g} s ({summary['rps']:g} req/s)"
    )
    lines += [f"  BUDGET BROKEN: {b}" for b in summary["breaches"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
