"""Ask every ready serving pod to load the newest bundle: the retrain job's last step.

``python reload_serving.py --service segrec-serving-pods --port 3000`` resolves the
headless Service (one address per ready pod) and POSTs ``/admin/reload`` to each with
``Authorization: Bearer $SEGREC_ADMIN_TOKEN``. A pod verifies the bundle's checksums and
a smoke prediction before swapping it in and keeps the old one when anything fails (409),
so a bad bundle never serves. Pods that start later load the newest bundle themselves.

Exit code: 0 when every pod answered 200 (swapped, or already serving the newest bundle)
or when no pod is ready; 1 when a pod refused the bundle or could not be reached after
retries; 2 without a token. Standard library only: it runs in the training image.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any


def pod_addresses(service: str, port: int) -> list[str]:
    """Every address the (headless) Service name resolves to; empty when none."""
    try:
        infos = socket.getaddrinfo(service, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]) for info in infos})


def reload_pod(address: str, port: int, token: str, timeout: float) -> tuple[int, Any]:
    """POST /admin/reload to one pod: (HTTP status, decoded body); status 0 if unreachable."""
    host = f"[{address}]" if ":" in address else address
    request = urllib.request.Request(
        f"http://{host}:{port}/admin/reload",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    except OSError as error:
        return 0, f"{type(error).__name__}: {error}"
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def reload_all(
    service: str, port: int, token: str, *, timeout: float, attempts: int, pause: float
) -> int:
    """Reload every pod; returns how many did not answer 200."""
    addresses = pod_addresses(service, port)
    if not addresses:
        print(f"no ready pod behind {service}: nothing to reload (pods load the newest bundle)")
        return 0
    failed = 0
    for address in addresses:
        for attempt in range(1, attempts + 1):
            status, body = reload_pod(address, port, token, timeout)
            # 0: unreachable (restarting?) and 503: not ready yet are worth another try.
            if status not in (0, 503) or attempt == attempts:
                break
            time.sleep(pause)
        print(f"{address}: {status or 'unreachable'} {json.dumps(body)}")
        failed += status != 200
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default="segrec-serving-pods", help="headless Service")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per reload")
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between attempts")
    args = parser.parse_args(argv)
    token = os.environ.get("SEGREC_ADMIN_TOKEN", "")
    if not token:
        print("SEGREC_ADMIN_TOKEN is not set: serving refuses reloads without it", file=sys.stderr)
        return 2
    failed = reload_all(
        args.service,
        args.port,
        token,
        timeout=args.timeout,
        attempts=args.attempts,
        pause=args.pause,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
