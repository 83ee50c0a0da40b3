"""Consent changes: a customer withdraws (or grants) consent to personalisation.

``POST /admin/consent`` and ``segrec consent`` both call :func:`change_consent`, which

- writes the customer's ``customer_profile`` row back to the online store with the new
  ``consent_personalisation``: every pod reads the same store, so the very next request
  anywhere answers without personalisation (``fallback: no_consent``) or with it again;
- appends the change to the consent ledger (``Settings.consent_file``, keyed pseudonyms
  only), which the next feature build applies over the clean customers table
  (:func:`training.features.inputs.load_inputs`): segments, churn/CLV and the online
  store follow the newest change, whatever the last import said.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segrec.durable_append import append_line
from segrec.erasure import ErasureError, customer_pseudonym
from segrec.settings import Settings

PROFILE_VIEW = "customer_profile"
_LOCK = threading.Lock()


class ConsentError(ValueError):
    """The change cannot be made (says why); nothing was changed."""


@dataclass(frozen=True)
class ConsentChange:
    customer_id: str  # the keyed pseudonym
    personalisation: bool
    online_updated: bool  # False: the online store has no profile for the customer

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "personalisation": self.personalisation,
            "online_updated": self.online_updated,
        }


class ConsentLedger:
    """Consent changes, one JSON line each, appended and fsync-ed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, customer_id: str, personalisation: bool, ts: dt.datetime) -> None:
        line = json.dumps(
            {
                "ts": ts.astimezone(dt.UTC).isoformat(),
                "customer_id": customer_id,
                "personalisation": personalisation,
            }
        )
        append_line(self.path, line)

    def latest(self) -> dict[str, bool]:
        """The newest change per customer (file order: appends are in time order)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        latest: dict[str, bool] = {}
        for line in lines:
            try:
                record = json.loads(line)
                latest[str(record["customer_id"])] = bool(record["personalisation"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a crash: the change before it stands
        return latest


def apply_consent(customers: Any, changes: Mapping[str, bool]) -> Any:
    """``customers`` (a clean customers table) with ``consent_personalisation`` set from
    the ledger's newest ``changes``."""
    if not changes or customers.empty:
        return customers
    override = customers["customer_id"].astype(str).map(changes)
    changed = override.notna()
    if not changed.any():
        return customers
    customers = customers.copy()
    customers.loc[changed, "consent_personalisation"] = override[changed].astype(bool)
    return customers


def change_consent(
    settings: Settings,
    customer: str,
    personalisation: bool,
    *,
    online_store: Any | None = None,
) -> ConsentChange:
    """Record ``customer``'s (pseudonym or raw id) consent to personalisation and apply it
    to the online store at once."""
    try:
        pseudonym = customer_pseudonym(customer, settings)
    except ErasureError as error:
        raise ConsentError(str(error)) from error
    if online_store is None:
        from segrec.feature_store import open_store

        online_store = open_store(settings)
    now = dt.datetime.now(dt.UTC)
    with _LOCK:
        ConsentLedger(settings.consent_file).append(pseudonym, personalisation, now)
        updated = _write_profile(online_store, pseudonym, personalisation, now)
    return ConsentChange(pseudonym, personalisation, updated)


def _write_profile(store: Any, customer_id: str, personalisation: bool, now: dt.datetime) -> bool:
    """Rewrite the customer's profile row with the new flag; False when there is none."""
    import pandas as pd

    view = store.get_feature_view(PROFILE_VIEW)
    names = [field.name for field in view.features]
    row = store.get_online_features(
        features=[f"{PROFILE_VIEW}:{name}" for name in names],
        entity_rows=[{"customer_id": customer_id}],
    ).to_dict()
    if all(row[name][0] is None for name in names):
        return False  # unknown online: nothing personal is served for them anyway
    frame = pd.DataFrame({name: [row[name][0]] for name in names})
    frame["consent_personalisation"] = personalisation
    frame["customer_id"] = customer_id
    # Now, not the snapshot's time: stores keep the newest write per entity (Redis skips
    # an older one), and a profile's ttl is two years, so it is not stale either.
    frame["event_timestamp"] = pd.Timestamp(now)
    store.write_to_online_store(PROFILE_VIEW, frame)
    return True
