"""Admin endpoints over real HTTP: the token rules (401 without, 403 wrong), erasure
through ``/admin/erase`` on a live service, and the audit log of both."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segrec.audit import verify_audit_log
from segrec.consent import ConsentLedger
from segrec.settings import Settings
from tests.conftest import new_serving_workspace, serve_workspace
from tests.test_serving_http import _call, _post
from training.features.inputs import load_inputs
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "privacy-test-token-5f1c"
# Personal data by shape, in patterns that stay linear on the tens of megabytes of the
# online store file: e-mails found from their "@", names as pairs within runs of
# capitalised words, street addresses as a number and the two words after it.
DOMAIN = re.compile(r"@[\w-]+\.[\w.-]+")
LOCAL_PART = re.compile(r"[\w.+-]{1,64}$")
PHONE = re.compile(r"\+\d[\d ]{6,}\d")
CAPITALISED_RUN = re.compile(r"[A-Z][a-z'-]+(?: [A-Z][a-z'-]+)+")
ADDRESS = re.compile(r"\d+ [A-Z][a-z'-]+ [A-Z][a-z'-]+")


def _candidates(text: str) -> set[str]:
    found = set(PHONE.findall(text)) | set(ADDRESS.findall(text))
    for match in DOMAIN.finditer(text):
        local = LOCAL_PART.search(text, max(match.start() - 64, 0), match.start())
        if local:
            found.add(local.group() + match.group())
    for run in CAPITALISED_RUN.findall(text):
        words = run.split(" ")
        found.update(" ".join(pair) for pair in itertools.pairwise(words))
    return found


@dataclass
class Server:
    url: str
    settings: Settings
    log: Path
    customers: pd.DataFrame


@pytest.fixture(scope="module")
def server(
    trained_small: tuple[Settings, TrainingRun], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    trained, _ = trained_small
    root, settings = new_serving_workspace(trained_small, tmp_path_factory, "privacy")
    # A real copy, not the shared link: erasure rewrites these files.
    features = settings.features_dir
    features.unlink()
    shutil.copytree(trained.features_dir, features)
    customers = pd.read_parquet(features / "customer_segments.parquet")
    env = {
        "SEGREC_ADMIN_TOKEN": TOKEN,
    }
    with serve_workspace(settings, trained, root, env) as url:
        yield Server(url, settings, root / "server.log", customers)


def _distinct(values: pd.Series) -> Any:
    try:
        return values.unique()
    except TypeError:  # arrays of numbers in cells (shares, embeddings): no text
        return []


def _admin(server: Server, path: str, body: dict, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"X-Segrec-Actor": "ops@shop"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return _call(f"{server.url}{path}", body, headers=headers)


def test_admin_endpoints_want_the_token(server: Server) -> None:
    customer = str(server.customers["customer_id"].iloc[0])
    for path, body in (("/admin/reload", {}), ("/admin/erase", {"customer_id": customer})):
        status, answer = _admin(server, path, body, token=None)
        assert status == 401 and answer["field"] == "authorization", (path, answer)
        status, answer = _admin(server, path, body, token="wrong-token")
        assert status == 403 and answer["field"] == "authorization", (path, answer)
        assert TOKEN not in str(answer)
    # Refused: nobody was erased.
    status, answer = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 3})
    assert answer["fallback"] is None


def test_erasure_through_the_service(server: Server) -> None:
    customers = server.customers.drop_duplicates("customer_id")
    customer = str(customers["customer_id"].iloc[-1])
    before = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 3})[1]
    assert before["fallback"] is None and before["segment"] is not None
    now = dt.datetime.now(dt.UTC).isoformat()
    events = [{"customer_id": customer, "product_id": "P000001", "type": "view", "ts": now}]
    assert _post(f"{server.url}/events", {"events": events})[1]["accepted"] == 1

    status, report = _admin(server, "/admin/erase", {"customer_id": customer})
    assert status == 200, report
    assert report["erased"] and report["customer_id"] == customer
    assert report["online_rows"] >= 2  # profile, behaviour, segment, session ...
    assert any(p.startswith("features/") for p in report["parquet_rows"]), report
    assert any(p.startswith("events/live/") for p in report["log_lines"]), report

    # The next request knows nothing of them, and their events are refused.
    after = _post(f"{server.url}/recommend", {"customer_id": customer, "k": 3})[1]
    assert after["fallback"] == "unknown_customer" and after["segment"] is None
    answer = _post(f"{server.url}/events", {"events": events})[1]
    assert answer["accepted"] == 0
    assert answer["rejected"] == [
        {"index": 0, "field": "customer_id", "reason": "customer erased: events refused"}
    ]
    leftovers = [
        path
        for path in server.settings.data_dir.rglob("*")
        if path.is_file()
        and not path.resolve().is_relative_to(server.settings.privacy_dir.resolve())
        and customer.encode() in path.read_bytes()
    ]
    assert leftovers == []
    # A repeat finds nothing more to remove.
    status, again = _admin(server, "/admin/erase", {"customer_id": customer})
    assert status == 200 and again["already_suppressed"] and again["online_rows"] == 0
    status, bad = _admin(server, "/admin/erase", {"customer_id": "   "})
    assert status == 400 and bad["field"] == "customer_id"


def test_admin_actions_are_audited_without_secrets(server: Server) -> None:
    _admin(server, "/admin/reload", {})  # at least one of each, whatever ran before
    _admin(server, "/admin/reload", {}, token="wrong-token")
    audit = server.settings.audit_log_file
    check = verify_audit_log(audit)
    assert check.ok, check.problems
    text = audit.read_text()
    entries = [line for line in text.splitlines() if line]
    assert '"action": "reload"' in text and '"outcome": "refused"' in text
    assert all('"actor": "ops@shop"' in line for line in entries)
    metrics = _call(f"{server.url}/metrics", method="GET")[1]
    for place, content in (
        ("audit log", text),
        ("server log", server.log.read_text()),
        ("metrics", str(metrics)),
    ):
        assert TOKEN not in content, place
        assert "wrong-token" not in content, place


def test_no_personal_data_leaves_the_raw_export(
    server: Server, trained_small: tuple[Settings, TrainingRun]
) -> None:
    """Names, emails, phones and street addresses of the raw export appear nowhere else:
    not in clean data, features, bundles, logs or reports; customer ids everywhere are
    keyed pseudonyms; metrics labels carry no customer ids at all."""
    from segrec.pseudonym import CUSTOMER_ID_PATTERN

    trained, _ = trained_small
    raw = pd.read_parquet(trained.raw_dir / "synthetic" / "customers.parquet")
    personal = {
        str(v)
        for column in ("name", "email", "phone", "address")
        for v in raw[column].dropna()
        if len(str(v)) >= 6
    }
    roots = [trained.data_dir, trained.reports_dir, server.settings.data_dir, server.log.parent]
    checked = 0
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file()):
            if path.resolve().is_relative_to(trained.raw_dir.resolve()):
                continue
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
                for column in frame.columns:
                    if "customer_id" in str(column):
                        ids = frame[column].dropna().astype(str)
                        bad = ids[~ids.str.fullmatch(CUSTOMER_ID_PATTERN[1:-1])]
                        assert bad.empty, (path, column, bad.head(3).tolist())
                texts = frame.select_dtypes(include=["object", "string"])
                text = "\n".join({str(v) for c in texts.columns for v in _distinct(texts[c])})
            else:
                text = path.read_bytes().decode("latin-1")  # any bytes, one char each
            # Candidates by shape, then looked up: one pass per file, not one per value.
            found = _candidates(text)
            assert not found & personal, (path, sorted(found & personal)[:3])
            checked += 1
    assert checked > 20
    metrics = str(_call(f"{server.url}/metrics", method="GET")[1])
    labels = re.findall(r'\w+="([^"]*)"', metrics)
    assert labels and not [v for v in labels if re.search(r"c_[0-9a-f]{16}|@", v)]


def test_consent_withdrawal_takes_effect_on_the_next_request(server: Server) -> None:
    customers = server.customers.drop_duplicates("customer_id")
    customer = str(customers["customer_id"].iloc[-2])  # the last one is erased above
    body = {"customer_id": customer, "k": 3}
    assert _post(f"{server.url}/recommend", body)[1]["fallback"] is None
    status, change = _admin(
        server, "/admin/consent", {"customer_id": customer, "personalisation": False}
    )
    assert status == 200 and change["online_updated"], change
    withdrawn = _post(f"{server.url}/recommend", body)[1]
    assert withdrawn["fallback"] == "no_consent" and withdrawn["segment"] is None
    status, change = _admin(
        server, "/admin/consent", {"customer_id": customer, "personalisation": True}
    )
    assert status == 200
    assert _post(f"{server.url}/recommend", body)[1]["fallback"] is None
    # The ledger keeps both changes for the next training; the newest wins.
    ledger = ConsentLedger(server.settings.consent_file)
    assert ledger.latest() == {customer: True}
    assert len(server.settings.consent_file.read_text().splitlines()) == 2
    withdraw = {"customer_id": customer, "personalisation": False}
    assert _admin(server, "/admin/consent", withdraw, token=None)[0] == 401
    assert _admin(server, "/admin/consent", withdraw, token="wrong-token")[0] == 403
    assert _post(f"{server.url}/recommend", body)[1]["fallback"] is None  # refused: unchanged
    status, answer = _admin(server, "/admin/consent", {"customer_id": customer})
    assert status == 400 and "personalisation" in str(answer)  # it is required


def test_the_next_feature_build_applies_the_consent_ledger(
    trained_small: tuple[Settings, TrainingRun], tmp_path: Path
) -> None:
    trained, _ = trained_small
    clean = pd.read_parquet(trained.clean_dir / "customers.parquet")
    consenting = clean.loc[clean["consent_personalisation"], "customer_id"].iloc[:2].tolist()
    refusing = clean.loc[~clean["consent_personalisation"], "customer_id"].iloc[:1].tolist()
    ledger = ConsentLedger(tmp_path / "consent.jsonl")
    now = dt.datetime.now(dt.UTC)
    ledger.append(consenting[0], False, now)
    ledger.append(refusing[0], True, now)
    ledger.append(consenting[1], False, now)
    ledger.append(consenting[1], True, now)  # changed their mind: the newest counts
    with (tmp_path / "consent.jsonl").open("a") as handle:
        handle.write('{"torn line')  # a crash mid-append: skipped
    inputs = load_inputs(trained.clean_dir, ledger.latest())
    flags = inputs.customers.set_index("customer_id")["consent_personalisation"]
    assert not flags[consenting[0]] and flags[refusing[0]] and flags[consenting[1]]
    unchanged = ~clean["customer_id"].isin([*consenting, *refusing])
    assert (
        flags[clean.loc[unchanged, "customer_id"]].to_numpy()
        == clean.loc[unchanged, "consent_personalisation"].to_numpy()
    ).all()
