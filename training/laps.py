"""Seconds per step of a pipeline, for the run records and reports."""

from __future__ import annotations

import time


class Laps:
    """``lap(name)`` records the seconds since the previous lap (or the start) under
    ``name``; ``seconds`` holds them in order, rounded to hundredths."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._started, 2)
        self._started = now
