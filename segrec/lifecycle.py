"""Lifecycle stages from recency, frequency and tenure: New, Active, Loyal, Lapsed, Churned.

Rules, first match wins (thresholds in :class:`LifecycleRules`):

1. New: signed up at most ``new_days`` (60) ago.
2. Churned: no activity for more than ``churned_days`` (365), or never active and signed
   up more than ``churned_days`` ago.
3. Lapsed: no activity for more than ``lapsed_days`` (120).
4. Loyal: at least ``loyal_orders`` (5) orders and active within ``lapsed_days``.
5. Active: everyone else.

Numpy only, so serving assigns the same stage at request time as training does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAGES = ("New", "Active", "Loyal", "Lapsed", "Churned")


@dataclass(frozen=True)
class LifecycleRules:
    new_days: float = 60.0
    lapsed_days: float = 120.0
    churned_days: float = 365.0
    loyal_orders: int = 5

    def assign(
        self,
        tenure_days: np.ndarray,
        days_since_last_event: np.ndarray,
        frequency: np.ndarray,
    ) -> np.ndarray:
        """Stage names for arrays of customers; NaN ``days_since_last_event`` = never active."""
        tenure = np.asarray(tenure_days, dtype=float)
        idle = np.asarray(days_since_last_event, dtype=float)
        orders = np.asarray(frequency, dtype=float)
        never = np.isnan(idle)
        return np.select(
            [
                tenure <= self.new_days,
                (idle > self.churned_days) | (never & (tenure > self.churned_days)),
                (idle > self.lapsed_days) | never,
                orders >= self.loyal_orders,
            ],
            ["New", "Churned", "Lapsed", "Loyal"],
            default="Active",
        )

    def assign_one(
        self, tenure_days: float, days_since_last_event: float | None, frequency: float
    ) -> str:
        idle = np.nan if days_since_last_event is None else days_since_last_event
        return str(self.assign(np.array([tenure_days]), np.array([idle]), np.array([frequency]))[0])
