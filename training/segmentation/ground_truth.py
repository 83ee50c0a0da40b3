"""The synthetic generator's planted personas, keyed like the clean data, for scoring
how well segments recover them (only when the clean data came from the generator)."""

from __future__ import annotations

import json

import pandas as pd

from segrec.pseudonym import pseudonymise_many
from segrec.settings import Settings


def planted_personas(settings: Settings) -> pd.Series | None:
    """Persona of each original (non-duplicate) customer by clean pseudonymous id, or None
    when the clean data did not come from the synthetic generator."""
    manifest = settings.clean_dir / "manifest.json"
    if not manifest.exists():
        return None
    source = json.loads(manifest.read_text()).get("source", {})
    truth_path = settings.raw_dir / "synthetic" / "ground_truth.parquet"
    if source.get("format") != "synthetic" or not truth_path.exists():
        return None
    truth = pd.read_parquet(truth_path)
    truth = truth[truth["duplicate_of"].isna()]
    secret = settings.pseudonymisation_secret.get_secret_value()
    ids = pseudonymise_many(truth["raw_customer_id"], secret)
    return pd.Series(truth["persona"].to_numpy(), index=ids, name="persona")
