"""The planted customer personas the rest of the pipeline has to recover.

Each persona differs in category focus, price band, visit rate, funnel conversion,
repeat buying, discount appetite and activity window, so segmentation and evaluation
can check what they find against the truth written to ``ground_truth.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Persona:
    name: str
    share: float
    sessions_per_month: float
    category_focus: float  # Dirichlet concentration: low = few favourite categories
    price_band_probs: tuple[float, float, float]  # low, mid, high
    views_per_session: float  # mean extra views beyond the first
    p_cart: float
    p_buy: float  # purchase given cart; the rest are abandoned carts
    p_repeat: float  # share of views drawn from the customer's own staples
    p_trend: float  # share of views drawn from products launched in the last weeks
    p_discount: float  # share of purchases made at a promotional price
    mean_extra_quantity: float
    birth_year_mean: float
    signup: str  # "early" (before the window), "any", "recent" (last 60 days)
    lapsed: bool  # activity stops 180-360 days before the end


PERSONAS: tuple[Persona, ...] = (
    Persona(
        "loyal_high_value",
        0.10,
        0.6,
        0.3,
        (0.1, 0.3, 0.6),
        2.0,
        0.40,
        0.75,
        0.45,
        0.05,
        0.10,
        0.6,
        1974,
        "early",
        False,
    ),
    Persona(
        "bargain_hunter",
        0.20,
        0.45,
        0.8,
        (0.75, 0.2, 0.05),
        4.0,
        0.30,
        0.55,
        0.25,
        0.05,
        0.70,
        1.5,
        1986,
        "any",
        False,
    ),
    Persona(
        "trend_follower",
        0.15,
        0.5,
        0.6,
        (0.15, 0.45, 0.4),
        2.5,
        0.25,
        0.55,
        0.05,
        0.60,
        0.10,
        0.2,
        1998,
        "any",
        False,
    ),
    Persona(
        "occasional",
        0.30,
        0.25,
        1.5,
        (0.35, 0.45, 0.2),
        1.5,
        0.15,
        0.50,
        0.05,
        0.05,
        0.20,
        0.2,
        1982,
        "any",
        False,
    ),
    Persona(
        "new",
        0.12,
        1.0,
        1.0,
        (0.35, 0.45, 0.2),
        2.0,
        0.20,
        0.50,
        0.05,
        0.10,
        0.20,
        0.3,
        1992,
        "recent",
        False,
    ),
    Persona(
        "lapsed",
        0.13,
        1.5,
        0.8,
        (0.35, 0.45, 0.2),
        2.0,
        0.20,
        0.55,
        0.20,
        0.05,
        0.20,
        0.4,
        1980,
        "early",
        True,
    ),
)

PERSONA_NAMES = tuple(p.name for p in PERSONAS)
