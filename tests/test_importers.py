"""Importers: every mess in the fixtures is counted, set aside with its row, or fixed."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from segrec.settings import Settings
from training.data.importers import ImportFormatError, import_export
from training.data.importers.encoding import MixedEncodingReader, iter_csv_chunks
from training.data.quality import QualityReport, read_set_aside
from training.data.raw import RAW_COLUMNS, RawDataset

FIXTURES = Path(__file__).parent / "fixtures" / "importers"
ONLINE_RETAIL = FIXTURES / "online_retail.csv"
OR_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def _report(tmp_path: Path) -> QualityReport:
    return QualityReport(tmp_path / "set_aside", "test-secret")


def _run(
    tmp_path: Path,
    fmt: str,
    source: Path,
    settings: Settings | None = None,
    column_map: dict[str, str] | None = None,
) -> tuple[RawDataset, QualityReport, pd.DataFrame]:
    report = _report(tmp_path)
    dataset = import_export(
        fmt, source, tmp_path / "raw", report, settings or Settings(), column_map
    )
    report.close()
    return dataset, report, read_set_aside(tmp_path / "set_aside", "import.events")


# --- mixed encodings -------------------------------------------------------------------


def test_mixed_encoding_reader_decodes_each_line_and_counts_fallbacks() -> None:
    source = "ok é\n".encode() + "CAFÉ\n".encode("cp1252") + b"ctrl \x81\n" + b"last"
    reader = MixedEncodingReader(io.BytesIO(source))
    text = io.BufferedReader(reader).read().decode("utf-8")
    assert text == "ok é\nCAFÉ\nctrl \x81\nlast"
    assert dict(reader.fallbacks) == {"cp1252": 1, "latin-1": 1}


def test_mixed_encoding_reader_strips_utf8_bom_and_refuses_utf16() -> None:
    reader = MixedEncodingReader(io.BytesIO(b"\xef\xbb\xbfa,b\n1,2\n"))
    assert io.BufferedReader(reader).read() == b"a,b\n1,2\n"
    utf16 = MixedEncodingReader(io.BytesIO("a,b\n".encode("utf-16")), "x.csv")
    with pytest.raises(ImportFormatError, match=r"x\.csv.*UTF-16"):
        io.BufferedReader(utf16).read()


def test_malformed_lines_are_set_aside_and_later_rows_keep_their_numbers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4,5\n6,7\n8,9\n10,11,12\n13,14\n")
    report = _report(tmp_path)
    chunks = list(iter_csv_chunks(path, report, "events", 2))
    report.close()
    rows = pd.concat(chunks)
    assert rows["a"].tolist() == ["1", "6", "8", "13"]
    assert rows["_row"].tolist() == [1, 3, 4, 6]
    aside = read_set_aside(tmp_path / "set_aside", "events")
    assert aside["reason"].tolist() == ["malformed_line"] * 2
    assert aside["row"].tolist() == [2, 5]
    assert aside["detail"].iloc[0] == "expected 2 fields, saw 3"


# --- online retail ---------------------------------------------------------------------

EXPECTED_ASIDE = {
    "cancellation": [5, 6],
    "return": [7],
    "non_product_code": [10, 11, 12, 13, 14, 15, 27, 28, 32],
    "non_positive_price": [8, 23],
    "missing_customer_id": [9],
    "duplicate_line": [17, 29],
}
EXPECTED_KEPT = [1, 2, 3, 4, 16, 18, 19, 20, 21, 22, 24, 25, 26, 30, 31]


def test_online_retail_sets_aside_each_mess_with_its_reason_and_row(tmp_path: Path) -> None:
    dataset, report, aside = _run(tmp_path, "online-retail", ONLINE_RETAIL)
    events = dataset.read("events")
    quality = report.table("import.events")

    assert dict(quality.set_aside) == {k: len(v) for k, v in EXPECTED_ASIDE.items()}
    for reason, rows in EXPECTED_ASIDE.items():
        assert sorted(aside.loc[aside["reason"] == reason, "row"]) == rows, reason
    assert set(aside["source"]) == {"online_retail.csv"}
    assert events["_row"].tolist() == EXPECTED_KEPT
    # Each set-aside row points at the file line it came from (data row r = line r + 1).
    file_lines = ONLINE_RETAIL.read_bytes().split(b"\n")
    for row, record in zip(aside["row"], aside["record"], strict=True):
        invoice, code = file_lines[row].split(b",")[:2]
        values = json.loads(record)
        assert (values["InvoiceNo"], values["StockCode"]) == (invoice.decode(), code.decode())

    data_lines = ONLINE_RETAIL.read_bytes().count(b"\n") - 1
    assert data_lines == 32
    assert len(events) + len(aside) == data_lines
    assert quality.notes["imported"]["rows_read"] == data_lines


def test_online_retail_fixes_ids_encodings_and_builds_events(tmp_path: Path) -> None:
    dataset, report, aside = _run(tmp_path, "online-retail", ONLINE_RETAIL)
    events = dataset.read("events").set_index("_row")
    quality = report.table("import.events")

    assert dict(quality.fixes) == {
        "encoding_fallback_cp1252": 3,
        "float_id_normalised": 4,
        "stock_code_normalised": 1,
    }
    first = events.loc[1]
    assert first["event_id"] == "536365-1"
    assert first["customer_id"] == "17850"
    assert first["product_id"] == "85123A"
    assert first["ts"] == "12/1/2010 8:26"
    assert first["type"] == "purchase"
    assert (first["quantity"], first["price"], first["value"]) == ("6", "2.55", "15.3")
    assert first["session_id"] == "536365"
    assert events.loc[24, "product_id"] == "85099B"
    assert events["customer_id"].str.fullmatch(r"\d+").all()
    assert events["event_id"].is_unique

    # The duplicate of a cp1252 line is recognised after decoding, and stored decoded.
    duplicate = json.loads(aside.loc[aside["row"] == 29, "record"].iloc[0])
    assert duplicate["Description"] == "CAFÉ ASSORTED BIRD ORNAMENT"
    assert RawDataset(tmp_path / "raw").meta()["dayfirst"] is False


def test_online_retail_customers_and_products(tmp_path: Path) -> None:
    dataset, report, _ = _run(tmp_path, "online-retail", ONLINE_RETAIL)
    customers = dataset.read("customers").set_index("customer_id")
    products = dataset.read("products").set_index("product_id")

    assert customers.index.tolist() == ["17850", "13047", "12583", "13748", "14688"]
    assert customers.loc["13748", "country"] == "United Kingdom"  # 2 x UK, 1 x EIRE
    assert customers.loc["12583", "country"] == "France"
    assert customers["signup_ts"].isna().all()
    assert set(customers["consent_personalisation"]) == {"true"}
    assert set(customers["consent_marketing"]) == {"false"}
    assert report.table("import.customers").notes["consent_assumed"] == {
        "value": "true",
        "customers": 5,
    }
    assert customers.loc["13047", "_row"] == 16

    assert products.index.tolist() == [
        "85123A",
        "71053",
        "84406B",
        "22633",
        "21773",
        "22960",
        "21756",
        "22728",
        "22086",
        "84879",
        "85099B",
        "22423",
        "84880",
    ]
    assert products.loc["85123A", "title"] == "SET OF 3 CAKE TINS, PANTRY DESIGN"
    assert products.loc["84879", "title"] == "CAFÉ ASSORTED BIRD ORNAMENT"
    assert products.loc["84880", "description"] == "CRÈME BRÛLÉE SET"
    assert products.loc["22086", "title"] == "PAPER CHAIN KIT 50'S CHRISTMAS"
    assert products.loc["22423", "price"] == "11.85"  # median of 12.75 and 10.95; -1.0 aside
    assert products.loc["84879", "price"] == "1.69"
    assert products.loc["21773", "price"] is None  # only seen without a customer
    assert products["category"].isna().all()
    assert set(products["in_stock"]) == {"true"}


def test_online_retail_ii_column_names(tmp_path: Path) -> None:
    source = tmp_path / "online_retail_ii.csv"
    header = b"Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country"
    source.write_bytes(header + ONLINE_RETAIL.read_bytes()[len(OR_HEADER) :])
    dataset, report, _ = _run(tmp_path, "online-retail", source)
    assert dataset.count("events") == len(EXPECTED_KEPT)
    assert sum(report.table("import.events").set_aside.values()) == 17


def test_online_retail_duplicates_are_found_across_chunks(tmp_path: Path) -> None:
    lines = [
        f"5{i:05d},{20000 + i % 50},ITEM {i % 50},1,12/1/2010 8:26,1.25,{12000 + i % 40},UK"
        for i in range(1500)
    ]
    lines[1199] = lines[2]  # row 1200, in the second chunk of 1000, repeats row 3
    lines[1299] = lines[1250]  # a repeat inside the second chunk
    source = tmp_path / "long.csv"
    source.write_text(OR_HEADER + "\n" + "\n".join(lines) + "\n")

    dataset, report, aside = _run(tmp_path, "online-retail", source, Settings(chunk_rows=1000))
    assert dict(report.table("import.events").set_aside) == {"duplicate_line": 2}
    assert sorted(aside["row"]) == [1200, 1300]
    assert dataset.count("events") == 1498
    assert dataset.read("events")["_row"].iloc[-1] == 1500


def test_online_retail_refuses_spreadsheets_and_missing_columns(tmp_path: Path) -> None:
    workbook = tmp_path / "Online Retail.xlsx"
    workbook.write_bytes(b"PK\x03\x04")
    with pytest.raises(ImportFormatError, match=r"Online Retail\.xlsx.*convert to CSV"):
        _run(tmp_path, "online-retail", workbook)

    partial = tmp_path / "partial.csv"
    partial.write_text("InvoiceNo,StockCode,Quantity\n1,2,3\n")
    with pytest.raises(ImportFormatError) as error:
        _run(tmp_path, "online-retail", partial)
    message = str(error.value)
    assert "partial.csv" in message
    assert "'UnitPrice'" in message
    assert "'CustomerID'" in message
    assert "--map" in message


# --- movielens -------------------------------------------------------------------------


def test_movielens_100k(tmp_path: Path) -> None:
    dataset, report, _ = _run(tmp_path, "movielens", FIXTURES / "ml-100k")
    events = dataset.read("events")
    products = dataset.read("products").set_index("product_id")
    customers = dataset.read("customers").set_index("customer_id")

    assert len(events) == 7
    first = events.iloc[0]
    assert first["event_id"] == "1-1-874965758"
    assert (first["customer_id"], first["product_id"]) == ("1", "1")
    assert (first["ts"], first["type"], first["value"], first["quantity"]) == (
        "874965758",
        "rating",
        "5",
        "1",
    )
    assert first["session_id"] is None
    assert events["_row"].tolist() == [1, 2, 3, 4, 5, 6, 7]

    assert products.loc["3", "title"] == "Café au lait (1994)"
    assert products.loc["3", "category"] == "Comedy"
    assert products.loc["2", "category"] == "Action"
    assert products.loc["2", "tags"] == "Action|Adventure|Thriller"
    assert products.loc["1", "tags"] == "Animation|Children's|Comedy"
    assert products.loc["1", "description"] == (
        "Toy Story (1995). Genres: Animation, Children's, Comedy"
    )
    assert products.loc["4", "category"] == "unknown"
    assert products["price"].isna().all()
    assert report.table("import.products").fixes["encoding_fallback_cp1252"] == 1

    # birth year = year of the user's latest rating - age
    assert customers.loc["1", "birth_year"] == "1973"  # 1997 - 24
    assert customers.loc["2", "birth_year"] == "1945"  # 1998 - 53
    assert customers.loc["3", "birth_year"] == "1975"  # 1998 - 23
    demographics = ["gender", "occupation", "postcode", "country"]
    assert list(customers.loc["2", demographics]) == ["F", "other", "94043", "US"]
    assert customers.loc["4", "birth_year"] is None  # rated, but not in u.user
    assert report.table("import.customers").notes["raters_without_demographics"] == 1
    assert dataset.meta()["layout"] == "ml-100k"


def test_movielens_latest(tmp_path: Path) -> None:
    dataset, report, _ = _run(tmp_path, "movielens", FIXTURES / "ml-latest")
    events = dataset.read("events")
    products = dataset.read("products").set_index("product_id")
    customers = dataset.read("customers")

    assert len(events) == 6
    assert events["value"].tolist() == ["4.0", "4.0", "3.5", "5.0", "4.5", "2.5"]
    assert events["ts"].iloc[2] == "1445714835"
    assert products.loc["11", "title"] == "American President, The (1995)"
    assert products.loc["11", "tags"] == "Comedy|Drama|Romance"
    assert products.loc["4973", "title"] == "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    assert products.loc["1", "category"] == "Adventure"
    assert products.loc["99999", "category"] is None
    assert products.loc["99999", "tags"] is None
    assert products.loc["99999", "description"] == "Some Obscure Film (2019)"

    assert customers["customer_id"].tolist() == ["1", "2", "3"]
    assert customers["_row"].tolist() == [1, 3, 5]
    assert customers["birth_year"].isna().all()
    assert report.table("import.customers").notes["consent_assumed"] == {
        "value": "true",
        "customers": 3,
    }
    assert dataset.meta()["layout"] == "ml-latest"


def test_movielens_unknown_layout(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImportFormatError, match=r"u\.data.*ratings\.csv.*notes\.txt"):
        _run(tmp_path, "movielens", tmp_path)


# --- canonical -------------------------------------------------------------------------

COLUMN_MAP = {
    "user": "customer_id",
    "item": "product_id",
    "when": "ts",
    "action": "type",
    "qty": "quantity",
}


def test_canonical_with_mapped_columns_derives_customers_and_products(tmp_path: Path) -> None:
    settings = Settings(import_consent="denied")
    dataset, report, _ = _run(
        tmp_path, "canonical", FIXTURES / "canonical_mapped", settings, COLUMN_MAP
    )
    events = dataset.read("events")
    assert events["event_id"].tolist() == [f"events.csv:{row}" for row in range(1, 6)]
    assert events["customer_id"].tolist() == ["17850", "17850", "13047", "13047", "12583"]
    assert events["ts"].iloc[2] == "01/03/2024 11:00"
    assert events["quantity"].tolist() == ["1", "2", "1", "1", None]
    quality = report.table("import.events")
    assert quality.notes["ignored_columns"] == ["device"]
    assert dict(quality.fixes) == {"event_id_generated": 5, "float_id_normalised": 2}

    customers = dataset.read("customers")
    assert customers["customer_id"].tolist() == ["17850", "13047", "12583"]
    assert customers["_row"].tolist() == [1, 3, 5]
    assert customers["signup_ts"].isna().all()
    assert set(customers["consent_personalisation"]) == {"false"}
    assert report.table("import.customers").notes["consent_assumed"] == {
        "value": "false",
        "customers": 3,
    }

    products = dataset.read("products")
    assert products["product_id"].tolist() == ["85123A", "22633", "71053"]
    assert products["title"].tolist() == ["85123A", "22633", "71053"]
    assert products["category"].isna().all()


def test_canonical_missing_columns_error_names_file_and_mapping(tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError) as error:
        _run(tmp_path, "canonical", FIXTURES / "canonical_mapped")
    message = str(error.value)
    assert "events.csv" in message
    assert "['customer_id', 'product_id', 'ts', 'type']" in message
    assert "'user'" in message  # the columns found
    assert "--map" in message


@pytest.mark.parametrize("events_format", ["csv", "parquet"])
def test_canonical_full_directory(tmp_path: Path, events_format: str) -> None:
    source = tmp_path / "export"
    shutil.copytree(FIXTURES / "canonical_full", source)
    if events_format == "parquet":
        frame = pd.read_csv(source / "events.csv", dtype=str, keep_default_na=False)
        frame.to_parquet(source / "events.parquet")
        (source / "events.csv").unlink()
    dataset, report, _ = _run(tmp_path, "canonical", source)

    events = dataset.read("events")
    assert events["event_id"].tolist() == ["e1", "e2", "e3", "e4"]
    assert events["value"].iloc[1] == "19.98"
    assert events["_source"].iloc[0] == f"events.{events_format}"
    assert events["_row"].tolist() == [1, 2, 3, 4]

    customers = dataset.read("customers").set_index("customer_id")
    assert customers.loc["c2", "name"] == "Brown, Bob"
    assert customers["consent_personalisation"].tolist() == ["yes", "no", None]
    assert set(customers["consent_marketing"]) == {"false"}
    assert "consent_assumed" not in report.table("import.customers").notes
    assert report.table("import.customers").notes["ignored_columns"] == ["loyalty_tier"]

    products = dataset.read("products").set_index("product_id")
    assert products.loc["p1", "title"] == "Mug, blue"
    assert products.loc["p2", "in_stock"] == "false"
    assert list(products.columns) == [*RAW_COLUMNS["products"][1:], "_source", "_row"]
    assert products["launch_ts"].isna().all(), "no launch_ts column in the export: null"


def test_canonical_parquet_values_become_source_text(tmp_path: Path) -> None:
    source = tmp_path / "export"
    source.mkdir()
    pd.DataFrame(
        {
            "customer_id": [17850.0, 13047.0, None],
            "product_id": ["p1", "p2", "p1"],
            "ts": pd.to_datetime(["2024-03-01 10:00", "2024-03-02 11:30", "2024-03-03 09:00"]),
            "type": ["view", "purchase", "view"],
            "quantity": [1, 2, 1],
            "notes": ["a", "b", "c"],
        }
    ).to_parquet(source / "events.parquet")
    dataset, report, _ = _run(tmp_path, "canonical", source)
    events = dataset.read("events")
    assert events["customer_id"].tolist() == ["17850", "13047", None]
    assert events["ts"].iloc[1] == "2024-03-02 11:30:00"
    assert events["quantity"].tolist() == ["1", "2", "1"]
    assert events["event_id"].tolist() == [
        "events.parquet:1",
        "events.parquet:2",
        "events.parquet:3",
    ]
    assert report.table("import.events").fixes["float_id_normalised"] == 2
    assert report.table("import.events").notes["ignored_columns"] == ["notes"]
    assert dataset.read("customers")["customer_id"].tolist() == ["17850", "13047"]


def test_canonical_refuses_ambiguous_or_unknown_input(tmp_path: Path) -> None:
    source = tmp_path / "export"
    shutil.copytree(FIXTURES / "canonical_full", source)
    (source / "events.parquet").write_bytes(b"")
    with pytest.raises(ImportFormatError, match=r"both events\.csv and events\.parquet"):
        _run(tmp_path, "canonical", source)
    with pytest.raises(ImportFormatError, match=r"'customer'.*not canonical"):
        _run(tmp_path, "canonical", FIXTURES / "canonical_mapped", column_map={"u": "customer"})
    with pytest.raises(ImportFormatError, match="unknown import format 'shopify'"):
        _run(tmp_path, "shopify", source)
    with pytest.raises(ImportFormatError, match=r"nowhere.*no such file"):
        _run(tmp_path, "canonical", tmp_path / "nowhere")
