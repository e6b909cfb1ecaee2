"""The page's counts in a real browser (Chromium through Playwright, real waitress, real SQLite
catalog): every filter option shows the count GET /data/images/facets answers for the current
filters, the class chart and the timeline strip show the API's numbers, and dragging over the
timeline puts captured_after/captured_before in the URL and filters the grid to the API's
list for that range. The browser runs in Europe/Berlin, so its days cross the change to
summer time on 2026-03-29."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import timed_catalog
from browser_support import api, open_page, requires_browser, shot, sign_in, tile_ids

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the tests are skipped then
    expect = None

pytestmark = requires_browser
ZONE = "Europe/Berlin"
SELECTS = ("annotation_status", "split", "sync_state", "stage", "project_id", "batch_id")


@pytest.fixture
def berlin_page(browser):
    problems: list[str] = []
    page = open_page(browser, problems, timezone_id=ZONE)
    yield page
    page.context.close()
    assert problems == []


def _facets(live_server, token, state: dict) -> dict:
    query = {**state, "facet_size": "100", "histogram": "captured_at:day", "tz": ZONE}
    return api(live_server, token, f"/data/images/facets?{urlencode(query)}")["data"]


def _wait_counts(page, want: dict) -> None:
    """The page's counts equal ``want`` once its answer for the current filters is shown."""
    deadline = time.monotonic() + 10
    while True:
        try:
            _assert_counts_match(page, want)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            page.wait_for_timeout(100)


def _assert_counts_match(page, want: dict) -> None:
    for name in SELECTS:
        counts = {
            "null" if v["value"] is None else str(v["value"]): v["count"]
            for v in want["facets"][name]["values"]
        }
        shown = page.locator(f'#filters select[name="{name}"] option').evaluate_all(
            "els => els.filter(o => o.value !== '').map(o => [o.value, Number(o.dataset.count)])"
        )
        assert shown, name
        for value, count in shown:
            assert count == counts.get(value, 0), (name, value)
    chart = page.locator("#class-chart li").evaluate_all(
        "els => els.map(e => [e.dataset.value, Number(e.dataset.count)])"
    )
    assert chart == [[v["value"], v["count"]] for v in want["facets"]["class_value"]["values"]]
    bars = page.locator("#timeline rect[data-start]").evaluate_all(
        "els => els.map(e => [e.dataset.start, Number(e.dataset.count)])"
    )
    assert bars == [[b["start"], b["count"]] for b in want["histogram"]["buckets"]]


def test_counts_follow_the_filters_and_a_brushed_range_filters_the_grid(
    settings, live_server, tokens, berlin_page
):
    page, token = berlin_page, tokens["read"]
    timed_catalog.build(settings)
    sign_in(page, live_server, token)
    expect(page.locator("#grid li.tile")).to_have_count(48)
    page.wait_for_selector("#timeline rect[data-start]")
    _wait_counts(page, _facets(live_server, token, {}))

    # A choice applies at once beside the grid; every other option's count follows it, and
    # the split's own options still count as if no split were chosen.
    page.select_option('#filters select[name="split"]', "val")
    page.wait_for_url(re.compile(r"split=val"))
    want = _facets(live_server, token, {"split": "val"})
    assert want["facets"]["split"]["excludes_own_filter"] is True
    _wait_counts(page, want)

    # Drag over the middle of the timeline.
    strip = page.locator("#timeline svg").bounding_box()
    y = strip["y"] + strip["height"] / 2
    page.mouse.move(strip["x"] + strip["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(strip["x"] + strip["width"] * 0.5, y, steps=5)
    page.mouse.move(strip["x"] + strip["width"] * 0.62, y, steps=5)
    page.mouse.up()
    page.wait_for_url(re.compile(r"captured_after=.*captured_before="))
    query = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert query["split"] == "val"
    listed = api(live_server, token, f"/data/images?{urlencode({**query, 'limit': '100'})}")
    expected = [r["id"] for r in listed["data"]]
    assert 0 < len(expected) < sum(b["count"] for b in want["histogram"]["buckets"])
    expect(page.locator("#grid li.tile")).to_have_count(len(expected))
    assert tile_ids(page) == expected
    expect(page.locator("#result-count")).to_contain_text(f"{len(expected)} of")
    _wait_counts(page, _facets(live_server, token, query))
    shot(page, "facets.png")

    # The range is a bookmark: reloading the URL shows the same grid.
    page.reload()
    expect(page.locator("#grid li.tile")).to_have_count(len(expected))
    assert tile_ids(page) == expected
