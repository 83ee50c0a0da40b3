"""Which events of a ``POST /events`` call get written: valid, not of an erased customer
(the shared suppression list, asked per call), and not seen before by any worker or pod
(event-id claims). Blocking: both ask the shared store, so the service runs
:meth:`EventAdmission.admit` in a worker thread.

When the store cannot answer, :class:`~segrec.shared_state.SharedStateUnavailable` goes up
and nothing is written: the service answers 503 with ``Retry-After`` (fails closed), since
accepting would store events of customers erased on another pod.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Any

from segrec.event_dedupe import EventDedupe
from segrec.live_session import LiveEvent
from segrec.suppression import SharedSuppression, pseudonyms_in
from serving.events import Rejection

# validate_events bound to the service's catalogue, clock and limits: (raw, erased).
Validate = Callable[[Sequence[Any], Container[str]], tuple[list[LiveEvent], list[Rejection]]]


@dataclass(frozen=True)
class Admission:
    fresh: list[LiveEvent]  # to write, in batch order; their ids are claimed
    duplicates: int
    rejected: list[Rejection]


class EventAdmission:
    def __init__(self, suppression: SharedSuppression, dedupe: EventDedupe) -> None:
        self.suppression = suppression
        self.dedupe = dedupe

    def admit(self, raw_events: Sequence[Any], validate: Validate) -> Admission:
        erased = self.suppression.erased(pseudonyms_in(raw_events))
        accepted, rejected = validate(raw_events, erased)
        claimed = self.dedupe.claim(e.event_id for e in accepted)
        fresh = []
        for event in accepted:  # one by one: an event repeated in the batch counts once
            if event.event_id in claimed:
                claimed.discard(event.event_id)
                fresh.append(event)
        return Admission(fresh, len(accepted) - len(fresh), rejected)

    def release(self, events: Sequence[LiveEvent]) -> None:
        """The write of ``events`` failed: their retry must not count as a duplicate."""
        self.dedupe.release([e.event_id for e in events])
