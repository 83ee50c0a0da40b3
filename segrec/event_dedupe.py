"""Each storefront event counted once, whichever worker or pod receives it (and however
often the storefront retries it) within ``Settings.event_dedupe_ttl_hours``.

An event id is claimed in the shared store (:mod:`segrec.shared_state`: Redis ``SET NX
EX``, SQLite ``INSERT ... ON CONFLICT``) before the event is written; the first claimant
wins and the others see a duplicate. A failed write releases its claims, so the retry
that follows is not a duplicate. Ids are stored as keyed hashes (HMAC with the
pseudonymisation secret): a client's event id may carry anything, and a derived one is a
hash of the customer's event.

In front of the store each worker keeps the ids it claimed itself, in memory, until their
claim expires: a retry to the same worker is a duplicate without a round trip. Only the
store decides that an id is new.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from segrec.settings import Settings
from segrec.shared_state import SharedState, SharedStateUnavailable

logger = logging.getLogger("segrec.event_dedupe")


class EventDedupe:
    """Claims event ids across workers and pods, with a per-worker memory in front.

    Parameters
    ----------
    state
        The shared store.
    secret
        Key of the hashes the store holds instead of event ids.
    ttl_seconds
        How long a claim holds.
    local_ids
        How many claimed ids this worker remembers (0: always ask the store).
    """

    def __init__(
        self,
        state: SharedState,
        secret: str,
        ttl_seconds: float,
        local_ids: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.ttl_seconds = ttl_seconds
        self.local_ids = local_ids
        self._secret = secret.encode()
        self._clock = clock
        self._recent: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()  # claims run in worker threads

    @classmethod
    def from_settings(cls, state: SharedState, settings: Settings) -> EventDedupe:
        return cls(
            state,
            settings.pseudonymisation_secret.get_secret_value(),
            settings.event_dedupe_ttl_hours * 3600,
            settings.event_dedupe_local_ids,
        )

    def key(self, event_id: str) -> str:
        """The stored form of ``event_id``: 128 bits of its keyed hash, in hex."""
        return hmac.new(self._secret, event_id.encode(), hashlib.sha256).hexdigest()[:32]

    def claim(self, event_ids: Iterable[str]) -> set[str]:
        """The ids of ``event_ids`` claimed now: seen nowhere within the ttl. Raises
        ``SharedStateUnavailable`` when the store cannot say (nothing is claimed then)."""
        now = self._clock()
        with self._lock:
            asked = [i for i in dict.fromkeys(event_ids) if not self._remembered(i, now)]
        if not asked:
            return set()
        keys = {self.key(i): i for i in asked}
        won = self.state.claim(list(keys), self.ttl_seconds)
        claimed = {keys[k] for k in won}
        if self.local_ids:
            with self._lock:
                for event_id in asked:  # in call order: the oldest is evicted first
                    if event_id in claimed:
                        self._recent[event_id] = now + self.ttl_seconds
                        self._recent.move_to_end(event_id)
                while len(self._recent) > self.local_ids:
                    self._recent.popitem(last=False)
        return claimed

    def release(self, event_ids: Sequence[str]) -> None:
        """Give up claims whose events were not written, so a retry counts them."""
        with self._lock:
            for event_id in event_ids:
                self._recent.pop(event_id, None)
        try:
            self.state.release([self.key(i) for i in dict.fromkeys(event_ids)])
        except SharedStateUnavailable as error:
            # They stay claimed until the ttl: a retry before then is taken for a duplicate.
            logger.error(
                "%d event claims not released (retries within %.0f h are lost): %s",
                len(event_ids),
                self.ttl_seconds / 3600,
                error,
            )

    def _remembered(self, event_id: str, now: float) -> bool:
        expires = self._recent.get(event_id)
        if expires is None:
            return False
        if expires <= now:
            del self._recent[event_id]
            return False
        return True
