"""The running UI in a real browser: Debian's headless Chromium driven by Playwright (nothing is downloaded)
opens the asset graph and an asset page and checks what a person would see. Screenshots: test-artifacts/e2e/."""

import dagster as dg
import duckdb
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright

from sft_assets.definitions import defs

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NODE_NAMES = "[class*=AssetNode_assetName]"  # the name on each node of an asset graph
ERROR_TEXTS = ("PythonError", "Unexpected GraphQL error", "An error occurred", "Something went wrong")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page that records uncaught script errors; none may happen."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, device_scale_factor=1.5)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert errors == []


def open_page(page, url: str) -> None:
    """Load ``url``, past Dagster's one-time welcome dialog, and check no error is shown."""
    page.goto(url, wait_until="networkidle", timeout=120_000)
    try:
        page.get_by_role("button", name="Skip").click(timeout=5_000)
    except PlaywrightTimeout:
        pass
    body = page.inner_text("body")
    assert not [text for text in ERROR_TEXTS if text in body], body[:2000]


def shown_as(name: str, label: str) -> bool:
    """Graph nodes shorten long names in the middle: selecti…_decisions."""
    head, _, tail = label.partition("…")
    return label == name or (tail != "" and name.startswith(head) and name.endswith(tail))


def test_asset_graph_shows_what_the_exports_come_from(page, live_dagster, artifacts):
    page.set_viewport_size({"width": 1300, "height": 1400})  # the graph's shape: it fits the width
    open_page(page, f"{live_dagster.url}/assets/exports?view=lineage&lineageScope=upstream&lineageDepth=20")
    graph = defs.resolve_asset_graph()
    expected = {k.to_user_string() for k in graph.get_ancestor_asset_keys(dg.AssetKey("exports"), include_self=True)}
    page.wait_for_function("([css, n]) => document.querySelectorAll(css).length >= n",
                           arg=[NODE_NAMES, len(expected)], timeout=60_000)
    labels = page.locator(NODE_NAMES).all_inner_texts()
    assert len(labels) == len(expected)
    assert all(any(shown_as(name, label) for label in labels) for name in expected), (sorted(expected), labels)
    page.screenshot(path=artifacts / "asset-graph.png")


def test_asset_page_shows_description_schema_rows_and_owner(page, live_dagster, artifacts):
    open_page(page, f"{live_dagster.url}/assets/selection_decisions")
    page.get_by_text("Row count").wait_for(timeout=60_000)
    node = defs.resolve_asset_graph().get(dg.AssetKey("selection_decisions"))
    with duckdb.connect(str(live_dagster.data / "catalog.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM selection_decisions").fetchone()[0]
    body = page.inner_text("body")
    for text in (node.description, f"{rows:,}", "first_reason", "missing_signals", "data-curation",
                 "automation_condition_sensor", "select_and_export"):
        assert text in body, text
    page.screenshot(path=artifacts / "asset-page.png")
