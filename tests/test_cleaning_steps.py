"""Each cleaning step on hand-written rows whose right answers are worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segrec.settings import Settings
from training.data.cleaning.dedupe import find_duplicates
from training.data.cleaning.impute import impute
from training.data.cleaning.outliers import fit_fences, flag_outliers
from training.data.cleaning.parse import (
    normalise_ids,
    parse_booleans,
    parse_numbers,
    parse_timestamps,
)
from training.data.cleaning.privacy import postcode_area
from training.data.cleaning.products import clean_products
from training.data.cleaning.standardise import (
    standardise_categories,
    standardise_event_types,
    standardise_genders,
)
from training.data.quality import QualityReport
from training.data.tables import read_table, write_table


def test_timestamps_in_every_supported_format_become_utc() -> None:
    raw = pd.Series(
        [
            "2026-03-01T12:34:56Z",
            "2026-03-01 12:34:56",
            "2026-03-01T13:34:56+01:00",
            "1772368496",
            "1772368496000",
            "01/03/2026 12:34:56",
            "01/03/2026 12:34",
            "01 Mar 2026 12:34",
            None,
            "31/02/2026 25:61:00",
        ]
    )
    parsed, bad = parse_timestamps(raw, dayfirst=True)
    expected = pd.Timestamp("2026-03-01 12:34:56", tz="UTC")
    assert (parsed[:6] == expected).all()
    assert parsed[6] == pd.Timestamp("2026-03-01 12:34", tz="UTC")
    assert parsed[7] == pd.Timestamp("2026-03-01 12:34", tz="UTC")
    assert pd.isna(parsed[8]) and not bad[8], "missing is not unparseable"
    assert bad.tolist() == [False] * 9 + [True]


def test_a_naive_timestamp_after_one_with_an_offset_is_still_read_as_utc() -> None:
    # In one pandas ISO8601 call the naive value would take the +01:00 before it.
    raw = pd.Series(["2026-03-01T13:34:56+01:00", "2026-03-01 12:34:56", "2026-03-01T12:34:56"])
    parsed, bad = parse_timestamps(raw, dayfirst=True)
    assert (parsed == pd.Timestamp("2026-03-01 12:34:56", tz="UTC")).all()
    assert not bad.any()


def test_month_first_exports_read_month_first() -> None:
    parsed, bad = parse_timestamps(pd.Series(["12/1/2010 8:26"]), dayfirst=False)
    assert parsed[0] == pd.Timestamp("2010-12-01 08:26", tz="UTC")
    assert not bad.any()


def test_product_launch_dates_parse_like_signups_and_stay_missing_when_unknown(
    tmp_path: Path,
) -> None:
    launches = [
        "2026-03-01T12:34:56Z",
        "01/03/2026 12:34:56",  # day-first, as the source says
        "1772368496",
        "2026-03-01T13:34:56+01:00",
        "2026-03-01 12:34:56",
        None,
        "  ",
        "sometime in spring",
    ]
    n = len(launches)
    raw = pd.DataFrame(
        {
            "product_id": [f"P{i}" for i in range(n)],
            "title": [f"Mug {i}" for i in range(n)],
            "description": ["A mug."] * n,
            "category": ["Kitchen"] * n,
            "brand": ["Acme"] * n,
            "price": ["9.99"] * n,
            "in_stock": ["true"] * n,
            "tags": [None] * n,
            "launch_ts": launches,
            "_source": "products.csv",
            "_row": range(1, n + 1),
        }
    )
    report = QualityReport(tmp_path / "set_aside", "test-secret")
    clean = clean_products(raw, report, Settings(data_dir=tmp_path), dayfirst=True)
    report.close()

    launch = clean.set_index("product_id")["launch_ts"]
    assert (launch[:5] == pd.Timestamp("2026-03-01 12:34:56", tz="UTC")).all()
    assert launch[5:].isna().all(), "blank, whitespace and unparseable stay missing"
    quality = report.table("products")
    assert quality.fixes["launch_ts_unparseable_to_missing"] == 1
    assert quality.notes["launch_ts_missing"]["count"] == 3
    assert quality.rows_out == n and not quality.set_aside, "no row is dropped for its date"
    write_table(tmp_path / "clean", "products", clean)
    stored = read_table(tmp_path / "clean", "products")["launch_ts"]
    assert str(stored.dtype) == "datetime64[ns, UTC]"
    assert stored.isna().sum() == 3


def test_numbers_with_currency_and_separators() -> None:
    values, bad = parse_numbers(pd.Series(["£12.50", "12,50", "1,234.50", "1.234,50", "x", None]))
    assert values[:4].tolist() == [12.5, 12.5, 1234.5, 1234.5]
    assert bad.tolist() == [False, False, False, False, True, False]


def test_boolean_spellings() -> None:
    values, bad = parse_booleans(pd.Series(["yes", "Y", "1", "TRUE", "no", "0", "maybe", None]))
    assert values[:6].tolist() == [True, True, True, True, False, False]
    assert bad.tolist() == [False] * 6 + [True, False]


def test_float_ids_are_restored() -> None:
    ids, fixed = normalise_ids(pd.Series(["17850.0", " 17850 ", "A-1.0", "", None]))
    assert ids.tolist() == ["17850", "17850", "A-1.0", None, None]
    assert fixed == 1


def test_category_spellings_fall_together() -> None:
    raw = pd.Series(
        [
            "Home & Kitchen",
            "home and kitchen",
            "HOME_KITCHEN",
            " Home & Kitchen ",
            "Home & Kitchen",
            "Toys",
            None,
        ]
    )
    slugs, mapping = standardise_categories(raw)
    assert slugs[:5].tolist() == ["home_and_kitchen"] * 5
    assert slugs[5] == "toys" and pd.isna(slugs[6])
    assert mapping["HOME_KITCHEN"] == "home_and_kitchen"


def test_event_types_and_genders() -> None:
    types = standardise_event_types(
        pd.Series(["View", "AddToCart", "add-to-cart", "order", "review", "clickk"])
    )
    assert types[:5].tolist() == ["view", "add_to_cart", "add_to_cart", "purchase", "rating"]
    assert pd.isna(types[5])
    genders = standardise_genders(pd.Series(["female", "m", "Non-Binary", "?"]))
    assert genders[:3].tolist() == ["F", "M", "X"] and pd.isna(genders[3])


def test_imputation_records_method_and_marks_rows() -> None:
    frame = pd.DataFrame(
        {
            "country": ["GB", "GB", "GB", "DE", "DE", "FR"],
            "birth_year": [1980, 1990, np.nan, 1970, np.nan, np.nan],
        }
    )
    trail = pd.Series("", index=frame.index, dtype=object)
    record = impute(frame, "birth_year", "median", trail, by="country")
    # GB median 1985, DE median 1970, FR has none so the overall median 1980.
    assert frame["birth_year"].tolist() == [1980, 1990, 1985, 1970, 1970, 1980]
    assert record == {"method": "median", "count": 3, "by": "country", "value": 1980.0}
    assert trail.tolist() == ["", "", "birth_year", "", "birth_year", "birth_year"]


def test_imputation_rejects_unknown_method() -> None:
    frame = pd.DataFrame({"x": [1.0, np.nan]})
    with pytest.raises(ValueError, match="unknown imputation method 'mean'"):
        impute(frame, "x", "mean", pd.Series(["", ""]))


def test_outliers_flagged_not_removed() -> None:
    prices = np.array([10, 11, 9, 10.5, 9.5, 10, 12, 8, 1000, 0.05])
    fences = fit_fences(prices, iqr_k=3, z_limit=4, log_scale=True)
    assert flag_outliers(fences, prices).tolist() == [False] * 8 + [True, True]


def test_mostly_constant_quantities_flag_only_the_extreme() -> None:
    quantity = np.array([1] * 90 + [2] * 6 + [3, 4, 6, 500])
    tight = fit_fences(quantity, iqr_k=3, z_limit=4, log_scale=True)
    assert flag_outliers(tight, quantity).sum() > 1, "without a floor, stock-ups get flagged"
    fences = fit_fences(quantity, iqr_k=3, z_limit=4, log_scale=True, min_half_width=np.log(10))
    assert flag_outliers(fences, quantity).nonzero()[0].tolist() == [99]


def test_postcode_keeps_only_the_area() -> None:
    assert postcode_area(pd.Series(["ln42 7ab", "D02X285", None])).tolist() == [
        "LN42",
        "D02X",
        None,
    ]


def test_dedupe_merges_typos_and_keeps_households_and_namesakes_apart() -> None:
    people = pd.DataFrame(
        {
            "customer_id": ["1", "2", "3", "4", "5", "6"],
            "name": [
                "Olivia Smith",
                "Olivia Smiht",
                "Jack Smith",
                "Olivia Smith",
                "Anna Weber",
                "Anna Weber",
            ],
            "email": [
                "olivia.smith77@mail.example",
                "olivia.smtih77@mail.example",
                "jack.smith12@web.example",
                "olivia.smith342@post.example",
                "ANNA.WEBER5@web.example",
                "anna.weber5@web.example",
            ],
            "address": [
                "12 High Street",
                "12 High St",
                "12 High Street",
                "4 Mill Lane",
                "9 Oak Road",
                "9 Oak Rd",
            ],
            "postcode": ["LN42 7AB", "LN42 7AB", "LN42 7AB", "MA01 2CD", "BE01 1AA", "BE01 1AA"],
            "birth_year": [1980.0, 1980.0, 1982.0, 1980.0, np.nan, 1990.0],
            "signup_ts": pd.to_datetime(
                [
                    "2024-01-01",
                    "2025-06-01",
                    "2024-02-01",
                    "2023-01-01",
                    "2025-01-01",
                    "2024-01-01",
                ],
                utc=True,
            ),
        }
    )
    result = find_duplicates(people, threshold=85, max_block=100)
    # 1+2: typo duplicate (survivor 1 signed up first); 3: household member at the same
    # address; 4: a namesake elsewhere; 5+6: same email in other case (survivor 6 is older).
    assert result.survivor.to_dict() == {"1": "1", "2": "1", "3": "3", "4": "4", "5": "6", "6": "6"}
    assert result.exact_merges == 1
    assert result.merged_ids == 2
