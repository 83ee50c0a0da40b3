"""``make k8s``: render every overlay with ``kubectl kustomize`` and validate what came out.

``python -m k8s.validate [--checkov PATH] [--out build/k8s]``

1. **Render** ``k8s/overlays/<overlay>`` for dev, staging and prod with ``kubectl kustomize``
   (kustomize v5 built into kubectl) into ``build/k8s/<overlay>.yaml``.
2. **Schemas**: every object against the Kubernetes OpenAPI schemas of the version we
   target (:data:`KUBERNETES_VERSION`), strictly (an unknown field is an error), with
   kubernetes-validate.
3. **checkov** on the rendered files: no failed check; every skip is an annotation
   ``checkov.io/skipN: CKV_K8S_xx=<why>`` on the object it concerns.
4. **Capacity**: the manifests are sized from ``k8s/capacity.json``; when a newer
   measurement exists in ``reports/capacity.json`` (``make loadtest PROFILE=step``), say
   which figures differ (the manifests are then stale; not a failure: a measurement on a
   busy machine is not yet a decision).

What the checkers cannot see (probes, ports, selectors, PDB arithmetic, settings keys,
network flows, job policies) is asserted by ``tests/test_k8s.py``, on the same functions.
Exit code: 0 when everything passed, 1 when a check failed, 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

K8S_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = K8S_DIR.parent
OVERLAYS = ("dev", "staging", "prod")
BUILD_DIR = PROJECT_ROOT / "build" / "k8s"
# The cluster version we target (kubectl here is 1.32); kubernetes-validate ships its schemas.
KUBERNETES_VERSION = "1.32.0"
CAPACITY_FILE = K8S_DIR / "capacity.json"
MEASURED_CAPACITY_FILE = PROJECT_ROOT / "reports" / "capacity.json"
# checkov pins dependencies this project's lock cannot take (it would downgrade packaging,
# pytest, python-dateutil...), so it lives in its own environment, from pinned requirements.
CHECKOV = PROJECT_ROOT / ".venv-tools" / "bin" / "checkov"
CHECKOV_REQUIREMENTS = K8S_DIR / "checkov-requirements.txt"
# The capacity figures the manifests are sized from.
SIZING_FIELDS = (
    "workers_per_pod",
    "cpu_request_cores",
    "cpu_limit_cores",
    "memory_request_mib",
    "memory_limit_mib",
    "hpa_cpu_target_percent",
)


class ManifestError(RuntimeError):
    """A tool is missing or an overlay does not render; the message says what to do."""


def kubectl() -> str:
    """The kubectl binary, or an error saying how to get one."""
    found = shutil.which("kubectl")
    if found is None:
        raise ManifestError(
            "kubectl not found: install kubectl 1.27 or newer (kustomize v5 is built in), "
            "e.g. from the Kubernetes apt repository (pkgs.k8s.io) or your cloud SDK; "
            "`make setup` explains"
        )
    return found


def render(overlay: str) -> str:
    """``kubectl kustomize k8s/overlays/<overlay>``: the overlay's objects as YAML."""
    return render_dir(K8S_DIR / "overlays" / overlay)


def render_dir(directory: Path) -> str:
    """``kubectl kustomize`` of any kustomization directory."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ManifestError(f"kubectl kustomize {directory} failed:\n{done.stderr.strip()}")
    return done.stdout


def render_all(out_dir: Path = BUILD_DIR, overlays: Sequence[str] = OVERLAYS) -> dict[str, Path]:
    """Render each overlay into ``out_dir/<overlay>.yaml``; returns the paths by overlay."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for overlay in overlays:
        path = out_dir / f"{overlay}.yaml"
        path.write_text(render(overlay))
        paths[overlay] = path
    return paths


def load_objects(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML text (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def describe(obj: dict[str, Any]) -> str:
    """``Kind/name``, for messages."""
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_errors(
    objects: Iterable[dict[str, Any]], version: str = KUBERNETES_VERSION
) -> list[str]:
    """Every object against Kubernetes ``version``'s OpenAPI schemas, strictly."""
    import kubernetes_validate

    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in error.path)
            errors.append(f"{describe(obj)}: {where}: {error.message}")
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
        ) as error:
            errors.append(f"{describe(obj)}: {error}")
    return errors


@dataclass
class CheckovResult:
    passed: int
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    parsing_errors: list[str] = field(default_factory=list)

    def skips(self) -> dict[str, set[str]]:
        """Skipped check id -> the justifications given for it."""
        reasons: dict[str, set[str]] = {}
        for check in self.skipped:
            comment = check.get("check_result", {}).get("suppress_comment", "")
            reasons.setdefault(check["check_id"], set()).add(comment)
        return reasons

    def lines(self) -> list[str]:
        out = [
            f"checkov: {self.passed} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped, {len(self.parsing_errors)} parsing errors"
        ]
        out += [
            f"  FAILED {c['check_id']} {c['resource']} ({c.get('check_name')}) in "
            f"{c.get('file_path')}"
            for c in self.failed
        ]
        for check_id, reasons in sorted(self.skips().items()):
            count = sum(c["check_id"] == check_id for c in self.skipped)
            out.append(f"  skipped {check_id} on {count} objects:")
            out += [f"    - {reason}" for reason in sorted(reasons)]
        out += [f"  could not parse {p}" for p in self.parsing_errors]
        return out


def run_checkov(paths: Sequence[Path], checkov: Path = CHECKOV) -> CheckovResult:
    """checkov's Kubernetes checks over rendered files (offline: nothing is downloaded)."""
    if not checkov.exists():
        raise ManifestError(
            f"checkov is not installed at {checkov}: `make k8s` creates .venv-tools from "
            f"{CHECKOV_REQUIREMENTS.relative_to(PROJECT_ROOT)}"
        )
    files = [str(p) for path in paths for p in ("-f", path)]
    done = subprocess.run(
        [str(checkov), "--framework", "kubernetes", "--skip-download", "--output", "json", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    # 0: all passed; 1: some check failed. Anything else is checkov itself failing.
    if done.returncode not in (0, 1):
        raise ManifestError(f"checkov exited {done.returncode}:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    result = CheckovResult(passed=0)
    for part in reports:
        if "results" not in part:  # nothing scanned for this framework
            continue
        results = part["results"]
        result.passed += len(results.get("passed_checks", []))
        result.failed += results.get("failed_checks", [])
        result.skipped += results.get("skipped_checks", [])
        result.parsing_errors += results.get("parsing_errors", [])
    return result


def capacity_drift(committed: dict[str, Any], measured: dict[str, Any]) -> list[str]:
    """The sizing figures that differ between the committed and a newer measured capacity."""
    return [
        f"{name}: manifests use {committed.get(name)}, {MEASURED_CAPACITY_FILE.name} says "
        f"{measured.get(name)}"
        for name in SIZING_FIELDS
        if measured.get(name) is not None and measured.get(name) != committed.get(name)
    ]


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def capacity_lines(
    committed_path: Path = CAPACITY_FILE, measured_path: Path = MEASURED_CAPACITY_FILE
) -> list[str]:
    """What the manifests are sized from, and whether a newer measurement disagrees."""
    committed = json.loads(committed_path.read_text())
    lines = [
        f"capacity: sized from {_shown(committed_path)} "
        f"({committed.get('source', 'measured')}): "
        + ", ".join(f"{name} {committed[name]}" for name in SIZING_FIELDS)
    ]
    if not measured_path.exists():
        lines.append(f"  no {_shown(measured_path)} to compare with")
        return lines
    drift = capacity_drift(committed, json.loads(measured_path.read_text()))
    if drift:
        lines.append(
            f"  STALE: {_shown(measured_path)} differs; copy it to {_shown(committed_path)} "
            "and resize the manifests:"
        )
        lines += [f"    {line}" for line in drift]
    else:
        lines.append(f"  matches {_shown(measured_path)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m k8s.validate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=BUILD_DIR, help="where to render")
    parser.add_argument("--checkov", type=Path, default=CHECKOV, help="checkov executable")
    args = parser.parse_args(argv)
    try:
        paths = render_all(args.out)
        ok = True
        for overlay, path in paths.items():
            objects = load_objects(path.read_text())
            errors = schema_errors(objects)
            state = "valid" if not errors else f"{len(errors)} schema errors"
            print(
                f"{overlay}: {len(objects)} objects -> {path} "
                f"(Kubernetes {KUBERNETES_VERSION} schemas, strict: {state})"
            )
            for error in errors:
                print(f"  {error}")
            ok = ok and not errors
        result = run_checkov(list(paths.values()), args.checkov)
    except ManifestError as error:
        print(f"k8s: {error}", file=sys.stderr)
        return 2
    print("\n".join(result.lines()))
    print("\n".join(capacity_lines()))
    ok = ok and not result.failed and not result.parsing_errors
    print("k8s: all overlays rendered and valid" if ok else "k8s: validation FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
