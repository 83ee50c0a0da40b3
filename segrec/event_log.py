"""The durable log of live storefront events: serving appends, training ingests.

Format
------
One UTF-8 JSON object per line (JSON Lines) in
``<directory>/events-YYYYMMDD-<writer_id>.jsonl``, where the date is the UTC day the
event was *received* (so a file is closed for good once its day is over). Each object has
exactly these fields::

    {"event_id": "...", "customer_id": "c_...", "product_id": "...", "type": "view",
     "ts": "2026-10-31T12:00:00+00:00", "quantity": 1, "price": 9.5, "value": null,
     "session_id": "...", "received_at": "2026-10-31T12:00:01.250000+00:00"}

``ts`` and ``received_at`` are ISO 8601 in UTC; ``price``, ``value`` and ``session_id`` may
be ``null``.

Durability
----------
When :meth:`EventLog.append` returns, its lines have been written and ``fsync``-ed (and
so has the directory entry of a file it created): an event the service acknowledged
survives a crash or power loss of the pod. A crash *during* an append can leave a
truncated last line; :func:`read_event_log` reports it as an error instead of raising,
and a writer reopening such a file starts on a fresh line so the next event is intact.

Why one file per writer
-----------------------
Several pods, and several worker processes per pod, accept events at once. Appends from
different processes to one file would need cross-process locking (fragile on network
volumes) and could interleave partial lines; with one file per writer, each file has a
single writer whose threads share one lock, and readers need no coordination with
writers. ``writer_id`` defaults to ``<hostname>-<pid>``: unique per worker process.

This module is imported by serving, so it uses the standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segrec.live_session import LiveEvent

FILE_PREFIX = "events-"
FILE_SUFFIX = ".jsonl"
FIELDS = (
    "event_id",
    "customer_id",
    "product_id",
    "type",
    "ts",
    "quantity",
    "price",
    "value",
    "session_id",
    "received_at",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitise_writer_id(writer_id: str) -> str:
    """``writer_id`` reduced to letters, digits, ``.``, ``_`` and ``-``, safe in a file name.

    Examples
    --------
    >>> sanitise_writer_id("pod/a b:7")
    'pod_a_b_7'
    """
    cleaned = _UNSAFE.sub("_", writer_id).strip("._-")
    return cleaned or "writer"


def default_writer_id() -> str:
    """``<hostname>-<pid>``: unique per worker process across pods sharing a volume."""
    return sanitise_writer_id(f"{socket.gethostname()}-{os.getpid()}")


def _utc(value: dt.datetime, name: str) -> dt.datetime:
    # A naive time has no defined instant; guessing a zone would shift events silently.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(dt.UTC)


def _fsync_dir(directory: Path) -> None:
    # A new file's name lives in its directory: without this, a crash can lose the whole
    # file even though its contents were fsync-ed.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode(event: LiveEvent, received_at: dt.datetime) -> str:
    """One log line (without the newline) for ``event``."""
    if not event.event_id:
        raise ValueError(
            f"event of customer {event.customer_id} on {event.product_id} has no event_id: "
            "ingestion deduplicates by it, so it must be set before logging"
        )
    record = {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "product_id": event.product_id,
        "type": event.type,
        "ts": _utc(event.ts, "ts").isoformat(),
        "quantity": int(event.quantity),
        "price": None if event.price is None else float(event.price),
        "value": None if event.value is None else float(event.value),
        "session_id": event.session_id,
        "received_at": _utc(received_at, "received_at").isoformat(),
    }
    # allow_nan=False: NaN is not JSON; a bad float fails here, before anything is written.
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class EventLog:
    """Appends live events durably to this writer's JSON-lines file of the day.

    Parameters
    ----------
    directory : Path
        The shared log directory (``Settings.event_log_dir``); created if missing, so a
        pod without a writable volume fails at start-up rather than on its first event.
    writer_id : str, optional
        Names this writer's files; default ``<hostname>-<pid>``. Sanitised for file names.
        Two live writers must never share one.
    """

    def __init__(self, directory: Path, writer_id: str | None = None) -> None:
        self.directory = Path(directory)
        self.writer_id = sanitise_writer_id(writer_id or default_writer_id())
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.directory.parent)

    def path_for(self, received_at: dt.datetime) -> Path:
        """The file that events received at ``received_at`` go to."""
        day = _utc(received_at, "received_at").strftime("%Y%m%d")
        return self.directory / f"{FILE_PREFIX}{day}-{self.writer_id}{FILE_SUFFIX}"

    def append(self, events: Sequence[LiveEvent], received_at: dt.datetime) -> int:
        """Write ``events`` as lines, flush and fsync; return how many were written.

        Every line is encoded before any is written, so an invalid event (no event_id,
        naive time, NaN) raises ``ValueError`` with nothing logged. Safe to call from
        several threads.
        """
        if not events:
            return 0
        data = "".join(encode(event, received_at) + "\n" for event in events).encode()
        path = self.path_for(received_at)
        with self._lock:
            fd = self._open(path)
            try:
                view = memoryview(data)
                while view:
                    # os.write may write less than asked (signals, a nearly full disk).
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            except BaseException:
                # The file may now end in a partial line: reopening checks for that and
                # starts the next append on a fresh line.
                self._close()
                raise
        return len(events)

    def _open(self, path: Path) -> int:
        """The descriptor for ``path``, reopened when the day (or first use) changes."""
        if self._path == path and self._fd is not None:
            return self._fd
        self._close()
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            _fsync_dir(path.parent)
        except FileExistsError:
            fd = os.open(path, flags)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A crashed writer with the same id (a restarted container keeps its
                # hostname and pid 1) left a partial line: end it, so it stays one bad
                # line instead of corrupting the next good one.
                os.write(fd, b"\n")
                os.fsync(fd)
        self._fd, self._path = fd, path
        return fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._path = None, None

    def close(self) -> None:
        """Close the open file (appending again reopens it)."""
        with self._lock:
            self._close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventLog({str(self.directory)!r}, writer_id={self.writer_id!r})"


@dataclass(frozen=True)
class LogLine:
    """One line of a log file: its parsed object, or why it could not be parsed.

    Exactly one of ``record`` and ``error`` is set; ``text`` is the raw line (without
    its newline) for reporting bad lines.
    """

    path: Path
    line: int  # 1-based
    record: dict[str, Any] | None
    error: str | None
    text: str

    @property
    def ok(self) -> bool:
        return self.error is None


def log_files(directory: Path, prefix: str = FILE_PREFIX) -> list[Path]:
    """Every log file under ``directory``, in name order (day, then writer)."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"{prefix}*{FILE_SUFFIX}"))


def read_event_log(directory: Path, prefix: str = FILE_PREFIX) -> Iterator[LogLine]:
    """Yield every line of every log file under ``directory`` (none if it is missing);
    ``prefix`` picks other JSON-lines logs of the same layout (exposures).

    Bad lines are yielded with an ``error``, never raised: an unparseable line, one that
    is not a JSON object, and a last line without its newline (a crash mid-append, or a
    write in progress that a later read will see complete).
    """
    for path in log_files(directory, prefix):
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not raw.endswith(b"\n"):
                    yield LogLine(
                        path,
                        number,
                        None,
                        "incomplete last line (crash or append in progress)",
                        text,
                    )
                    continue
                try:
                    parsed = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as error:
                    yield LogLine(path, number, None, f"not JSON: {error}", text)
                    continue
                if not isinstance(parsed, dict):
                    message = f"not a JSON object: {type(parsed).__name__}"
                    yield LogLine(path, number, None, message, text)
                    continue
                yield LogLine(path, number, parsed, None, text)
