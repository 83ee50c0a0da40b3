"""The /ui app's JSON (``serving/ui``) over a real engine on the trained small storefront,
through Starlette's test client (no server): cards, picking, console data, and how every
part degrades when its file is absent."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from segrec.settings import Settings
from serving.engine import RecommendationEngine
from serving.loading import build_engine
from serving.ui.app import STATIC, build_ui_app
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine(trained_small: tuple[Settings, TrainingRun]) -> RecommendationEngine:
    started = time.perf_counter()
    built = build_engine(trained_small[0])
    print(f"\nengine built: {time.perf_counter() - started:.1f} s")
    return built


_EVALUATION_REPORTS: dict[int, str] = {}  # by TrainingRun (one per test session)


def write_evaluation_report(run: TrainingRun, settings: Settings, reports_dir: Path) -> Path:
    """``evaluation.json`` of the trained run, as ``make train`` writes it (the fixture
    trains without writing reports; the plots of the HTML report are left out)."""
    from training.html_report import json_ready
    from training.train.report import report_dict

    if id(run) not in _EVALUATION_REPORTS:  # the bootstrap intervals take a while: once
        _EVALUATION_REPORTS[id(run)] = json.dumps(
            json_ready(report_dict(run, settings)), default=str
        )
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / "evaluation.json"
    path.write_text(_EVALUATION_REPORTS[id(run)])
    return path


@pytest.fixture(scope="module")
def client(
    trained_small: tuple[Settings, TrainingRun],
    engine: RecommendationEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    trained, run = trained_small
    reports = tmp_path_factory.mktemp("ui_reports")
    started = time.perf_counter()
    write_evaluation_report(run, trained, reports)
    print(f"evaluation report: {time.perf_counter() - started:.1f} s")
    settings = trained.model_copy(update={"reports_dir": reports})
    with TestClient(build_ui_app(settings, lambda: engine)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def bare(
    trained_small: tuple[Settings, TrainingRun],
    engine: RecommendationEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> TestClient:
    """The app on a machine holding only the bundle (a container): no reports, no
    segment history, no features or clean tables."""
    root = tmp_path_factory.mktemp("bare")
    settings = trained_small[0].model_copy(
        update={"data_dir": root / "data", "reports_dir": root / "reports"}
    )
    return TestClient(build_ui_app(settings, lambda: engine))


def _snapshot(settings: Settings) -> pd.DataFrame:
    frame = pd.read_parquet(settings.features_dir / "customer_segments.parquet")
    return frame[frame["event_timestamp"] == frame["event_timestamp"].max()]


def test_overview_lists_the_served_segments_and_clock(
    client: TestClient, engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    body = client.get("/api/overview").json()
    model = engine.bundle.segment_model
    assert body["bundle_version"] == engine.bundle.version
    assert [s["id"] for s in body["segments"]] == [int(i) for i in model.segment_ids]
    counts = _snapshot(trained_small[0])["segment_id"].value_counts()
    for segment in body["segments"]:
        assert segment["customers"] == counts.get(segment["id"], 0)
    assert body["customers"] is None  # the snapshot is here: nothing to explain
    served = dt.datetime.fromisoformat(body["now"])
    assert abs((served - engine.clock()).total_seconds()) < 60


def test_product_cards_carry_bundle_facts_and_titles(
    client: TestClient, engine: RecommendationEngine, trained_small: tuple[Settings, TrainingRun]
) -> None:
    ids = engine.product_names[:3]
    body = client.get("/api/products", params={"ids": ",".join([*ids, "P999999"])}).json()
    products = pd.read_parquet(trained_small[0].clean_dir / "products.parquet").set_index(
        "product_id"
    )
    assert body["unknown"] == ["P999999"] and body["titles_missing"] is None
    for index, product in enumerate(ids):
        card = body["products"][product]
        assert card["title"] == products.loc[product, "title"]
        assert card["category"] == str(engine.category_names[engine.category[index]])
        assert card["in_stock"] == bool(engine.bundle.group("items")["in_stock"][index])
        assert card["price"] == pytest.approx(products.loc[product, "price"], abs=0.01)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "ids"),
        ("ids=", "ids"),
        ("ids=" + ",".join(f"P{i:06d}" for i in range(201)), "ids"),
        ("ids=P1," + "P" * 65, "ids"),
        ("ids=P1,%0A", "ids"),
    ],
)
def test_bad_product_queries_are_refused_naming_the_field(
    client: TestClient, query: str, field: str
) -> None:
    answer = client.get(f"/api/products?{query}")
    assert answer.status_code == 400 and answer.json()["field"] == field


def test_customers_by_prefix_and_at_random_from_a_segment(
    client: TestClient, trained_small: tuple[Settings, TrainingRun]
) -> None:
    snapshot = _snapshot(trained_small[0])
    prefix = str(snapshot["customer_id"].iloc[0])[:4]
    found = client.get("/api/customers", params={"q": prefix}).json()["customers"]
    expected = sorted(c for c in snapshot["customer_id"] if c.startswith(prefix))[:20]
    assert found == expected and found
    segment_of = dict(zip(snapshot["customer_id"], snapshot["segment_id"], strict=True))
    segment = int(snapshot["segment_id"].iloc[0])
    chosen = {
        client.get("/api/customers", params={"segment": segment}).json()["customers"][0]
        for _ in range(8)
    }
    assert all(segment_of[c] == segment for c in chosen)
    assert len(chosen) > 1  # random, not always the first member


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({}, 400, "q"),
        ({"q": "c_", "segment": "1"}, 400, "q"),
        ({"segment": "many"}, 400, "segment"),
        ({"segment": "987654"}, 404, "segment"),
        ({"q": "c" * 129}, 400, "q"),
    ],
)
def test_bad_customer_queries_are_refused_naming_the_field(
    client: TestClient, params: dict[str, str], status: int, field: str
) -> None:
    answer = client.get("/api/customers", params=params)
    assert answer.status_code == status and answer.json()["field"] == field


def test_customer_value_as_the_service_reads_it(
    client: TestClient, trained_small: tuple[Settings, TrainingRun]
) -> None:
    customer = str(_snapshot(trained_small[0])["customer_id"].iloc[0])
    body = client.get("/api/customer", params={"id": customer}).json()
    assert body["known"] is True and body["error"] is None
    if not body["value_missing"]:
        assert 0.0 <= body["churn_risk"] <= 1.0
        assert body["clv_band"] in ("low", "mid", "high")
    stranger = client.get("/api/customer", params={"id": "c_0000000000000000"}).json()
    assert stranger["known"] is False
    refused = client.get("/api/customer", params={"id": "alice"})
    assert refused.status_code == 400 and refused.json()["field"] == "id"


def test_segments_payload_from_bundle_history_and_reports(
    client: TestClient, engine: RecommendationEngine
) -> None:
    body = client.get("/api/segments").json()
    model = engine.bundle.segment_model
    current = body["current"]
    assert [s["id"] for s in current["segments"]] == [int(i) for i in model.segment_ids]
    assert current["features"] == list(model.feature_names)
    units = model.centroids_in_units()
    first = current["segments"][0]["centroid"]
    assert [first[f] for f in model.feature_names] == pytest.approx(units[0], abs=1e-3)
    assert model.version in [v["version"] for v in body["history"]["versions"]]
    # The fixture segments without writing reports/segments.json: the page is told so.
    for part in ("profiles", "movement"):
        assert body[part]["available"] is False
        assert "segments.json is absent" in body[part]["reason"]
    projection = body["projection"]
    assert len(projection["centres"]) == len(units) and len(projection["points"]) > 100
    assert {p["segment"] for p in projection["points"]} <= {int(i) for i in model.segment_ids}


def test_models_payload_blend_weights_and_evaluation(
    client: TestClient, engine: RecommendationEngine
) -> None:
    body = client.get("/api/models").json()
    assert body["bundle"]["version"] == engine.bundle.version
    assert body["bundle"]["created_at"]
    blend = body["blend"]
    served = np.asarray(engine.bundle.group("blend")["weights"])
    assert blend["models"] == [str(m) for m in engine.bundle.group("blend")["models"]]
    rows = {r["name"]: r["weights"] for r in blend["rows"]}
    assert rows["global (no segment)"] == pytest.approx(served[-1], abs=1e-4)
    assert len(blend["rows"]) >= len(served)
    evaluation = body["evaluation"]
    assert evaluation["available"] and evaluation["views"]
    view = next(iter(evaluation["views"].values()))
    assert "blend" in view["models"] and view["models"]["blend"]["ndcg"] is not None


def test_a_machine_with_only_the_bundle_says_what_is_missing(bare: TestClient) -> None:
    segments = bare.get("/api/segments").json()
    for part in ("history", "movement", "profiles"):
        assert segments[part]["available"] is False
        assert "absent" in segments[part]["reason"] or "no segment" in segments[part]["reason"]
    assert segments["projection"]["available"] and segments["projection"]["points"] == []
    assert "customers not shown" in segments["projection"]["note"]
    models = bare.get("/api/models").json()
    assert models["evaluation"]["available"] is False
    assert "evaluation.json" in models["evaluation"]["reason"]
    assert models["blend"]["available"] is True  # the bundle is always there
    overview = bare.get("/api/overview").json()
    assert "customer_segments.parquet" in overview["customers"]
    picked = bare.get("/api/customers", params={"segment": "1"})
    assert picked.status_code == 404 and "not available" in picked.json()["error"]
    cards = bare.get("/api/products", params={"ids": "P000001"}).json()
    assert "not available" in cards["titles_missing"]


def test_not_ready_is_a_503_naming_the_reason(trained_small: tuple[Settings, TrainingRun]) -> None:
    client = TestClient(build_ui_app(trained_small[0], lambda: None))
    answer = client.get("/api/models")
    assert answer.status_code == 503 and "no bundle" in answer.json()["error"]


def test_pages_are_served_and_need_no_network(client: TestClient) -> None:
    for page in ("/", "/console.html", "/storefront.js", "/console.js", "/app.css"):
        assert client.get(page).status_code == 200, page
    assert "Storefront" in client.get("/").text
    # Offline: no file loads anything from another host.
    for path in Path(STATIC).iterdir():
        assert not re.search(r"(src|href)=\"(https?:)?//", path.read_text()), path.name
        assert "cdn" not in path.read_text().lower(), path.name


def test_the_bento_carries_the_pages() -> None:
    import yaml

    from segrec.settings import PROJECT_ROOT

    include = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())["include"]
    for path in Path(STATIC).iterdir():
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in include), relative


def test_the_picker_follows_a_new_segment_snapshot(
    trained_small: tuple[Settings, TrainingRun], engine: RecommendationEngine, tmp_path: Path
) -> None:
    trained = trained_small[0]
    settings = trained.model_copy(update={"data_dir": tmp_path / "data"})
    client = TestClient(build_ui_app(settings, lambda: engine))
    assert client.get("/api/customers", params={"q": "c_"}).status_code == 404
    # make segments writes the snapshot while the service runs: the picker sees it.
    settings.features_dir.mkdir(parents=True)
    shutil.copy(trained.features_dir / "customer_segments.parquet", settings.features_dir)
    found = client.get("/api/customers", params={"q": "c_"})
    assert found.status_code == 200 and len(found.json()["customers"]) == 20
