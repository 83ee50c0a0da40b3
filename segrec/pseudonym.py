"""Keyed pseudonyms for customer identifiers.

Training writes them and serving computes them for incoming requests, so both sides must
use this one function with the same secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

PSEUDONYM_HEX_CHARS = 16  # 64 bits: collision odds ~1e-7 at ten million customers
# What a customer pseudonym looks like, in clean tables and in storefront events alike.
CUSTOMER_ID_PATTERN = rf"^c_[0-9a-f]{{{PSEUDONYM_HEX_CHARS}}}$"


# An integer id that went through a float column (``17850.0``): cleaning strips the ``.0``.
FLOAT_ID = r"^\d+\.0+$"


def canonical_raw_id(raw_id: str) -> str:
    """``raw_id`` as cleaning sees it before pseudonymising (stripped, ``17850.0`` ->
    ``17850``), for code that must find a raw id the way cleaning would."""
    text = raw_id.strip()
    return text.split(".", 1)[0] if re.match(FLOAT_ID, text) else text


def pseudonymise(raw_id: str, secret: str, *, kind: str = "customer") -> str:
    """Return the keyed hash of ``raw_id``.

    Examples
    --------
    >>> pseudonymise("17850", "k")
    'c_f856dbc226b67cc8'
    """
    digest = hmac.new(secret.encode(), f"{kind}:{raw_id}".encode(), hashlib.sha256).hexdigest()
    return f"{kind[0]}_{digest[:PSEUDONYM_HEX_CHARS]}"


def pseudonymise_many(raw_ids: Iterable[str], secret: str, *, kind: str = "customer") -> list[str]:
    """Pseudonymise many ids, hashing each distinct id once."""
    cache: dict[str, str] = {}
    out = []
    for raw in raw_ids:
        value = cache.get(raw)
        if value is None:
            value = cache[raw] = pseudonymise(raw, secret, kind=kind)
        out.append(value)
    return out
