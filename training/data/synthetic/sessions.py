"""Shopping sessions: views, add-to-cart, abandoned carts, purchases and ratings.

Simulated for a block of customers at a time, fully vectorised, so memory stays bounded
by the block however large the population.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.data.synthetic.catalogue import CATEGORIES, N_BANDS, Catalogue, GroupSampler
from training.data.synthetic.personas import PERSONAS
from training.data.synthetic.population import N_STAPLES, Population

MONTH_S = 30 * 86400
TREND_WINDOW_S = 45 * 86400
P_RATE = 0.12
P_REMOVE_ABANDONED = 0.25
OUT_OF_STOCK_CART_FACTOR = 0.2


def _persona_array(field: str) -> np.ndarray:
    return np.array([getattr(p, field) for p in PERSONAS], dtype=float)


class SessionSimulator:
    """Turns customers into event rows; ids continue across blocks."""

    def __init__(self, pop: Population, catalogue: Catalogue, sampler: GroupSampler) -> None:
        self.pop = pop
        self.catalogue = catalogue
        self.sampler = sampler
        self.launch_order = np.argsort(catalogue.launch, kind="stable")
        self.launch_sorted = catalogue.launch[self.launch_order].astype(np.int64)
        self.next_event = 1
        self.next_session = 1
        self.end_s = int(pop.active_end.max().astype(np.int64))

    def simulate(self, customers: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
        """Events of ``customers`` (positions) with typed columns, in time order per session."""
        pop, cat = self.pop, self.catalogue
        persona = pop.persona[customers]
        start_s = pop.active_start[customers].astype(np.int64)
        end_s = pop.active_end[customers].astype(np.int64)
        months = (end_s - start_s) / MONTH_S
        rate = _persona_array("sessions_per_month")[persona] * pop.activity[customers]
        n_sessions = rng.poisson(rate * months)

        sess_cust = np.repeat(customers, n_sessions)
        sess_persona = pop.persona[sess_cust]
        sess_start = np.repeat(start_s, n_sessions)
        sess_span = np.repeat(end_s - start_s, n_sessions)
        sess_ts = sess_start + (rng.random(len(sess_cust)) * sess_span).astype(np.int64)
        n_views = 1 + rng.poisson(_persona_array("views_per_session")[sess_persona])

        view_sess = np.repeat(np.arange(len(sess_cust)), n_views)
        first_view = np.repeat(np.cumsum(n_views) - n_views, n_views)
        position = np.arange(len(view_sess)) - first_view
        cust = sess_cust[view_sess]
        pers = pop.persona[cust]
        ts = sess_ts[view_sess] + position * 90 + rng.integers(0, 60, len(view_sess))
        product = self._choose_products(cust, pers, ts, rng)

        in_stock = cat.in_stock[product]
        p_cart = _persona_array("p_cart")[pers] * np.where(in_stock, 1.0, OUT_OF_STOCK_CART_FACTOR)
        carted = rng.random(len(product)) < p_cart
        bought = carted & (rng.random(len(product)) < _persona_array("p_buy")[pers])
        removed = carted & ~bought & (rng.random(len(product)) < P_REMOVE_ABANDONED)
        quantity = 1 + rng.poisson(_persona_array("mean_extra_quantity")[pers])
        discounted = rng.random(len(product)) < _persona_array("p_discount")[pers]
        discount = np.where(discounted, rng.uniform(0.1, 0.4, len(product)), 0.0)
        paid = np.round(cat.price[product] * (1 - discount), 2)
        rated = bought & (rng.random(len(product)) < P_RATE)
        rating = self._ratings(cust, product, pers, rng)
        rating_ts = ts + rng.integers(2, 20, len(ts)) * 86400
        rated &= rating_ts <= self.end_s

        session_ids = self.next_session + view_sess
        self.next_session += len(sess_cust)
        parts = [
            (np.ones(len(product), bool), "view", ts, 1, np.nan, np.nan),
            (carted, "add_to_cart", ts + 20, quantity, cat.price[product], np.nan),
            (removed, "remove_from_cart", ts + 45, quantity, cat.price[product], np.nan),
            (bought, "purchase", ts + 80, quantity, paid, quantity * paid),
            (rated, "rating", rating_ts, 1, np.nan, rating),
        ]
        frames = []
        for mask, kind, when, qty, price, value in parts:
            frames.append(
                pd.DataFrame(
                    {
                        "customer": cust[mask],
                        "product": product[mask],
                        "ts": when[mask],
                        "type": kind,
                        "quantity": np.broadcast_to(qty, mask.shape)[mask],
                        "price": np.broadcast_to(price, mask.shape)[mask],
                        "value": np.broadcast_to(value, mask.shape)[mask],
                        "session": session_ids[mask],
                    }
                )
            )
        events = pd.concat(frames, ignore_index=True)
        events = events.sort_values(["session", "ts"], kind="stable", ignore_index=True)
        events.loc[events["type"] == "rating", "session"] = -1
        events.insert(0, "event", np.arange(self.next_event, self.next_event + len(events)))
        self.next_event += len(events)
        return events

    def _choose_products(
        self, cust: np.ndarray, pers: np.ndarray, ts: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        pop, cat = self.pop, self.catalogue
        n = len(cust)
        cdf = pop.category_cdf[cust]
        category = np.minimum((rng.random((n, 1)) > cdf).sum(1), len(CATEGORIES) - 1)
        band_cdf = np.cumsum(np.array([p.price_band_probs for p in PERSONAS])[pers], axis=1)
        band = np.minimum((rng.random((n, 1)) > band_cdf).sum(1), N_BANDS - 1)
        product = self.sampler.sample(category * N_BANDS + band, rng)

        mode = rng.random(n)
        p_repeat = _persona_array("p_repeat")[pers]
        p_trend = _persona_array("p_trend")[pers]
        repeat = mode < p_repeat
        product[repeat] = pop.staples[cust[repeat], rng.integers(0, N_STAPLES, repeat.sum())]

        trend = ~repeat & (mode < p_repeat + p_trend)
        lo = np.searchsorted(self.launch_sorted, ts[trend] - TREND_WINDOW_S)
        hi = np.searchsorted(self.launch_sorted, ts[trend], side="right")
        has_new = hi > lo
        pick = lo + (rng.random(len(lo)) * (hi - lo)).astype(np.int64)
        trend_idx = np.flatnonzero(trend)[has_new]
        product[trend_idx] = self.launch_order[pick[has_new]]

        # Nobody views a product before it launches: fall back to the group's oldest hit.
        not_yet = cat.launch[product].astype(np.int64) > ts
        if not_yet.any():
            groups = cat.category[product[not_yet]] * N_BANDS + cat.band[product[not_yet]]
            product[not_yet] = self._group_leaders()[groups]
        return product

    def _group_leaders(self) -> np.ndarray:
        """The oldest product of each (category, band) group (groups are never empty)."""
        if not hasattr(self, "_leaders"):
            cat = self.catalogue
            group = cat.category * N_BANDS + cat.band
            leaders = np.full(len(CATEGORIES) * N_BANDS, int(np.argmin(cat.launch)))
            for g in np.unique(group):
                members = np.flatnonzero(group == g)
                leaders[g] = members[np.argmin(cat.launch[members])]
            self._leaders = leaders
        return self._leaders

    def _ratings(
        self, cust: np.ndarray, product: np.ndarray, pers: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """1-5 stars: higher for the customer's favourite categories and price band."""
        cdf = self.pop.category_cdf[cust]
        pdf = np.diff(np.concatenate([np.zeros((len(cust), 1)), cdf], axis=1), axis=1)
        affinity = pdf[np.arange(len(cust)), self.catalogue.category[product]]
        band_pref = np.array([p.price_band_probs for p in PERSONAS])[pers]
        band_fit = band_pref[np.arange(len(cust)), self.catalogue.band[product]]
        score = 2.6 + 3.0 * affinity + 1.2 * band_fit + rng.normal(0, 0.6, len(cust))
        return np.clip(np.round(score), 1, 5)
