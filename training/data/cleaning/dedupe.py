"""Customer deduplication: exact keys first, then fuzzy matching within blocks.

1. Exact: records whose normalised email is equal are one person.
2. Fuzzy: candidate pairs share a blocking key (full postcode, or surname prefix +
   first initial + birth year); each pair is scored 0-100 as
   ``0.30 * name + 0.35 * email + 0.20 * address + 0.15 * postcode`` (rapidfuzz
   similarities on normalised text, street-type abbreviations expanded). Name and email
   alone are not enough: namesakes with numbered emails in other towns score ~75.
   Pairs at or above the threshold merge unless both birth years, or both genders
   (F/M/X), are known and differ: "Lucas Rossi" and "Lucy Rossi" at one address score
   like a typo but are two people.
   Households (same surname and address, different first name and email) score about
   60-70 and stay apart.
3. Merged records form connected components; each keeps the record that signed up
   first as its survivor, and every other raw id maps onto it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

NAME_WEIGHT, EMAIL_WEIGHT, ADDRESS_WEIGHT, POSTCODE_WEIGHT = 0.30, 0.35, 0.20, 0.15
ADDRESS_WORDS = {
    "st": "street",
    "rd": "road",
    "ave": "avenue",
    "av": "avenue",
    "ln": "lane",
    "cl": "close",
    "wy": "way",
    "dr": "drive",
    "sq": "square",
    "pl": "place",
}


@dataclass
class DedupeResult:
    """Which raw id survives for every raw id, and how the matches were found."""

    survivor: pd.Series  # index: raw id, value: surviving raw id
    exact_merges: int = 0
    fuzzy_merges: int = 0
    candidate_pairs: int = 0
    skipped_blocks: int = 0
    matches: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def merged_ids(self) -> int:
        return int((self.survivor.index != self.survivor.to_numpy()).sum())


KNOWN_GENDERS = ("F", "M", "X")  # missing never conflicts


def _ascii_lower(values: pd.Series) -> pd.Series:
    return (
        values.fillna("")
        .astype(str)
        .map(lambda t: unicodedata.normalize("NFKD", t).encode("ascii", "ignore").decode().lower())
    )


def normalise_name(values: pd.Series) -> pd.Series:
    return _ascii_lower(values).str.replace(r"[^a-z ]+", "", regex=True).str.split().str.join(" ")


def normalise_email(values: pd.Series) -> pd.Series:
    """Lowercase, trimmed, with ``+tag`` sub-addresses removed."""
    email = _ascii_lower(values).str.strip()
    return email.str.replace(r"\+[^@]*@", "@", regex=True)


def normalise_address(values: pd.Series) -> pd.Series:
    words = _ascii_lower(values).str.replace(r"[^a-z0-9 ]+", " ", regex=True).str.split()
    return words.map(lambda ws: " ".join(ADDRESS_WORDS.get(w, w) for w in ws))


def _block_pairs(keys: pd.Series, max_block: int) -> tuple[np.ndarray, np.ndarray, int]:
    """All pairs of positions sharing a non-empty key; blocks over ``max_block`` skipped."""
    frame = pd.DataFrame({"key": keys.to_numpy(), "pos": np.arange(len(keys))})
    frame = frame[frame["key"].notna() & (frame["key"] != "")]
    sizes = frame.groupby("key")["pos"].transform("size")
    skipped = int(frame.loc[sizes > max_block, "key"].nunique())
    frame = frame[(sizes > 1) & (sizes <= max_block)]
    pairs = frame.merge(frame, on="key", suffixes=("_a", "_b"))
    pairs = pairs[pairs["pos_a"] < pairs["pos_b"]]
    return pairs["pos_a"].to_numpy(), pairs["pos_b"].to_numpy(), skipped


def find_duplicates(customers: pd.DataFrame, *, threshold: float, max_block: int) -> DedupeResult:
    """Group the records of one person.

    ``customers`` needs columns ``customer_id`` (unique raw ids), ``name``, ``email``,
    ``address``, ``postcode``, ``birth_year`` (float, NaN when unknown) and
    ``signup_ts`` (for choosing survivors); ``gender`` (standardised M/F/U) is optional.
    """
    n = len(customers)
    ids = customers["customer_id"].to_numpy()
    if n == 0:
        return DedupeResult(survivor=pd.Series(dtype=object))
    name = normalise_name(customers["name"])
    email = normalise_email(customers["email"])
    address = normalise_address(customers["address"])
    birth = customers["birth_year"].to_numpy(dtype=float)

    exact = pd.DataFrame({"email": email.to_numpy(), "pos": np.arange(n)})
    exact = exact[exact["email"] != ""]
    first = exact.groupby("email")["pos"].transform("min")
    exact_a, exact_b = first.to_numpy(), exact["pos"].to_numpy()
    keep = exact_a != exact_b
    exact_a, exact_b = exact_a[keep], exact_b[keep]

    surname = name.str.split().str[-1].fillna("")
    initial = name.str[:1]
    postcode = customers["postcode"].fillna("").astype(str).str.upper().str.replace(" ", "")
    person_key = surname.str[:4] + "|" + initial + "|" + pd.Series(birth).astype(str).to_numpy()
    pairs_a, pairs_b, skipped = [], [], 0
    for key in (postcode, person_key.where(surname != "")):
        a, b, s = _block_pairs(key, max_block)
        pairs_a.append(a)
        pairs_b.append(b)
        skipped += s
    cand = pd.DataFrame({"a": np.concatenate(pairs_a), "b": np.concatenate(pairs_b)})
    cand = cand.drop_duplicates(ignore_index=True)
    a, b = cand["a"].to_numpy(), cand["b"].to_numpy()

    local = email.str.split("@").str[0].to_numpy()
    scores = (
        (
            NAME_WEIGHT
            * process.cpdist(name.to_numpy()[a], name.to_numpy()[b], scorer=fuzz.token_sort_ratio)
            + EMAIL_WEIGHT * process.cpdist(local[a], local[b], scorer=fuzz.ratio)
            + ADDRESS_WEIGHT
            * process.cpdist(address.to_numpy()[a], address.to_numpy()[b], scorer=fuzz.ratio)
            + POSTCODE_WEIGHT
            * process.cpdist(postcode.to_numpy()[a], postcode.to_numpy()[b], scorer=fuzz.ratio)
        )
        if len(a)
        else np.zeros(0)
    )
    birth_conflict = ~np.isnan(birth[a]) & ~np.isnan(birth[b]) & (birth[a] != birth[b])
    if "gender" in customers:
        gender = customers["gender"].where(customers["gender"].isin(KNOWN_GENDERS)).to_numpy()
        known = pd.notna(gender[a]) & pd.notna(gender[b])
        gender_conflict = known & (gender[a] != gender[b])
    else:
        gender_conflict = np.zeros(len(a), dtype=bool)
    fuzzy = (scores >= threshold) & ~birth_conflict & ~gender_conflict
    fa, fb = a[fuzzy], b[fuzzy]

    edges_a = np.concatenate([exact_a, fa])
    edges_b = np.concatenate([exact_b, fb])
    graph = coo_matrix((np.ones(len(edges_a)), (edges_a, edges_b)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    signup = pd.to_datetime(customers["signup_ts"], utc=True).to_numpy()
    order = pd.DataFrame(
        {"component": component, "signup": signup, "pos": np.arange(n)}
    ).sort_values(["component", "signup", "pos"], na_position="last")
    leader = order.groupby("component")["pos"].first()
    survivor = pd.Series(ids[leader.loc[component].to_numpy()], index=ids)

    matches = pd.DataFrame(
        {
            "a": ids[edges_a],
            "b": ids[edges_b],
            "method": ["exact_email"] * len(exact_a) + ["fuzzy"] * len(fa),
            "score": np.concatenate([np.full(len(exact_a), 100.0), scores[fuzzy]]),
        }
    )
    return DedupeResult(
        survivor=survivor,
        exact_merges=len(exact_a),
        fuzzy_merges=len(fa),
        candidate_pairs=len(a),
        skipped_blocks=skipped,
        matches=matches,
    )
