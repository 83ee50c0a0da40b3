"""Clean the customers table: parse, standardise, merge duplicates, impute, pseudonymise.

Returns the clean table and the map from every raw customer id (merged ones included)
to its pseudonymous clean id, which the events step uses so no event is lost in a merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from segrec.settings import Settings
from training.data.cleaning.dedupe import find_duplicates
from training.data.cleaning.impute import impute
from training.data.cleaning.parse import (
    clean_text,
    parse_booleans,
    parse_numbers,
    parse_timestamps,
)
from training.data.cleaning.privacy import postcode_area, pseudonymise_ids
from training.data.cleaning.rows import identified_rows
from training.data.cleaning.standardise import standardise_genders
from training.data.quality import QualityReport

DEMOGRAPHICS = ("birth_year", "gender", "city", "postcode", "country", "occupation")
MIN_AGE_YEARS = 10


@dataclass
class CleanCustomers:
    table: pd.DataFrame
    id_map: pd.Series  # index: raw customer id, value: clean customer id


def clean_customers(
    raw: pd.DataFrame,
    first_event: pd.Series,
    report: QualityReport,
    settings: Settings,
    *,
    dayfirst: bool,
    reference_year: int,
) -> CleanCustomers:
    """Clean ``raw`` customers; ``first_event`` is the earliest event time per raw id."""
    quality = report.table("customers")
    frame = identified_rows(raw, "customers", "customer_id", report)
    repeated = frame.duplicated(subset=["customer_id"], keep="first")
    report.set_aside(
        "customers",
        frame[repeated],
        "repeated_customer_id",
        "an earlier row with this customer_id was kept",
    )
    frame = frame[~repeated].reset_index(drop=True)

    for column in ("name", "email", "address", "city", "postcode", "country", "occupation"):
        frame[column] = clean_text(frame[column])
    frame["country"] = frame["country"].str.upper()
    title_case = frame["city"].str.title()
    quality.fix("city_recased", int((frame["city"].notna() & (title_case != frame["city"])).sum()))
    frame["city"] = title_case
    frame["occupation"] = frame["occupation"].str.lower()

    signup, bad = parse_timestamps(frame["signup_ts"], dayfirst=dayfirst)
    quality.fix("signup_ts_unparseable_to_missing", int(bad.sum()))
    frame["signup_ts"] = signup

    gender_text = clean_text(frame["gender"])
    gender = standardise_genders(gender_text)
    quality.fix("gender_respelled", int((gender.notna() & (gender != gender_text)).sum()))
    quality.fix("gender_unrecognised_to_missing", int((gender_text.notna() & gender.isna()).sum()))
    frame["gender"] = gender

    birth, bad = parse_numbers(frame["birth_year"])
    implausible = birth.notna() & (
        (birth < 1900) | (birth > reference_year - MIN_AGE_YEARS) | (birth % 1 != 0)
    )
    quality.fix("birth_year_invalid_to_missing", int((bad | implausible).sum()))
    frame["birth_year"] = birth.where(~implausible)

    for column in ("consent_personalisation", "consent_marketing"):
        consent, _ = parse_booleans(frame[column])
        # No recorded consent is no consent.
        quality.fix(f"{column}_missing_treated_as_denied", int(consent.isna().sum()))
        frame[column] = consent.fillna(False).astype(bool)

    result = find_duplicates(
        frame, threshold=settings.dedup_threshold, max_block=settings.dedup_max_block
    )
    quality.notes["dedup"] = {
        "threshold": settings.dedup_threshold,
        "exact_email_links": result.exact_merges,
        "fuzzy_links": result.fuzzy_merges,
        "candidate_pairs_scored": result.candidate_pairs,
        "blocks_skipped_as_too_large": result.skipped_blocks,
        "records_merged_into_another": result.merged_ids,
    }
    quality.fix("duplicate_customer_merged", result.merged_ids)
    frame["survivor"] = frame["customer_id"].map(result.survivor)
    merged = _merge_groups(frame, quality)

    first_event = first_event.groupby(frame.set_index("customer_id")["survivor"]).min()
    trail = pd.Series("", index=merged.index, dtype=object)
    no_signup = merged["signup_ts"].isna()
    from_events = no_signup & merged["customer_id"].map(first_event).notna()
    merged.loc[from_events, "signup_ts"] = merged.loc[from_events, "customer_id"].map(first_event)
    trail[no_signup] = "signup_ts"
    median_signup = merged["signup_ts"].dropna().median()
    merged.loc[merged["signup_ts"].isna(), "signup_ts"] = median_signup
    quality.imputed["signup_ts"] = {
        "method": "earliest event of the customer, else median signup",
        "count": int(no_signup.sum()),
        "from_events": int(from_events.sum()),
    }
    quality.imputed["birth_year"] = impute(merged, "birth_year", "median", trail, by="country")
    quality.imputed["gender"] = impute(merged, "gender", "constant", trail, constant="U")
    quality.imputed["gender"]["why"] = "U (unknown): a mode would invent genders"
    quality.imputed["country"] = impute(merged, "country", "mode", trail, fallback="unknown")
    quality.imputed["city"] = impute(
        merged, "city", "mode", trail, by="country", fallback="unknown"
    )
    quality.imputed["occupation"] = impute(
        merged, "occupation", "constant", trail, constant="unknown"
    )

    secret = settings.pseudonymisation_secret.get_secret_value()
    clean_ids = pseudonymise_ids(merged["customer_id"], secret)
    survivor_to_clean = pd.Series(clean_ids.to_numpy(), index=merged["customer_id"].to_numpy())
    id_map = frame.set_index("customer_id")["survivor"].map(survivor_to_clean)

    table = pd.DataFrame(
        {
            "customer_id": clean_ids,
            "signup_ts": pd.to_datetime(merged["signup_ts"], utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            "birth_year": merged["birth_year"].round().astype("Int64"),
            "gender": merged["gender"].astype(str),
            "country": merged["country"].astype(str),
            "city": merged["city"].astype(str),
            "postcode_area": postcode_area(merged["postcode"]),
            "occupation": merged["occupation"],
            "consent_personalisation": merged["consent_personalisation"].astype(bool),
            "consent_marketing": merged["consent_marketing"].astype(bool),
            "merged_records": merged["merged_records"].astype("int64"),
            "imputed_columns": trail,
        }
    ).reset_index(drop=True)
    quality.notes["without_personalisation_consent"] = int(
        (~table["consent_personalisation"]).sum()
    )
    quality.rows_out = len(table)
    return CleanCustomers(table=table, id_map=id_map)


def _merge_groups(frame: pd.DataFrame, quality) -> pd.DataFrame:
    """One row per person: the survivor's values, gaps filled from its duplicates.

    Consent is the most restrictive across the records (a "no" anywhere wins) and the
    signup is the earliest.
    """
    frame = frame.sort_values(["survivor", "signup_ts"], na_position="last", kind="stable")
    is_survivor = frame["customer_id"] == frame["survivor"]
    grouped = frame.groupby("survivor", sort=False)
    firsts = grouped[list(DEMOGRAPHICS)].first()  # first non-missing per column
    survivors = frame[is_survivor].set_index("customer_id")
    filled = 0
    for column in DEMOGRAPHICS:
        gaps = survivors[column].isna() & firsts[column].reindex(survivors.index).notna()
        filled += int(gaps.sum())
        survivors.loc[gaps, column] = firsts[column].reindex(survivors.index)[gaps]
    quality.fix("demographic_filled_from_duplicate", filled)
    survivors["signup_ts"] = grouped["signup_ts"].min().reindex(survivors.index)
    for column in ("consent_personalisation", "consent_marketing"):
        survivors[column] = grouped[column].all().reindex(survivors.index)
    survivors["merged_records"] = grouped.size().reindex(survivors.index).astype(np.int64)
    return survivors.reset_index()
