"""Synthetic customers: personas, activity windows, tastes, demographics and PII.

Also plants the two things duplicate detection must tell apart: true duplicates (one
person registered twice, with typos) and households (different people at one address
with one surname).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.synthetic.catalogue import CATEGORIES, N_BANDS, Catalogue, GroupSampler
from training.data.synthetic.personas import PERSONAS
from training.data.synthetic.vocabulary import (
    CITIES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    OCCUPATIONS,
    STREET_ABBREVIATIONS,
    STREET_SUFFIXES,
    STREETS,
)

DAY = np.timedelta64(86400, "s")
N_STAPLES = 5
DUPLICATE_RATE = 0.03
HOUSEHOLD_RATE = 0.02
# Spread of visit rates within a persona (lognormal sigma): people differ, personas still show.
ACTIVITY_SIGMA = 0.3
# A lapsed customer's activity stops this many days before the end (low, high).
LAPSED_STOP_DAYS = (180, 360)


@dataclass
class Population:
    """Everything about the customers, as arrays by customer position."""

    raw_ids: np.ndarray
    persona: np.ndarray
    signup: np.ndarray  # datetime64[s]
    active_start: np.ndarray
    active_end: np.ndarray
    activity: np.ndarray  # per-customer rate multiplier
    category_cdf: np.ndarray  # (n, n_categories) cumulative preference
    staples: np.ndarray  # (n, N_STAPLES) product positions bought again and again
    birth_year: np.ndarray
    gender: np.ndarray
    city: np.ndarray  # index into CITIES
    first_name: np.ndarray
    last_name: np.ndarray
    email: np.ndarray
    address: np.ndarray
    postcode: np.ndarray
    phone: np.ndarray
    occupation: np.ndarray
    consent_personalisation: np.ndarray
    consent_marketing: np.ndarray
    duplicate_of: np.ndarray  # position of the original, -1 for originals
    household_of: np.ndarray  # position of the household's first member, -1 otherwise

    @property
    def n(self) -> int:
        return len(self.raw_ids)


def _typo(text: str, rng: np.random.Generator) -> str:
    """One realistic keying error: swap, drop, double or replace a letter."""
    if len(text) < 3:
        return text + text[-1:]
    i = int(rng.integers(1, len(text) - 1))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    if kind == 2:
        return text[:i] + text[i] + text[i:]
    return text[:i] + "aeiou"[int(rng.integers(0, 5))] + text[i + 1 :]


def make_population(
    n_customers: int,
    catalogue: Catalogue,
    sampler: GroupSampler,
    rng: np.random.Generator,
    start: np.datetime64,
    end: np.datetime64,
) -> Population:
    """Draw ``n_customers`` people, then add planted duplicates of some of them."""
    n = n_customers
    shares = np.array([p.share for p in PERSONAS])
    persona = rng.choice(len(PERSONAS), size=n, p=shares / shares.sum())
    span_days = int((end - start) / DAY)

    signup_kind = np.array([p.signup for p in PERSONAS])[persona]
    days_before_end = np.select(
        [signup_kind == "early", signup_kind == "recent"],
        [rng.integers(span_days + 30, span_days + 3 * 365, n), rng.integers(1, 60, n)],
        rng.integers(60, span_days + 2 * 365, n),
    )
    signup = end - days_before_end * DAY - rng.integers(0, 86400, n).astype("timedelta64[s]")
    active_start = np.maximum(signup, start)
    lapsed = np.array([p.lapsed for p in PERSONAS])[persona]
    active_end = np.where(
        lapsed, end - rng.integers(*LAPSED_STOP_DAYS, n) * DAY, np.full(n, end)
    ).astype("datetime64[s]")
    active_end = np.maximum(active_end, active_start + DAY)
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, n)

    focus = np.array([p.category_focus for p in PERSONAS])[persona]
    prefs = rng.gamma(focus[:, None], 1.0, (n, len(CATEGORIES))) + 1e-9
    prefs /= prefs.sum(1, keepdims=True)
    category_cdf = np.cumsum(prefs, axis=1)

    staple_cat = (rng.random((n * N_STAPLES, 1)) > np.repeat(category_cdf, N_STAPLES, 0)).sum(1)
    staple_cat = np.minimum(staple_cat, len(CATEGORIES) - 1)
    bands = np.array([p.price_band_probs for p in PERSONAS])[np.repeat(persona, N_STAPLES)]
    staple_band = (rng.random((n * N_STAPLES, 1)) > np.cumsum(bands, 1)).sum(1)
    staples = sampler.sample(staple_cat * N_BANDS + np.minimum(staple_band, 2), rng)
    # Staples are long-standing products, so a repeat purchase never predates a launch.
    too_new = catalogue.launch[staples] > start
    staples[too_new] = sampler.sample(
        catalogue.category[staples[too_new]] * N_BANDS + catalogue.band[staples[too_new]], rng
    )
    staples = staples.reshape(n, N_STAPLES)

    birth_mean = np.array([p.birth_year_mean for p in PERSONAS])[persona]
    birth_year = np.clip(np.round(rng.normal(birth_mean, 7)), 1935, 2008).astype(int)
    gender = rng.choice(np.array(["F", "M", "X"]), size=n, p=[0.52, 0.46, 0.02])
    city = rng.integers(0, len(CITIES), n)
    first = rng.choice(np.array(FIRST_NAMES), n)
    last = rng.choice(np.array(LAST_NAMES), n)
    street = rng.choice(np.array(STREETS), n)
    suffix = rng.choice(np.array(STREET_SUFFIXES), n)
    house = rng.integers(1, 300, n)
    postcode = np.array(
        [
            f"{CITIES[c][2]}{d:02d} {e}{chr(65 + f)}{chr(65 + g)}"
            for c, d, e, f, g in zip(
                city,
                rng.integers(1, 60, n),
                rng.integers(1, 9, n),
                rng.integers(0, 26, n),
                rng.integers(0, 26, n),
                strict=True,
            )
        ]
    )
    household_of = np.full(n, -1)
    members = np.flatnonzero(rng.random(n) < HOUSEHOLD_RATE)
    members = members[members > 0]
    heads = (members * rng.random(len(members))).astype(int)
    household_of[members] = heads
    last[members] = last[heads]
    street[members], suffix[members], house[members] = street[heads], suffix[heads], house[heads]
    postcode[members], city[members] = postcode[heads], city[heads]
    address = np.array(
        [f"{h} {s} {x}" for h, s, x in zip(house, street, suffix, strict=True)], dtype=object
    )
    # Unique per person, as real addresses are: shared emails would be merged as one person.
    email_number = rng.permutation(n) + 1
    domain = rng.choice(np.array(EMAIL_DOMAINS), n)
    email = np.array(
        [
            f"{f.lower()}.{ln.lower().replace(' ', '').replace(chr(39), '')}{k}@{d}"
            for f, ln, k, d in zip(first, last, email_number, domain, strict=True)
        ],
        dtype=object,
    )
    phone = np.array([f"+44 7{x:09d}" for x in rng.integers(0, 10**9, n)], dtype=object)
    occupation = rng.choice(np.array(OCCUPATIONS), n)
    consent_p = rng.random(n) > 0.08
    consent_m = rng.random(n) > 0.3

    population = Population(
        raw_ids=np.array([str(100001 + i) for i in range(n)], dtype=object),
        persona=persona,
        signup=signup.astype("datetime64[s]"),
        active_start=active_start.astype("datetime64[s]"),
        active_end=active_end,
        activity=activity,
        category_cdf=category_cdf,
        staples=staples,
        birth_year=birth_year,
        gender=gender,
        city=city,
        first_name=first.astype(object),
        last_name=last.astype(object),
        email=email,
        address=address,
        postcode=postcode.astype(object),
        phone=phone,
        occupation=occupation.astype(object),
        consent_personalisation=consent_p,
        consent_marketing=consent_m,
        duplicate_of=np.full(n, -1),
        household_of=household_of,
    )
    return _add_duplicates(population, rng, end)


def _add_duplicates(pop: Population, rng: np.random.Generator, end: np.datetime64) -> Population:
    """Re-register some customers under a new id with typos in name, email and address."""
    n = pop.n
    originals = np.flatnonzero(rng.random(n) < DUPLICATE_RATE)
    k = len(originals)
    first = pop.first_name[originals].copy()
    last = pop.last_name[originals].copy()
    email = pop.email[originals].copy()
    address = pop.address[originals].copy()
    for j in range(k):
        change = rng.random(4)
        if change[0] < 0.5:
            first[j] = _typo(first[j], rng)
        elif change[0] < 0.6:
            first[j] = first[j].upper()
        if change[1] < 0.35:
            last[j] = _typo(last[j], rng)
        local, domain = email[j].split("@")
        if change[2] < 0.45:
            email[j] = f"{_typo(local, rng)}@{domain}"
        elif change[2] < 0.75:
            email[j] = email[j].upper()  # the same key once normalised
        if change[3] < 0.5:
            number, rest = str(address[j]).split(" ", 1)
            street, suffix = rest.rsplit(" ", 1)
            address[j] = f"{number} {street} {STREET_ABBREVIATIONS.get(suffix, suffix)}"
    lag = rng.integers(1, 200, k) * DAY
    signup = np.minimum(pop.signup[originals] + lag, end - DAY)

    def extend(values: np.ndarray, added: np.ndarray) -> np.ndarray:
        return np.concatenate([values, added])

    return Population(
        raw_ids=extend(pop.raw_ids, np.array([str(100001 + n + j) for j in range(k)], object)),
        persona=extend(pop.persona, pop.persona[originals]),
        signup=extend(pop.signup, signup.astype("datetime64[s]")),
        active_start=extend(pop.active_start, np.maximum(signup, pop.active_start[originals])),
        active_end=extend(
            pop.active_end,
            np.maximum(pop.active_end[originals], np.maximum(signup, pop.active_start[originals]))
            + DAY,
        ),
        activity=extend(pop.activity, pop.activity[originals]),
        category_cdf=np.concatenate([pop.category_cdf, pop.category_cdf[originals]]),
        staples=np.concatenate([pop.staples, pop.staples[originals]]),
        birth_year=extend(pop.birth_year, pop.birth_year[originals]),
        gender=extend(pop.gender, pop.gender[originals]),
        city=extend(pop.city, pop.city[originals]),
        first_name=extend(pop.first_name, first),
        last_name=extend(pop.last_name, last),
        email=extend(pop.email, email),
        address=extend(pop.address, address),
        postcode=extend(pop.postcode, pop.postcode[originals]),
        phone=extend(pop.phone, pop.phone[originals]),
        occupation=extend(pop.occupation, pop.occupation[originals]),
        consent_personalisation=extend(
            pop.consent_personalisation, pop.consent_personalisation[originals]
        ),
        consent_marketing=extend(pop.consent_marketing, pop.consent_marketing[originals]),
        duplicate_of=extend(pop.duplicate_of, originals),
        household_of=extend(pop.household_of, np.full(k, -1)),
    )
