"""Erasure on real data and real stores (SQLite and a real redis-server): afterwards
nothing of the customer is left anywhere on disk or in the online store, later imports
withhold them, and the audit log's chain catches tampering."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from feast.infra.key_encoding_utils import deserialize_entity_key

from segrec.audit import AuditLog, clean_actor, verify_audit_log
from segrec.erasure import (
    SQL_KEYS_PER_STATEMENT,
    ErasureError,
    ErasureUnavailable,
    SuppressionList,
    customer_pseudonym,
    erase_customer,
    erase_online,
)
from segrec.event_log import EventLog
from segrec.experiments import Exposure, ExposureLog
from segrec.feature_store import open_store
from segrec.live_session import LiveEvent
from segrec.online_features import OnlineFeatureReader
from segrec.pseudonym import CUSTOMER_ID_PATTERN
from segrec.service_process import free_port
from segrec.settings import Settings
from segrec.shared_state import SUPPRESSED_KEY, open_shared_state
from tests.conftest import Dataset, feast_workspace
from training.data.pipeline import clean_dataset
from training.data.raw import RawDataset
from training.features.build import build_features
from training.features.local_redis import redis_server
from training.features.materialize import apply_and_materialise
from training.features.sessions import write_sessions

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Workspace:
    settings: Settings
    store: Any
    raw_copy: Path  # the raw export as it was, outside the data directory


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def workspace(
    request: pytest.FixtureRequest, tiny: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp(f"erasure-{request.param}")

    def build(**overrides: Any) -> Workspace:
        settings = feast_workspace(root, tiny, **overrides)
        shutil.copytree(tiny.settings.set_aside_dir, settings.set_aside_dir)
        shutil.copytree(tiny.settings.raw_dir, root / "raw_copy")
        build_features(settings, progress=False)
        apply_and_materialise(settings)
        return Workspace(settings, open_store(settings), root / "raw_copy" / "synthetic")

    if request.param == "sqlite":
        yield build()
        return
    with redis_server(root) as address:
        yield build(online_store="redis", redis_url=address)


def _a_customer_with_everything(settings: Settings) -> tuple[str, str, dict[str, Any]]:
    """(raw id, pseudonym, raw profile) of a customer with events and a merged duplicate
    when the data has one."""
    id_map = pd.read_parquet(settings.clean_dir / "customer_id_map.parquet")
    merged = id_map[id_map["source_customer_id"] != id_map["customer_id"]]
    target = str(merged["customer_id"].iloc[0]) if len(merged) else str(id_map["customer_id"][0])
    raw = pd.read_parquet(settings.raw_dir / "synthetic" / "customers.parquet")
    for _, row in raw.iterrows():
        if customer_pseudonym(str(row["customer_id"]), settings) == target:
            return str(row["customer_id"]), target, row.to_dict()
    raise AssertionError(f"no raw record pseudonymises to {target}")


def _log_activity(settings: Settings, customer: str, product: str) -> None:
    now = dt.datetime.now(dt.UTC)
    EventLog(settings.event_log_dir).append(
        [LiveEvent(customer, product, "view", now, event_id=f"erase-test-{customer}")], now
    )
    exposures = ExposureLog(settings.exposure_log_dir)
    exposures.append([Exposure(customer, "exp", "blend", "home", (product,), now, "b1", "v1")])
    exposures.close()


def _leftovers(root: Path, needles: list[str], skip: Path) -> list[str]:
    """Files under ``root`` whose bytes, or whose decoded Parquet values, name a needle."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.resolve().is_relative_to(skip.resolve()):
            continue
        data = path.read_bytes()
        if any(n.encode() in data for n in needles):
            found.append(f"{path}: raw bytes")
        elif path.suffix == ".parquet":
            text = pq.read_table(path).to_pandas().astype(str).to_csv()
            if any(n in text for n in needles):
                found.append(f"{path}: parquet values")
    return found


def test_erasure_leaves_nothing_of_the_customer(workspace: Workspace) -> None:
    settings = workspace.settings
    raw_id, pseudonym, profile = _a_customer_with_everything(settings)
    product = str(pd.read_parquet(settings.clean_dir / "products.parquet")["product_id"][0])
    _log_activity(settings, pseudonym, product)
    # The live sessions' offline copy, replayed from the log as make features does.
    sessions = write_sessions(settings, {}).path
    assert pseudonym in set(pd.read_parquet(sessions)["customer_id"])
    reader = OnlineFeatureReader(workspace.store, "customer_serving_v1", "customer_id")
    assert "customer_profile:age" not in reader.read(pseudonym).missing  # there before

    report = erase_customer(settings, raw_id, online_store=workspace.store)

    assert report.customer == pseudonym and not report.already_suppressed
    assert report.online_rows >= 1
    assert report.parquet_rows.get("features/customer_sessions.parquet") == 1
    assert pseudonym not in set(pd.read_parquet(sessions)["customer_id"])
    rebuilt = write_sessions(settings, {}).path  # the log lines went too
    assert pseudonym not in set(pd.read_parquet(rebuilt)["customer_id"])
    assert any(path.startswith("clean/") for path in report.parquet_rows)
    assert any(path.startswith("raw/") for path in report.parquet_rows)
    assert sum(report.log_lines.values()) >= 2  # the live event and the exposure
    after = reader.read(pseudonym)
    assert len(after.missing) == len(reader.features), after.missing  # no view has a row
    # Nothing left: the pseudonym, the raw id and the personal data of the raw record.
    pii = [str(profile[k]) for k in ("email", "phone", "name") if profile.get(k)]
    needles = [pseudonym, *pii]
    assert _leftovers(settings.data_dir, needles, settings.privacy_dir) == []
    raw_rows = pd.read_parquet(settings.raw_dir / "synthetic" / "customers.parquet")
    assert raw_id not in set(raw_rows["customer_id"].astype(str))
    if settings.online_store == "redis":
        online = workspace.store._get_provider().online_store
        client = online._get_client(workspace.store.config.online_store)
        keys = client.keys("*")
        assert not any(pseudonym.encode() in key for key in keys)
        # Keys name customers by keyed pseudonym only, never by a raw id.
        config = workspace.store.config
        project = config.project.encode()
        # segrec's own keys: the suppression set (members are pseudonyms) and event claims
        # (keyed hashes); every other key is Feast's.
        own = [k for k in keys if k.startswith(b"segrec:")]
        assert all(re.fullmatch(rb"segrec:(suppressed|event:[0-9a-f]{32})", k) for k in own)
        assert pseudonym.encode() in client.smembers(SUPPRESSED_KEY)
        assert all(
            re.fullmatch(CUSTOMER_ID_PATTERN, m.decode()) for m in client.smembers(SUPPRESSED_KEY)
        )
        for key in set(keys) - set(own):
            assert key.endswith(project), key
            entity = deserialize_entity_key(
                key[: -len(project)],
                entity_key_serialization_version=config.entity_key_serialization_version,
            )
            if entity.join_keys == ["customer_id"]:
                assert re.fullmatch(CUSTOMER_ID_PATTERN, entity.entity_values[0].string_val)
    # Only the keyed pseudonym is kept: in the suppression list, in the online store (for
    # every pod's /events) and in the file (for re-imports).
    assert settings.suppression_file.read_text().splitlines()[0] == pseudonym
    assert raw_id not in settings.suppression_file.read_text()
    assert pseudonym in open_shared_state(settings).all_suppressed()

    again = erase_customer(settings, pseudonym, online_store=workspace.store)
    assert again.already_suppressed and again.online_rows == 0
    assert not again.parquet_rows and not again.log_lines


def test_one_view_of_a_customer_can_be_removed_alone(workspace: Workspace) -> None:
    """What training does for customers who withdrew consent: their ``customer_embedding``
    row goes, their other views (the profile serving reads consent from) stay, and other
    customers keep theirs. More customers than one SQL statement takes are cleared."""
    from training.train.export import EMBEDDING_VIEW

    settings, store = workspace.settings, workspace.store
    customers = pd.read_parquet(settings.clean_dir / "customers.parquet")["customer_id"]
    withdrawn, kept = str(customers.iloc[-1]), str(customers.iloc[-2])
    now = pd.Timestamp.now(tz="UTC")
    rows = pd.DataFrame(
        {
            "customer_id": [withdrawn, kept],
            "event_timestamp": [now, now],
            "als_factors": [[0.5, 0.25]] * 2,
            "svd_factors": [[0.1, 0.2]] * 2,
            "svd_bias": [0.3, 0.3],
            "model_version": ["test", "test"],
            "history_items": [["P1"]] * 2,
            "history_types": [[0]] * 2,
            "history_unix": [[1]] * 2,
            "history_purchases": [[]] * 2,
        }
    )
    store.write_to_online_store(EMBEDDING_VIEW, rows)

    def present(customer: str) -> dict[str, bool]:
        found = store.get_online_features(
            features=[
                f"{EMBEDDING_VIEW}:model_version",
                "customer_profile:consent_personalisation",
            ],
            entity_rows=[{"customer_id": customer}],
        ).to_dict()
        return {
            "embedding": found["model_version"][0] is not None,
            "profile": found["consent_personalisation"][0] is not None,
        }

    assert present(withdrawn) == present(kept) == {"embedding": True, "profile": True}
    # Ids never written count for nothing; they make the list span several statements.
    absent = [f"nobody-{i}" for i in range(SQL_KEYS_PER_STATEMENT + 5)]
    removed = erase_online(store, settings, [withdrawn, *absent], views=[EMBEDDING_VIEW])
    assert removed >= 1  # SQLite counts a row per feature value, Redis one per customer
    assert present(withdrawn) == {"embedding": False, "profile": True}
    assert present(kept) == {"embedding": True, "profile": True}
    assert erase_online(store, settings, [withdrawn], views=[EMBEDDING_VIEW]) == 0
    erase_online(store, settings, [kept], views=[EMBEDDING_VIEW])  # leave the store as found


def test_a_reimport_withholds_erased_customers(workspace: Workspace, tmp_path: Path) -> None:
    settings = workspace.settings
    erased = SuppressionList(settings.suppression_file)
    if not erased.ids():  # run on its own: erase someone first
        erase_customer(settings, _a_customer_with_everything(settings)[0], workspace.store)
    reimport = settings.model_copy(
        update={"data_dir": tmp_path / "data", "reports_dir": tmp_path / "reports"}
    )
    reimport.privacy_dir.mkdir(parents=True)
    shutil.copy(settings.suppression_file, reimport.suppression_file)
    summary = clean_dataset(RawDataset(workspace.raw_copy), reimport)
    withheld = summary.report["erased_customers_withheld"]
    assert withheld["customers"] >= 1 and withheld["events"] >= 1
    assert withheld["suppressed_customers"] == len(erased.ids())
    customers = set(pd.read_parquet(reimport.clean_dir / "customers.parquet")["customer_id"])
    events = set(pd.read_parquet(reimport.clean_dir / "events.parquet")["customer_id"])
    assert not erased.ids() & (customers | events)
    # Withheld rows are counted, never set aside with their record.
    assert _leftovers(reimport.data_dir, sorted(erased.ids()), reimport.privacy_dir) == []


def test_bad_erasure_requests_are_refused_with_a_reason(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", reports_dir=tmp_path / "reports")
    for bad, reason in (("   ", "empty"), ("x" * 300, "at most 256")):
        with pytest.raises(ErasureError, match=reason):
            erase_customer(settings, bad, online_store=object())
    assert not settings.suppression_file.exists()


def test_without_the_online_store_an_erasure_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    """Other pods would not refuse the customer's events: no acknowledgement, no change."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data, online_store="redis", redis_url=f"127.0.0.1:{free_port()}")
    (data / "events").mkdir(parents=True)
    log = data / "events" / "log.jsonl"
    log.write_text('{"customer_id": "c_00000000000000a1"}\n')
    with pytest.raises(ErasureUnavailable, match="suppression list unreachable"):
        erase_customer(settings, "c_00000000000000a1", online_store=object())
    assert not settings.suppression_file.exists()
    assert log.read_text() == '{"customer_id": "c_00000000000000a1"}\n'


def test_the_audit_chain_catches_edits_removals_and_forged_actors(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for n in range(4):
        log.record(actor="ops", action="erase", outcome="erased", details={"n": n})
    assert verify_audit_log(log.path).ok and verify_audit_log(log.path).entries == 4
    lines = log.path.read_text().splitlines()

    edited = json.loads(lines[1])
    edited["outcome"] = "refused"
    log.path.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    assert verify_audit_log(log.path).problems == [
        "line 2: content does not match its hash (edited)"
    ]

    log.path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    problems = verify_audit_log(log.path).problems
    assert problems == ["line 2: does not follow the line before (removed or moved)"]

    log.path.write_text("\n".join(lines) + "\n")
    log.record(actor="ops", action="reload", outcome="swapped")
    assert verify_audit_log(log.path).ok  # appending continues the chain
    assert clean_actor("ops@shop", "admin") == "ops@shop"
    assert clean_actor('x"\n{"forged": 1}', "admin") == "admin"
    assert clean_actor("a" * 65, "admin") == "admin"
