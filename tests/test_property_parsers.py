"""Property-based tests (hypothesis) on every parser of outside input.

Storefront events, request bodies, the request-size limit, the importers and the cleaning
parsers get generated hostile input: wrong types, odd unicode, extreme numbers and dates,
broken CSV. The properties: input is either accepted (and then obeys every documented
rule) or refused with a validation error naming what is wrong; nothing crashes; and an
import that fails leaves no half-written output. Generation is derandomised and bounded,
so a run is deterministic and takes seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from segrec.pseudonym import CUSTOMER_ID_PATTERN
from segrec.settings import Settings
from serving.events import MAX_CLOCK_SKEW, MAX_EVENT_AGE, MAX_QUANTITY, validate_events
from serving.limits import BodySizeLimit, JsonBodiesOnly
from training.data.cleaning.parse import (
    normalise_ids,
    parse_booleans,
    parse_numbers,
    parse_timestamps,
)
from training.data.importers import ImportFormatError, import_export
from training.data.quality import QualityReport
from training.data.raw import RAW_COLUMNS, TABLES, RawDataset

PROPERTY = settings(
    derandomize=True,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Imports write files: fewer examples, each a whole import.
IMPORT_PROPERTY = settings(PROPERTY, max_examples=25)

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
CATALOGUE = frozenset({"P000001", "P000002", "🛒"})

# --- shared strategies -----------------------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["", " ", "\u0000", "\u202e", "🛒👩🏽‍💻", "\ud800", "NaN", "-0", "1e400", "null", "'", '"']
    ),
    st.text(alphabet="0123456789abcdef_c", max_size=20),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | nasty_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty_text, inner, max_size=3),
    max_leaves=8,
)
offsets = st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)),
)
timestamps = st.one_of(
    st.datetimes(timezones=offsets).map(dt.datetime.isoformat),  # years 1 to 9999
    st.datetimes(
        min_value=dt.datetime(2026, 11, 10), max_value=dt.datetime(2026, 11, 24), timezones=offsets
    ).map(dt.datetime.isoformat),  # around NOW, inside and outside the window
    st.datetimes().map(dt.datetime.isoformat),  # naive
    json_values,
)


def _maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, json_values)


near_valid_events = st.fixed_dictionaries(
    {
        "customer_id": _maybe(st.from_regex(CUSTOMER_ID_PATTERN, fullmatch=True)),
        "product_id": _maybe(st.sampled_from(sorted(CATALOGUE))),
        "type": _maybe(st.sampled_from(["view", "add_to_cart", "purchase", "rating"])),
    },
    optional={
        "ts": timestamps,
        "quantity": _maybe(st.integers(min_value=-5, max_value=MAX_QUANTITY + 5)),
        "price": _maybe(st.floats(min_value=-1, max_value=1e6)),
        "value": _maybe(st.floats(min_value=0, max_value=6)),
        "session_id": _maybe(st.text(max_size=130)),
        "event_id": _maybe(st.text(max_size=130)),
        "colour": json_values,
    },
)


# --- storefront events -----------------------------------------------------------------


@PROPERTY
@given(st.lists(st.one_of(near_valid_events, json_values), max_size=12))
def test_each_event_is_accepted_by_the_rules_or_rejected_with_a_reason(
    raw: list[Any],
) -> None:
    accepted, rejected = validate_events(raw, CATALOGUE, NOW)
    assert len(accepted) + len(rejected) == len(raw)
    indexes = [r.index for r in rejected]
    assert indexes == sorted(set(indexes)) and all(0 <= i < len(raw) for i in indexes)
    for rejection in rejected:
        assert isinstance(rejection.field, str) and rejection.reason
        json.dumps(rejection.as_dict())  # the answer can always be sent
    for event in accepted:
        assert re.fullmatch(CUSTOMER_ID_PATTERN, event.customer_id)
        assert event.product_id in CATALOGUE
        assert event.ts.utcoffset() == dt.timedelta(0)
        assert NOW - MAX_EVENT_AGE <= event.ts <= NOW + MAX_CLOCK_SKEW
        assert 1 <= event.quantity <= MAX_QUANTITY
        assert event.price is None or (math.isfinite(event.price) and event.price >= 0)
        assert (event.value is not None) == (event.type == "rating")
        assert event.event_id
    again, _ = validate_events(raw, CATALOGUE, NOW)
    assert [e.event_id for e in again] == [e.event_id for e in accepted], "ids are stable"


# --- request bodies --------------------------------------------------------------------


def _input_models() -> dict[str, Any]:
    from serving.service import BatchRequest, Segrec

    models = {name: api.input_spec for name, api in Segrec.apis.items()}  # type: ignore[attr-defined]
    return {**models, "batch_item": BatchRequest}


request_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "customer_id": _maybe(st.text(min_size=1, max_size=140)),
            "product_id": _maybe(st.sampled_from(sorted(CATALOGUE))),
            "k": _maybe(st.integers(min_value=-1, max_value=102)),
            "placement": _maybe(st.sampled_from(["home", "product", "cart", "email"])),
            "category": json_values,
            "exclude": _maybe(st.lists(nasty_text, max_size=5)),
            "requests": st.lists(
                st.one_of(
                    json_values,
                    st.fixed_dictionaries(
                        {"customer_id": _maybe(st.text(min_size=1, max_size=130))},
                        optional={"k": _maybe(st.integers(-1, 102)), "colour": json_values},
                    ),
                ),
                max_size=3,
            ),
            "events": st.lists(st.one_of(json_values, near_valid_events), max_size=3),
            "colour": json_values,
        },
    ),
)


@PROPERTY
@given(request_bodies, st.data())
def test_request_bodies_validate_or_fail_with_a_validation_error(
    body: Any, data: st.DataObject
) -> None:
    models = _input_models()
    model = models[data.draw(st.sampled_from(sorted(models)))]
    try:
        parsed = model.model_validate(body)
    except ValidationError as error:
        refusal = error
    else:
        refusal = None
    if refusal is not None:
        assert refusal.errors(), "a refusal names at least one field"
        return
    values = dict(parsed)
    if "k" in values:
        assert 1 <= values["k"] <= 100
    if "customer_id" in values:
        assert 1 <= len(values["customer_id"]) <= 128
    if "placement" in values:
        assert values["placement"] in {"home", "product", "cart", "email"}
    if "exclude" in values:
        assert len(values["exclude"]) <= 1000


# --- the request-size limit ------------------------------------------------------------

LIMIT = 1000


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body like the service does; a disconnect is the client leaving."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RuntimeError("client disconnected")
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = json.dumps({"bytes": size}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _run_limited(chunks: list[bytes], declared: bytes | None) -> list[dict[str, Any]]:
    headers = [] if declared is None else [(b"content-length", declared)]
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers}
    pending = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks or [b""])
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(BodySizeLimit(_echo, LIMIT)(scope, receive, send))
    return sent


@PROPERTY
@given(
    st.lists(st.integers(min_value=0, max_value=700), max_size=6),
    st.one_of(
        st.none(),
        st.integers(min_value=-10, max_value=3 * LIMIT).map(lambda n: str(n).encode()),
        st.binary(max_size=6),
    ),
)
def test_the_size_limit_answers_once_and_exactly_when_due(
    sizes: list[int], declared: bytes | None
) -> None:
    chunks = [b"x" * size for size in sizes]
    total = sum(sizes)
    sent = _run_limited(chunks, declared)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, "exactly one answer"
    status = starts[0]["status"]
    body = json.loads(b"".join(m.get("body", b"") for m in sent if "body" in m))
    try:
        length: int | None = None if declared is None else int(declared)
    except ValueError:
        assert status == 400 and body["field"] == "body"
        return
    if (length is not None and length > LIMIT) or total > LIMIT:
        assert status == 413 and "SEGREC_MAX_REQUEST_BYTES" in body["error"]
    else:
        assert status == 200 and body == {"bytes": total}


@PROPERTY
@given(
    st.one_of(
        st.none(),
        st.binary(max_size=40),
        st.sampled_from(
            [b"application/json", b"Multipart/Form-Data; boundary=x", b"multipart/mixed", b""]
        ),
        st.sampled_from([b"application/x-www-form-urlencoded", b" text/plain ; charset=x"]),
    ),
    st.sampled_from(["POST", "GET"]),
    st.sampled_from(["/recommend", "/ui/anything"]),
)
def test_form_bodies_are_refused_only_on_the_json_apis(
    content_type: bytes | None, method: str, path: str
) -> None:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(JsonBodiesOnly(_echo, ["/recommend"])(scope, receive, send))
    status = sent[0]["status"]
    media = (content_type or b"").split(b";")[0].strip().lower()
    form = media.startswith((b"multipart/", b"application/x-www-form-urlencoded"))
    if form and method == "POST" and path == "/recommend":
        assert status == 415 and json.loads(sent[1]["body"])["field"] == "content-type"
    else:
        assert status == 200, "everything else reaches the service"


# --- cleaning parsers ------------------------------------------------------------------

# Raw tables are parquet, so their strings are valid UTF-8: no lone surrogates.
utf8_text = nasty_text.filter(lambda s: "\ud800" not in s)
raw_values = st.lists(
    st.one_of(
        st.none(),
        utf8_text,
        st.sampled_from(["12/1/2010 8:26", "1700000000", "99999999999999", "£1.234,50", "yes"]),
        st.integers().map(str),
        st.floats().map(str),
        st.datetimes(timezones=offsets).map(dt.datetime.isoformat),
    ),
    max_size=12,
)


@settings(PROPERTY, max_examples=60)
@given(raw_values, st.booleans())
@example(values=["99999999999", "9999999999999", "1700000000"], dayfirst=False)  # past 2262
def test_cleaning_parsers_parse_or_flag_every_value(
    values: list[str | None], dayfirst: bool
) -> None:
    series = pd.Series(values, dtype=object)
    present = series.map(lambda v: v is not None and str(v).strip() != "")
    stamps, bad = parse_timestamps(series, dayfirst=dayfirst)
    assert stamps.index.equals(series.index) and str(stamps.dtype) == "datetime64[ns, UTC]"
    assert not (bad & ~present).any(), "missing values are not unparseable"
    assert (stamps.notna() | bad | ~present).all(), "each value is parsed or flagged"
    numbers, bad = parse_numbers(series)
    assert not (bad & ~present).any()
    assert (numbers.notna() | bad | ~present).all()
    flags, bad = parse_booleans(series)
    assert (flags.notna() | bad | ~present).all()
    ids, fixed = normalise_ids(series)
    assert len(ids) == len(series) and 0 <= fixed <= len(series)


# --- importers -------------------------------------------------------------------------

cells = st.one_of(
    utf8_text,
    st.sampled_from(["C536379", "-6", "2.55", "0", "17850.0", "POST", "12/1/2010 8:26", ""]),
    st.text(alphabet=',"\n\r;|\t ', max_size=4),  # separators and quotes in the wrong place
)
OR_HEADER = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)


def _csv_line(values: list[str]) -> str:
    return ",".join(
        '"' + v.replace('"', '""') + '"' if re.search(r'[",\n\r]', v) else v for v in values
    )


@st.composite
def csv_files(draw: st.DrawFn, header: tuple[str, ...]) -> bytes:
    """A CSV with ``header`` (sometimes shuffled or cut short) and messy rows, some with a
    field too many, an unclosed quote or bytes that are not UTF-8."""
    columns = list(header)
    if draw(st.booleans()):
        columns = draw(st.permutations(columns))
    if draw(st.integers(0, 9)) == 0:
        columns = columns[:-1]
    lines = [_csv_line(columns)]
    for _ in range(draw(st.integers(0, 8))):
        width = len(columns) + draw(st.sampled_from([0, 0, 0, 1, -1]))
        lines.append(_csv_line(draw(st.lists(cells, min_size=width, max_size=width))))
    text = "\n".join(lines).encode()
    ending = draw(st.sampled_from([b"", b"\n", b'\n"unclosed,', b"\n\xff\xfe,\x81\n", b"\r\n"]))
    prefix = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xff\xfe"]))
    return prefix + text + ending


def _import(fmt: str, write: Any) -> None:
    """Run one import into a fresh directory and check the outcome's properties."""
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        source = write(root)
        out = root / "raw"
        report = QualityReport(root / "set_aside", "test-secret")
        chunked = Settings().model_copy(update={"chunk_rows": 3})  # several chunks
        try:
            dataset: RawDataset | None = import_export(fmt, source, out, report, chunked)
        except ImportFormatError as error:
            dataset, refusal = None, str(error)
        finally:
            report.close()
        if dataset is None:
            assert refusal, "the refusal says what is wrong"
            assert not out.exists(), "no half-written output"
            return
        assert isinstance(dataset, RawDataset)
        for table in TABLES:
            frame = dataset.read(table)
            assert list(frame.columns) == [*RAW_COLUMNS[table], "_source", "_row"]
            quality = report.table(f"import.{table}")
            assert quality.rows_in == quality.rows_out + sum(quality.set_aside.values())
        assert dataset.meta()["format"] == fmt
        assert not [p for p in root.iterdir() if p.name.startswith(".")], "no staging left"


@IMPORT_PROPERTY
@given(csv_files(OR_HEADER))
def test_online_retail_import_sets_aside_or_refuses_never_crashes(content: bytes) -> None:
    def write(root: Path) -> Path:
        path = root / "online_retail.csv"
        path.write_bytes(content)
        return path

    _import("online-retail", write)


@IMPORT_PROPERTY
@given(
    csv_files(("event_id", "customer_id", "product_id", "ts", "type", "quantity", "price")),
    st.one_of(st.none(), csv_files(("customer_id", "email", "consent_personalisation"))),
)
def test_canonical_import_sets_aside_or_refuses_never_crashes(
    events: bytes, customers: bytes | None
) -> None:
    def write(root: Path) -> Path:
        source = root / "export"
        source.mkdir()
        (source / "events.csv").write_bytes(events)
        if customers is not None:
            (source / "customers.csv").write_bytes(customers)
        return source

    _import("canonical", write)


@IMPORT_PROPERTY
@given(
    csv_files(("userId", "movieId", "rating", "timestamp")),
    csv_files(("movieId", "title", "genres")),
)
def test_movielens_import_sets_aside_or_refuses_never_crashes(
    ratings: bytes, movies: bytes
) -> None:
    def write(root: Path) -> Path:
        source = root / "ml-latest-small"
        source.mkdir()
        (source / "ratings.csv").write_bytes(ratings)
        (source / "movies.csv").write_bytes(movies)
        return source

    _import("movielens", write)


def test_a_failed_import_keeps_the_previous_raw_dataset_whole(tmp_path: Path) -> None:
    """A parse error deep in the file, after chunks were written, must not leave a mix of
    old and new tables behind."""
    good = tmp_path / "good.csv"
    rows = [f"{i},85123A,MUG,1,12/1/2010 8:26,2.55,1785{i % 10},UK" for i in range(20)]
    good.write_text(",".join(OR_HEADER) + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "raw"
    chunked = Settings().model_copy(update={"chunk_rows": 3})
    report = QualityReport(tmp_path / "aside", "s")
    import_export("online-retail", good, out, report, chunked)
    report.close()
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text() + '99,X,"never closed,1,12/1/2010 8:26,1,1,UK\n')
    report = QualityReport(tmp_path / "aside2", "s")
    with pytest.raises(ImportFormatError, match=r"bad\.csv"):
        import_export("online-retail", bad, out, report, chunked)
    report.close()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- the engine on whatever the request models let through --------------------------------


@pytest.fixture(scope="module")
def engine_and_customers(trained_small: tuple[Settings, Any]) -> tuple[Any, list[str]]:
    from segrec.bundle import read_bundle
    from serving.loading import build_engine

    trained, run = trained_small
    # The synthetic features end on 2026-10-31: judge their ttl by the data's clock.
    replaying = trained.model_copy(update={"feature_clock": "data"})
    engine = build_engine(replaying, bundle=read_bundle(Path(run.export.bundle_dir)))
    segments = pd.read_parquet(trained.features_dir / "customer_segments.parquet")
    return engine, [str(c) for c in segments["customer_id"].iloc[:50]]


@pytest.mark.integration
@pytest.mark.slow
@settings(PROPERTY, max_examples=60)
@given(data=st.data())
def test_the_engine_answers_every_valid_request(
    engine_and_customers: tuple[Any, list[str]], data: st.DataObject
) -> None:
    from serving.engine import RecommendRequest
    from serving.service import BatchRequest

    engine, customers = engine_and_customers
    products = st.sampled_from(list(engine.product_ids[:50]))
    # JSON text cannot carry lone surrogates (the parser refuses them with 400).
    odd = st.text(max_size=20)
    body = data.draw(
        st.fixed_dictionaries(
            {
                "customer_id": st.one_of(
                    st.sampled_from(customers), st.text(min_size=1, max_size=128)
                )
            },
            optional={
                "k": st.integers(min_value=1, max_value=100),
                "placement": st.sampled_from(["home", "product", "cart", "email"]),
                "product_id": st.one_of(st.none(), products, odd),
                "category": st.one_of(st.none(), odd),
                "exclude": st.lists(st.one_of(products, odd), max_size=20),
            },
        )
    )
    request = BatchRequest.model_validate(body)
    answer = engine.recommend_many(
        [
            RecommendRequest(
                request.customer_id,
                request.k,
                request.placement,
                request.product_id,
                request.category,
                tuple(request.exclude),
            )
        ]
    )[0]
    shown = [item["product_id"] for item in answer.items]
    assert len(shown) <= request.k and len(set(shown)) == len(shown)
    assert shown or request.category is not None, "only an unknown category empties it"
    assert not set(shown) & set(request.exclude)
    known = {None, "unknown_customer", "no_consent", "store_unavailable", "missing_features"}
    assert answer.fallback in known
    json.dumps(answer.as_json(request.customer_id))
