"""The storefront demo and the segment console in a real headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium; nothing downloaded) against a
real ``bentoml serve`` on the trained small storefront. Screenshots of every step go to
``<reports>/ui/`` on every run."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from segrec.settings import Settings
from tests.conftest import new_serving_workspace, serve_workspace
from tests.test_ui_api import write_evaluation_report
from training.train.pipeline import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT = 30.0  # seconds for the page to settle: generous on a busy 2-core machine
SHOTS = Settings().reports_dir / "ui"


@dataclass
class Server:
    url: str
    settings: Settings


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium and chromedriver are not installed: run make setup")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
    ):
        options.add_argument(argument)
    # Both paths given: Selenium Manager never runs, nothing is downloaded.
    started = time.perf_counter()
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    print(f"\nchromium started: {time.perf_counter() - started:.1f} s")
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(
    browser: Any,
    trained_small: tuple[Settings, TrainingRun],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    trained, run = trained_small
    root, settings = new_serving_workspace(trained_small, tmp_path_factory, "ui")
    # What the console and cards read besides the bundle: segment history and titles.
    (settings.data_dir / "segments").symlink_to(trained.segments_dir.resolve())
    (settings.data_dir / "clean").symlink_to(trained.clean_dir.resolve())
    started = time.perf_counter()
    reports = root / "reports"
    write_evaluation_report(run, trained, reports)
    print(f"\nevaluation report: {time.perf_counter() - started:.1f} s")
    env = {
        "SEGREC_REPORTS_DIR": str(reports),
        "SEGREC_FEATURE_CLOCK": "data",  # as make demo serves it
    }
    started = time.perf_counter()
    with serve_workspace(settings, trained, root, env) as url:
        print(f"bentoml serve ready: {time.perf_counter() - started:.1f} s")
        yield Server(url, settings)


def _wait(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(condition, message=what)


def _shot(browser: Any, name: str) -> None:
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def _refreshes(browser: Any) -> int:
    return int(browser.execute_script("return Number(document.body.dataset.refreshed || 0)"))


def _after_refresh(browser: Any, action: Callable[[], None]) -> None:
    """Do ``action`` and wait until the page has refreshed its carousels once more."""
    before = _refreshes(browser)
    action()
    _wait(
        browser,
        lambda b: (
            _refreshes(b) > before and not b.execute_script("return document.body.dataset.loading")
        ),
        "the carousels to refresh",
    )


def _ids(browser: Any, placement: str) -> list[str]:
    from selenium.webdriver.common.by import By

    cards = browser.find_elements(By.CSS_SELECTOR, f"#carousel-{placement} .card")
    return [c.get_attribute("data-product-id") for c in cards]


def _text(browser: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    element = browser.find_element(By.ID, element_id)
    return str(element.text) if element.is_displayed() else ""


def _open_storefront(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/ui/")
    _wait(
        browser,
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#segment-select option")) > 1,
        "the segment picker to fill",
    )


def _random_from(browser: Any, segment_id: int) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "segment-select")).select_by_value(str(segment_id))
    _after_refresh(browser, browser.find_element(By.ID, "random-customer").click)
    return str(browser.find_element(By.ID, "customer-shown").text)


def _largest_segments(server: Server) -> list[int]:
    frame = pd.read_parquet(server.settings.features_dir / "customer_segments.parquet")
    newest = frame[frame["event_timestamp"] == frame["event_timestamp"].max()]
    return [int(s) for s in newest["segment_id"].value_counts().index[:2]]


def test_customers_of_two_segments_get_different_carousels(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    started = time.perf_counter()
    _open_storefront(browser, server)
    first, second = _largest_segments(server)
    carousels: dict[int, list[str]] = {}
    for segment in (first, second):
        customer = _random_from(browser, segment)
        badge = browser.find_element(By.CSS_SELECTOR, "[data-testid=segment-badge]")
        assert badge.get_attribute("data-segment-id") == str(segment), (customer, badge.text)
        assert not _text(browser, "error"), _text(browser, "error")
        carousels[segment] = _ids(browser, "home")
        assert len(carousels[segment]) == 10
        for placement in ("product", "cart"):
            assert _ids(browser, placement), placement
        # Cards show the catalogue: a title, a price, a stock badge.
        card = browser.find_element(By.CSS_SELECTOR, "#carousel-home .card")
        assert "€" in card.text and "stock" in card.text
        _shot(browser, f"storefront-segment-{segment}")
    assert carousels[first] != carousels[second]
    # Searching by id: typing a prefix offers matching customers.
    field = browser.find_element(By.ID, "customer-id")
    field.clear()
    field.send_keys(customer[:5])
    _wait(
        browser,
        lambda b: b.find_elements(By.CSS_SELECTOR, "#customer-suggestions option"),
        "id suggestions",
    )
    offered = browser.find_elements(By.CSS_SELECTOR, "#customer-suggestions option")
    assert all(o.get_attribute("value").startswith(customer[:5]) for o in offered)
    assert customer in [o.get_attribute("value") for o in offered] or len(offered) == 20
    print(f"two segments in the browser: {time.perf_counter() - started:.1f} s")


def test_clicks_post_events_and_the_carousels_react(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    started = time.perf_counter()
    _open_storefront(browser, server)
    _random_from(browser, _largest_segments(server)[0])
    before = _ids(browser, "home")
    # Hovering a card explains it: the models' contributions and the rules.
    card = browser.find_element(By.CSS_SELECTOR, "#carousel-home .card")
    ActionChains(browser).move_to_element(card).perform()
    why = card.find_element(By.CSS_SELECTOR, "[data-testid=why]")
    _wait(browser, lambda b: why.is_displayed(), "the why-box on hover")
    assert "Why it is here" in why.text and "rules:" in why.text
    _shot(browser, "storefront-hover-why")

    clicked = before[0]
    view = card.find_element(By.CSS_SELECTOR, "button[data-action=view]")
    _after_refresh(browser, view.click)
    assert f"view {clicked}: accepted" in _text(browser, "event-log")
    after = _ids(browser, "home")
    assert clicked not in after and after != before  # viewed items make way
    assert int(browser.find_element(By.ID, "carousel-home").get_attribute("data-changed")) >= 1
    assert browser.find_elements(By.CSS_SELECTOR, "#carousel-home .card.fresh")
    assert "live session" in _text(browser, "badges")
    assert "live" in browser.find_element(By.CSS_SELECTOR, "[data-testid=segment-badge]").text
    _shot(browser, "storefront-after-click")

    carted = after[0]
    button = browser.find_element(
        By.CSS_SELECTOR,
        f'#carousel-home .card[data-product-id="{carted}"] button[data-action=cart]',
    )
    _after_refresh(browser, button.click)
    assert f"add_to_cart {carted}: accepted" in _text(browser, "event-log")
    assert carted not in _ids(browser, "home") and carted not in _ids(browser, "cart")
    assert "abandoned-cart-nudge" not in _text(browser, "rules")  # the basket is fresh

    minutes = browser.find_element(By.ID, "ff-minutes")
    minutes.clear()
    minutes.send_keys("20")
    _after_refresh(browser, browser.find_element(By.ID, "fast-forward").click)
    assert "20 min ahead" in _text(browser, "clock")
    assert "abandoned-cart-nudge" in _text(browser, "rules"), _text(browser, "rules")
    _shot(browser, "storefront-abandoned-basket")
    print(f"click, cart, fast-forward in the browser: {time.perf_counter() - started:.1f} s")


def test_unknown_visitor_and_errors_are_shown_clearly(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    _open_storefront(browser, server)
    _after_refresh(browser, browser.find_element(By.ID, "new-visitor").click)
    fallback = browser.find_element(By.ID, "fallback")
    assert fallback.is_displayed() and fallback.get_attribute("data-reason") == "unknown_customer"
    assert "Not fully personalised" in fallback.text
    assert len(_ids(browser, "home")) == 10  # popularity still fills the page
    _shot(browser, "storefront-unknown-visitor")

    field = browser.find_element(By.ID, "customer-id")
    field.clear()
    field.send_keys("c_" + "f" * 200)
    _after_refresh(browser, browser.find_element(By.ID, "load-customer").click)
    error = _text(browser, "error")
    assert "400" in error and "customer_id" in error, error
    assert not browser.find_element(By.ID, "carousel-home").is_displayed()
    _shot(browser, "storefront-error")


def test_console_renders_segments_models_and_live_metrics(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    started = time.perf_counter()
    # An unknown visitor's carousel: a fallback the live panel must show from /metrics.
    request = urllib.request.Request(
        f"{server.url}/recommend",
        data=json.dumps({"customer_id": "c_0000000000000000", "k": 3}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["fallback"] == "unknown_customer"
    browser.set_window_size(1400, 3200)
    try:
        browser.get(f"{server.url}/ui/console.html")
        overview = browser.execute_script("return fetch('/ui/api/overview').then(r => r.json())")
        segments = len(overview["segments"])
        _wait(
            browser,
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#segment-rows tbody tr")) == segments,
            "the segment table",
        )
        names = [s["name"] for s in overview["segments"]]
        assert all(name in _text(browser, "segment-table") for name in names)
        plots = {
            "projection": "circle.point",
            "sizes": "rect.bar",
            "blend": "rect.bar",
            "segment-ndcg": "rect.bar",
        }
        for plot, marks in plots.items():
            found = browser.find_elements(By.CSS_SELECTOR, f"svg[data-testid={plot}] {marks}")
            assert found, plot
        centres = browser.find_elements(
            By.CSS_SELECTOR, "svg[data-testid=projection] circle.centre"
        )
        assert len(centres) == segments
        assert browser.find_elements(By.CSS_SELECTOR, "#evaluation-table tbody tr")
        assert "blend" in _text(browser, "evaluation-table")
        _wait(browser, lambda b: "requests (total)" in _text(b, "live-stats"), "the live panel")
        _wait(
            browser,
            lambda b: "unknown_customer" in _text(b, "fallback-table"),
            "fallbacks from /metrics",
        )
        assert " ms" in _text(browser, "live-stats")
        # No segments report in this workspace: the page says so instead of failing.
        assert "not available" in _text(browser, "movement-table")
        assert "segments.json is absent" in _text(browser, "movement-table")
        assert not _text(browser, "error"), _text(browser, "error")
        _shot(browser, "console")
    finally:
        browser.set_window_size(1400, 1100)
    print(f"console in the browser: {time.perf_counter() - started:.1f} s")
