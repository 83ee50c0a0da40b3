"""What one pod holds and how many pods a rate needs, from the step profile's steps.

``python -m loadtests.capacity [--summary reports/loadtest/step.json]`` (run by
``make loadtest PROFILE=step`` on its own) writes ``reports/capacity.json``:

* **knee**: the highest step rate the server sustained within budget (p99, p95 and
  failures within the profile's budgets, and the set rate actually achieved). A failing
  step followed by a passing one is treated as noise on a shared machine; two failing
  steps in a row (or a failing last step) end the ladder.
* **CPU per request** at the knee (the server's whole process tree, from ``/proc``), and
  the cores it used there.
* **pod sizing**: one worker per pod (a BentoML worker is one Python process, about one
  core at most; more throughput comes from more pods, which keeps the HPA's per-pod CPU
  signal honest), CPU request = the cores used at the knee, rounded up to 100m; limit =
  1.5 x the request (bursts, garbage collection, the read pool's threads); memory from
  the server's resident size.
* **HPA**: scale at ``hpa_fraction`` (70%) of the knee: the CPU utilisation target is
  that share of the knee's CPU, relative to the request.
* **pods for 1k, 10k, 100k req/s**: ``ceil(rate / (hpa_fraction x knee))``, at least 2 for
  availability, with the arithmetic written out.

The figures hold for the machine, data and pinning they were measured with. Against a pod
(``make loadtest PROFILE=step HOST=...``) the knee is measured the same way, but CPU per
request needs the server's ``/proc`` (``--server-pid``): on a cluster read it from the
pod's metrics instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HPA_FRACTION = 0.7
TARGET_RPS = (1_000, 10_000, 100_000)
CPU_STEP_CORES = 0.1  # requests and limits in whole 100m
MEMORY_STEP_MIB = 64
LIMIT_HEADROOM = 1.5
MEMORY_REQUEST_HEADROOM = 1.25
MEMORY_LIMIT_HEADROOM = 1.5
MIN_PODS = 2  # one pod is no availability: a rollout or a node drain takes the service down
WORKERS_PER_POD = 1
CPU_BOUND_CORES = 0.8  # a worker near one core at the knee is CPU-bound; far below, it is not


@dataclass(frozen=True)
class Step:
    """One measured step of the ladder (see ``StepWindow.stats`` in the locustfile)."""

    target_rps: float
    achieved_rps: float
    p99_ms: float | None
    within_budget: bool
    cpu_ms_per_request: float | None = None
    cpu_cores: float | None = None
    breaches: tuple[str, ...] = ()
    slowest_endpoint: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Step:
        return cls(
            target_rps=float(raw["target_rps"]),
            achieved_rps=float(raw["achieved_rps"]),
            p99_ms=raw.get("p99_ms"),
            within_budget=bool(raw["within_budget"]),
            cpu_ms_per_request=raw.get("server_cpu_ms_per_request"),
            cpu_cores=raw.get("server_cpu_cores"),
            breaches=tuple(raw.get("breaches") or ()),
            slowest_endpoint=raw.get("slowest_endpoint"),
        )


def find_knee(steps: Sequence[Step]) -> tuple[Step | None, Step | None]:
    """The knee (highest sustained step before the ladder broke) and the step that broke it.

    >>> ok, bad = Step(50, 50, 10, True), Step(100, 80, 900, False)
    >>> find_knee([ok, bad]) == (ok, bad)
    True
    """
    knee: Step | None = None
    for i, step in enumerate(steps):
        if step.within_budget:
            knee = step
            continue
        following = steps[i + 1] if i + 1 < len(steps) else None
        if following is None or not following.within_budget:
            return knee, step
    return knee, None


def round_up(value: float, unit: float) -> float:
    """``value`` rounded up to a whole number of ``unit`` (at least one unit)."""
    return max(unit, math.ceil(value / unit - 1e-9) * unit)


def pods_needed(rate: float, per_pod_rps: float, min_pods: int = MIN_PODS) -> dict[str, Any]:
    """Pods for ``rate`` req/s at ``per_pod_rps`` each, with the arithmetic as a string."""
    raw = rate / per_pod_rps
    pods = max(min_pods, math.ceil(raw - 1e-9))
    floor_note = f", at least {min_pods}" if pods == min_pods and math.ceil(raw) < min_pods else ""
    return {
        "rps": rate,
        "pods": pods,
        "arithmetic": f"ceil({rate:g} / {per_pod_rps:g}) = ceil({raw:.2f}) = "
        f"{math.ceil(raw - 1e-9)}{floor_note} -> {pods} pods",
    }


def capacity_model(
    steps: Sequence[Step],
    *,
    p99_budget_ms: float,
    server_rss_mb: float | None = None,
    hpa_fraction: float = HPA_FRACTION,
    targets: Sequence[float] = TARGET_RPS,
) -> dict[str, Any]:
    """The knee, CPU per request, pod requests/limits, the HPA target and pods per rate."""
    knee, broke = find_knee(steps)
    answer: dict[str, Any] = {
        "p99_budget_ms": p99_budget_ms,
        "hpa_fraction_of_knee": hpa_fraction,
        "steps": [vars(s) | {"breaches": list(s.breaches)} for s in steps],
        "breaks_first": _what_broke(broke, steps),
    }
    if knee is None:
        answer["knee_rps"] = None
        answer["note"] = "no step was within budget: lower start_rps or check the server"
        return answer
    knee_rps = knee.achieved_rps
    cpu_ms = knee.cpu_ms_per_request
    cores = knee.cpu_cores
    if cores is None and cpu_ms is not None:
        cores = knee_rps * cpu_ms / 1000
    per_pod = round(hpa_fraction * knee_rps, 2)
    if cores is not None:
        answer["bottleneck"] = (
            f"CPU: {cores:.2f} cores at the knee"
            if cores >= CPU_BOUND_CORES
            else f"not CPU: {cores:.2f} cores at the knee, so the limit is a queue elsewhere "
            f"(slowest endpoint where it broke: {broke.slowest_endpoint if broke else 'n/a'}); "
            "CPU still grows with the rate, so the HPA target below holds, but raising the "
            "knee needs that endpoint fixed, not more CPU"
        )
    answer |= {
        "knee_rps": knee_rps,
        "knee_set_rps": knee.target_rps,
        "knee_p99_ms": knee.p99_ms,
        "cpu_ms_per_request": cpu_ms,
        "cpu_cores_at_knee": cores,
        "workers_per_pod": WORKERS_PER_POD,
        "per_pod_design_rps": per_pod,
        "per_pod_design_arithmetic": f"{hpa_fraction:g} x {knee_rps:g} = {per_pod:g} req/s",
        "pods_for": [pods_needed(rate, per_pod) for rate in targets],
    }
    if cores is not None:
        request = round(round_up(cores, CPU_STEP_CORES), 3)
        limit = round(round_up(request * LIMIT_HEADROOM, CPU_STEP_CORES), 3)
        target = math.floor(100 * hpa_fraction * cores / request)
        answer |= {
            "cpu_request_cores": request,
            "cpu_limit_cores": limit,
            "cpu_request_arithmetic": f"{cores:.3f} cores at the knee, rounded up to "
            f"{CPU_STEP_CORES * 1000:.0f}m -> {request * 1000:.0f}m",
            "cpu_limit_arithmetic": f"{LIMIT_HEADROOM:g} x {request:g} -> {limit * 1000:.0f}m",
            "hpa_cpu_target_percent": target,
            "hpa_arithmetic": f"floor(100 x {hpa_fraction:g} x {cores:.3f} / {request:g}) = "
            f"{target}% of the request",
        }
        for row in answer["pods_for"]:
            row["cpu_request_cores_total"] = round(row["pods"] * request, 1)
    if server_rss_mb:
        memory_request = round_up(server_rss_mb * MEMORY_REQUEST_HEADROOM, MEMORY_STEP_MIB)
        memory_limit = round_up(server_rss_mb * MEMORY_LIMIT_HEADROOM, MEMORY_STEP_MIB)
        answer |= {
            "server_rss_mb": server_rss_mb,
            "memory_request_mib": int(memory_request),
            "memory_limit_mib": int(memory_limit),
        }
    return answer


def _what_broke(broke: Step | None, steps: Sequence[Step]) -> str:
    if broke is None:
        top = max((s.target_rps for s in steps), default=0)
        return f"nothing up to {top:g} req/s: raise the ladder's max_rps (--rps) to find the knee"
    reasons = "; ".join(broke.breaches) or (
        f"achieved {broke.achieved_rps:g} of the set {broke.target_rps:g} req/s"
    )
    slowest = f"; slowest endpoint {broke.slowest_endpoint}" if broke.slowest_endpoint else ""
    return f"at {broke.target_rps:g} req/s: {reasons}{slowest}"


def capacity_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """:func:`capacity_model` over a step run's JSON summary, with where it came from."""
    raw_steps = summary.get("steps")
    if not raw_steps:
        raise ValueError(
            f"the summary of profile {summary.get('profile')!r} has no steps: "
            "run the step profile (make loadtest PROFILE=step)"
        )
    server = summary.get("server") or {}
    model = capacity_model(
        [Step.from_dict(s) for s in raw_steps],
        p99_budget_ms=float(summary["budgets"]["p99_ms"]),
        server_rss_mb=server.get("rss_mb"),
    )
    runner = summary.get("runner") or {}
    return {
        "measured_at": summary.get("started_at"),
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": summary.get("host"),
        "pinning": runner.get("pinning"),
        "server_started_here": runner.get("server_started"),
        "step_stopped_early": summary.get("step_stopped_early"),
        **model,
    }


def write_capacity(summary: dict[str, Any], out_path: Path) -> dict[str, Any]:
    model = capacity_from_summary(summary)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(model, indent=2) + "\n")
    return model


def describe(model: dict[str, Any]) -> str:
    """The model as a few printable lines."""
    if model.get("knee_rps") is None:
        return (
            f"capacity: no knee found ({model.get('note')}); breaks first {model['breaks_first']}"
        )
    lines = [
        f"knee: {model['knee_rps']:g} req/s per worker within p99 {model['p99_budget_ms']:g} ms "
        f"(p99 there {model['knee_p99_ms']} ms); breaks first {model['breaks_first']}",
        f"CPU: {model.get('cpu_ms_per_request')} ms per request, "
        f"{model.get('cpu_cores_at_knee')} cores at the knee",
    ]
    if "bottleneck" in model:
        lines.append(f"bottleneck: {model['bottleneck']}")
    if "cpu_request_cores" in model:
        lines.append(
            f"pod: {model['workers_per_pod']} worker, CPU request {model['cpu_request_arithmetic']}"
            f", limit {model['cpu_limit_arithmetic']}; HPA target {model['hpa_arithmetic']}"
        )
    if "memory_request_mib" in model:
        lines.append(
            f"memory: {model['server_rss_mb']} MB resident -> request "
            f"{model['memory_request_mib']}Mi, limit {model['memory_limit_mib']}Mi"
        )
    lines.append(f"per pod at the HPA target: {model['per_pod_design_arithmetic']}")
    lines += [f"  {row['rps']:>7g} req/s: {row['arithmetic']}" for row in model["pods_for"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from segrec.settings import Settings

    reports = Settings().reports_dir
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.capacity", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--summary", type=Path, default=reports / "loadtest" / "step.json")
    parser.add_argument("--out", type=Path, default=reports / "capacity.json")
    args = parser.parse_args(argv)
    try:
        summary = json.loads(args.summary.read_text())
        model = write_capacity(summary, args.out)
    except FileNotFoundError:
        print(f"capacity: no {args.summary}: run make loadtest PROFILE=step", file=sys.stderr)
        return 2
    except (ValueError, KeyError) as error:
        print(f"capacity: {args.summary}: {error}", file=sys.stderr)
        return 2
    print(describe(model))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
