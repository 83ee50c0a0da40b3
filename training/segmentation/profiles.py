"""Segment profiles (size, centre in original units, distinguishing features) and names.

Names come from deterministic rules over a profile, never from a cluster's number, so the
same kind of customers gets the same name whatever id K-Means gave them. Rules, first
match wins (z = how far the segment's mean lies from everyone's, in standard deviations
of the transformed feature; a rule whose feature is not segmented on is skipped):

1. "New customers": median tenure at most ``new_days`` (60).
2. Median days since the last event above ``lapsed_days`` (120): "At-risk big spenders"
   when z(monetary_total) >= 0.5, else "Lapsed customers".
3. "Loyal high-value": z(monetary_total) >= 0.75 and z(repeat_view_share) or
   z(interaction_rate_30d) >= 0.5.
4. "Bargain hunters": z(discount_affinity) >= 0.75 or z(price_band_low_share) >= 0.75.
5. "Trend followers": z(novelty_share) >= 0.75.
6. "Premium shoppers": z(price_band_high_share) >= 0.75.
7. "Occasional shoppers": z(interaction_rate_30d) <= -0.5.
8. "Regular customers" otherwise.

When two segments earn the same name, the larger keeps it and the others add their most
distinguishing feature, e.g. "Occasional shoppers (high age)".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from segrec.lifecycle import LifecycleRules

STRONG = 0.75
MODERATE = 0.5


@dataclass(frozen=True)
class SegmentProfile:
    label: int  # position in the fitted model
    size: int
    share: float
    median: dict[str, float]
    mean: dict[str, float]
    z: dict[str, float]
    distinguishing: list[str]  # e.g. "high discount_affinity (z=+2.1)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "share": self.share,
            "median": self.median,
            "mean": self.mean,
            "z": self.z,
            "distinguishing": self.distinguishing,
        }


def profile_segments(
    frame: pd.DataFrame,
    labels: np.ndarray,
    features: tuple[str, ...],
    log_features: tuple[str, ...],
    n_segments: int,
    top: int = 3,
) -> list[SegmentProfile]:
    """One profile per segment label 0..n_segments-1 over the raw ``features``."""
    raw = frame[list(features)].astype(np.float64)
    transformed = raw.copy()
    for name in log_features:
        if name in transformed:
            transformed[name] = np.log1p(transformed[name].clip(lower=0))
    overall_mean = transformed.mean()
    overall_std = transformed.std(ddof=0).replace(0, 1.0)
    profiles = []
    for label in range(n_segments):
        members = labels == label
        z = ((transformed[members].mean() - overall_mean) / overall_std).fillna(0.0)
        strongest = z.abs().sort_values(ascending=False, kind="stable").index[:top]
        profiles.append(
            SegmentProfile(
                label=label,
                size=int(members.sum()),
                share=round(float(members.mean()), 4),
                median={k: _round(v) for k, v in raw[members].median().items()},
                mean={k: _round(v) for k, v in raw[members].mean().items()},
                z={k: round(float(v), 3) for k, v in z.items()},
                distinguishing=[
                    f"{'high' if z[name] > 0 else 'low'} {name} (z={z[name]:+.1f})"
                    for name in strongest
                ],
            )
        )
    return profiles


def _round(value: Any) -> float:
    return round(float(value), 3) if pd.notna(value) else float("nan")


def base_name(profile: SegmentProfile, rules: LifecycleRules) -> str:
    """The rule-derived name of one profile (before de-duplication)."""
    z, median = profile.z, profile.median

    def above(feature: str, limit: float) -> bool:
        return feature in z and z[feature] >= limit

    tenure = median.get("tenure_days", float("nan"))
    idle = median.get("days_since_last_event", float("nan"))
    if tenure <= rules.new_days:
        return "New customers"
    if idle > rules.lapsed_days:
        return "At-risk big spenders" if above("monetary_total", MODERATE) else "Lapsed customers"
    if above("monetary_total", STRONG) and (
        above("repeat_view_share", MODERATE) or above("interaction_rate_30d", MODERATE)
    ):
        return "Loyal high-value"
    if above("discount_affinity", STRONG) or above("price_band_low_share", STRONG):
        return "Bargain hunters"
    if above("novelty_share", STRONG):
        return "Trend followers"
    if above("price_band_high_share", STRONG):
        return "Premium shoppers"
    if "interaction_rate_30d" in z and z["interaction_rate_30d"] <= -MODERATE:
        return "Occasional shoppers"
    return "Regular customers"


def name_segments(profiles: list[SegmentProfile], rules: LifecycleRules | None = None) -> list[str]:
    """Unique names for the profiles, in profile order."""
    rules = rules or LifecycleRules()
    names = [base_name(p, rules) for p in profiles]
    final = list(names)
    for name in set(names):
        holders = [i for i, n in enumerate(names) if n == name]
        if len(holders) < 2:
            continue
        holders.sort(key=lambda i: (-profiles[i].size, i))
        for i in holders[1:]:
            feature = max(profiles[i].z, key=lambda f: (abs(profiles[i].z[f]), f))
            direction = "high" if profiles[i].z[feature] > 0 else "low"
            candidate = f"{name} ({direction} {feature.replace('_', ' ')})"
            suffix = 2
            while candidate in final:
                candidate = f"{name} ({direction} {feature.replace('_', ' ')} {suffix})"
                suffix += 1
            final[i] = candidate
    return final
