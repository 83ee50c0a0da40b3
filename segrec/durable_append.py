"""One line appended durably: the privacy files (suppression list, consent ledger, audit
log) must survive a crash the moment the action that wrote them has answered."""

from __future__ import annotations

import os
from pathlib import Path


def append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline to ``path`` (created owner-only), fsync-ed.

    ``O_APPEND`` makes each write land whole at the end, even with several writers.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
