"""The audit log of admin actions: who, what, when, outcome; append-only and chained.

One JSON line per action in ``Settings.audit_log_file``. Each entry carries the SHA-256
of the entry before it (``prev``) and of itself (``hash``), so an edited, removed or
reordered line breaks the chain and :func:`verify_audit_log` names where. Entries hold
keyed pseudonyms and counts, never raw ids, tokens or request bodies; the file is opened
with ``O_APPEND`` and every entry is fsync-ed before the action's answer goes out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segrec.durable_append import append_line

GENESIS = "0" * 64
ACTOR_PATTERN = re.compile(r"[A-Za-z0-9_.@:+-]{1,64}")
_TAIL_BYTES = 65536  # an entry is far shorter: the last line is within this


def clean_actor(value: str | None, default: str) -> str:
    """A caller-given actor name if it is a plain short name, else ``default`` (free
    text from a header must not forge lines or smuggle data into the log)."""
    if value and ACTOR_PATTERN.fullmatch(value):
        return value
    return default


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class AuditLog:
    """Appends chained entries to ``path`` (thread-safe within a process)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _last_hash(self) -> str:
        try:
            with self.path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(size - _TAIL_BYTES, 0))
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return GENESIS
        for line in reversed(lines):
            if line.strip():
                try:
                    return str(json.loads(line)["hash"])
                except (ValueError, KeyError, TypeError):
                    return hashlib.sha256(line).hexdigest()  # chain on, the break is kept
        return GENESIS

    def record(
        self,
        *,
        actor: str,
        action: str,
        outcome: str,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one entry and return it (with its hash)."""
        with self._lock:
            entry: dict[str, Any] = {
                "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "actor": actor,
                "action": action,
                "outcome": outcome,
                "details": details or {},
                "prev": self._last_hash(),
            }
            entry["hash"] = _digest(entry)
            append_line(self.path, json.dumps(entry, sort_keys=True))
        return entry


@dataclass(frozen=True)
class AuditCheck:
    entries: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_audit_log(path: Path) -> AuditCheck:
    """Walk the chain: every line parses, hashes to its ``hash`` and names the line before
    it as ``prev``. Problems name the line number."""
    problems: list[str] = []
    previous = GENESIS
    count = 0
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        return AuditCheck(0, [])
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        count += 1
        try:
            entry = json.loads(line)
            stated = entry["hash"]
            prev = entry["prev"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"line {number}: not an audit entry")
            previous = hashlib.sha256(line).hexdigest()
            continue
        if _digest(entry) != stated:
            problems.append(f"line {number}: content does not match its hash (edited)")
        if prev != previous:
            problems.append(f"line {number}: does not follow the line before (removed or moved)")
        previous = stated
    return AuditCheck(count, problems)
