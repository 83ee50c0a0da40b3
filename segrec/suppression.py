"""The suppression list: erased customers, by keyed pseudonym, kept out for good.

Two copies, written by every erasure (:func:`segrec.erasure.erase_customer`), shared one
first:

- :class:`SharedSuppression`, in the online store (:mod:`segrec.shared_state`): the one
  ``/events`` checks, on every worker of every pod, whether or not they share ``data/``;
- :class:`SuppressionList`, the file ``Settings.suppression_file``: the offline record that
  cleaning reads to withhold erased customers from re-imports and that bundles fingerprint.
  The import stays on the file: it runs where the pods' event logs are (it ingests them),
  so it sees the data directory the erasing process appended to, and a re-import must not
  depend on the online store being up.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segrec.durable_append import append_line
from segrec.pseudonym import CUSTOMER_ID_PATTERN, canonical_raw_id, pseudonymise_many
from segrec.shared_state import SharedState

_PSEUDONYM = re.compile(CUSTOMER_ID_PATTERN)


class SuppressionList:
    """The pseudonyms of erased customers, one per line (append-only)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[float, int] | None = None
        self._ids: frozenset[str] = frozenset()

    def withheld(self, raw_ids: pd.Series, secret: str) -> np.ndarray:
        """Which rows of ``raw_ids`` (ids as an export has them) name a suppressed
        customer: a boolean mask."""
        erased = self.ids()
        if not erased or raw_ids.empty:
            return np.zeros(len(raw_ids), dtype=bool)
        canonical = [canonical_raw_id(str(v)) for v in raw_ids.tolist()]
        pseudonyms = pseudonymise_many(canonical, secret)
        return np.fromiter((p in erased for p in pseudonyms), dtype=bool, count=len(pseudonyms))

    def ids(self) -> frozenset[str]:
        """The current list, re-read when the file changed (another process erased)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return frozenset()
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._stamp:
            lines = self.path.read_text(encoding="utf-8").splitlines()
            self._ids = frozenset(line.strip() for line in lines if line.strip())
            self._stamp = stamp
        return self._ids

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self.ids()

    def add(self, customer_id: str) -> bool:
        """Append ``customer_id``; False when it was listed already."""
        if customer_id in self.ids():
            return False
        append_line(self.path, customer_id)
        return True

    def fingerprint(self) -> dict[str, Any]:
        """Count and hash of the list, for manifests (the ids themselves stay here)."""
        ids = sorted(self.ids())
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        return {"suppressed_customers": len(ids), "suppression_sha256": digest}


class SharedSuppression:
    """The list in the shared store, asked per call: no staleness. Ids found erased are
    remembered (erasure is final), so a known one costs no round trip."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def erased(self, customer_ids: Iterable[str]) -> set[str]:
        """Which of ``customer_ids`` are erased; raises ``SharedStateUnavailable`` when the
        store cannot say (the caller fails closed)."""
        wanted = set(customer_ids)
        unknown = wanted - self._known
        if unknown:
            found = self.state.suppressed(unknown)
            if found:
                self._remember(found)
        return wanted & self._known

    def add(self, customer_ids: Collection[str]) -> set[str]:
        """Suppress ``customer_ids``; returns those not suppressed before."""
        added = self.state.suppress(customer_ids)
        self._remember(set(customer_ids))
        return added

    def _remember(self, erased: set[str]) -> None:
        # A new set, never one changed in place: readers in other threads keep theirs.
        with self._lock:
            self._known = self._known | erased


def pseudonyms_in(raw_events: Iterable[Any]) -> set[str]:
    """The well-formed customer ids of a raw ``/events`` batch (the rest fail validation
    and are never stored, so they need no check)."""
    found = set()
    for event in raw_events:
        if isinstance(event, dict):
            customer = event.get("customer_id")
            if isinstance(customer, str):
                customer = customer.strip()  # as the event model reads it
                if _PSEUDONYM.fullmatch(customer):
                    found.add(customer)
    return found
