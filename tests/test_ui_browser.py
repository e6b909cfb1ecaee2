"""The inspection page in a real browser (Debian's headless Chromium driven by Playwright)
against the real server (waitress on a loopback port) over a real SQLite catalog: sign-in,
the grid, filters and bookmarks, the status bar, and the layout on a phone and a touch panel.

Screenshots of the grid and the detail view are written to test-artifacts/ on every run
(git-ignored) so a reviewer can look at them. Review actions: test_ui_review_browser.py.
"""

from __future__ import annotations

import math
import re
import time

import pytest
import requests
from browser_support import (
    api,
    needs_route,
    open_page,
    requires_browser,
    seed,
    shot,
    sign_in,
    tile_ids,
    wait_for_tiles,
)

from edgecatalog.catalog import update_image

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the tests are skipped then
    expect = None

pytestmark = requires_browser


def test_sign_in_with_a_token_link_shows_the_grid(settings, live_server, tokens, page):
    ids = seed(settings)
    sign_in(page, live_server, tokens["read"])
    wait_for_tiles(page, len(ids))
    assert "token" not in page.url  # removed from the address bar after reading
    assert page.evaluate("sessionStorage.getItem('edgecatalog.token')") == tokens["read"]
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    expected = [row["id"] for row in api(live_server, tokens["read"], "/data/images")["data"]]
    assert tile_ids(page) == expected == sorted(ids, reverse=True)  # newest first
    first = page.locator("#grid li.tile img").first
    expect(first).to_have_attribute("src", re.compile(r"^/files/\d+/thumbnail\?.*size=256"))
    page.wait_for_function(
        "() => { const i = document.querySelector('#grid img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    expect(page.locator("#result-count")).to_have_text(f"{len(ids)} of {len(ids)} images")
    expect(page.locator("#scope-badge")).to_have_text("read only")
    shot(page, "grid.png")


def test_bad_token_is_refused_with_the_servers_message(settings, live_server, page):
    seed(settings, 2, fancy=False)
    page.goto(f"{live_server.url}/#token=not.a.jwt")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#signin-error")).to_contain_text("token is malformed")
    assert page.evaluate("sessionStorage.getItem('edgecatalog.token')") is None
    shot(page, "signin.png")


def test_class_filter_matches_the_api(settings, live_server, tokens, page):
    seed(settings)
    sign_in(page, live_server, tokens["read"])
    wait_for_tiles(page, 12)
    page.fill('#filters [name="class_values"]', "crack, dent")
    page.click('#filters button[type="submit"]')
    page.wait_for_url(re.compile(r"class_values=crack%2C\+?dent|class_values=crack%2Cdent"))
    expected = [
        r["id"]
        for r in api(live_server, tokens["read"], "/data/images?class_values=crack,dent")["data"]
    ]
    assert 0 < len(expected) < 12
    wait_for_tiles(page, len(expected))
    assert tile_ids(page) == expected


def test_bookmarked_filter_url_reloads_the_same_view(settings, live_server, tokens, page):
    ids = seed(settings)
    for image_id in ids[:6]:
        update_image(image_id, {"split": "train"})
    query = "?split=train&class_values=scratch&sort=filename&order=asc"
    sign_in(page, live_server, tokens["read"], "/" + query)
    expected = [r["id"] for r in api(live_server, tokens["read"], "/data/images" + query)["data"]]
    assert 0 < len(expected) < 6
    wait_for_tiles(page, len(expected))
    assert tile_ids(page) == expected
    page.reload()
    wait_for_tiles(page, len(expected))
    assert tile_ids(page) == expected
    expect(page.locator('#filters [name="split"]')).to_have_value("train")
    expect(page.locator('#filters [name="class_values"]')).to_have_value("scratch")
    expect(page.locator('#filters [name="sort"]')).to_have_value("filename")
    expect(page.locator('#filters [name="order"]')).to_have_value("asc")
    # Back to the unfiltered view through the browser's history.
    page.click("#filters-reset")
    wait_for_tiles(page, len(ids))
    page.go_back()
    wait_for_tiles(page, len(expected))


def test_status_bar_says_unavailable_when_endpoints_answer_404(settings, live_server, tokens, page):
    seed(settings, 2, fancy=False)
    # The real server's own 404 for a route it does not have stands in for a missing endpoint.
    for path in ("/sync/status", "/readyz"):
        page.route(f"**{path}", lambda route: route.continue_(url=live_server.url + "/no-such"))
    sign_in(page, live_server, tokens["read"])
    wait_for_tiles(page, 2)
    for field in ("#st-sync", "#st-pending", "#st-last", "#st-disk"):
        expect(page.locator(field)).to_have_text("unavailable")


def test_status_bar_shows_the_sync_state(app, settings, live_server, tokens, page):
    needs_route(app, "/sync/status", "GET")
    seed(settings, 2, fancy=False)
    sign_in(page, live_server, tokens["read"])
    state = api(live_server, tokens["read"], "/sync/status")["data"]["state"]
    expect(page.locator("#st-sync")).to_have_text(state)
    expect(page.locator("#st-pending")).not_to_have_text(re.compile("unavailable|unknown|…"))


def test_300_image_grid_loads_thumbnails_never_full_images(settings, live_server, tokens, page):
    seed(settings, 300, fancy=False)
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    sign_in(page, live_server, tokens["read"])
    expect(page.locator("#grid li.tile").first).to_be_visible()
    for _ in range(60):  # bounded: 300 / 48 pages need 7 loads
        if page.locator("#grid li.tile").count() >= 300:
            break
        page.mouse.wheel(0, 4000)
        page.wait_for_timeout(150)
    wait_for_tiles(page, 300)
    expect(page.locator("#result-count")).to_have_text("300 of 300 images")
    page.wait_for_timeout(300)
    full = [u for u in requested if re.search(r"/files/\d+(\?|$)", u)]
    thumbs = [u for u in requested if re.search(r"/files/\d+/thumbnail\?", u)]
    lists = [u for u in requested if "/data/images?" in u]
    assert full == []
    assert 0 < len(thumbs) <= 300
    assert all("size=256" in u for u in thumbs)
    assert len(lists) == math.ceil(300 / 48)


@pytest.mark.parametrize(
    "name,options",
    [
        (
            "phone",
            {
                "viewport": {"width": 390, "height": 844},
                "is_mobile": True,
                "has_touch": True,
                "device_scale_factor": 2,
            },
        ),
        ("panel", {"viewport": {"width": 1280, "height": 800}, "has_touch": True}),
    ],
)
def test_fits_a_phone_and_a_touch_panel(browser, settings, live_server, tokens, name, options):
    ids = seed(settings, 8)
    problems: list[str] = []
    page = open_page(browser, problems, **options)
    try:
        sign_in(page, live_server, tokens["write"])
        wait_for_tiles(page, 8)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#grid img')].slice(0, 4)"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        overflow = "document.scrollingElement.scrollWidth - window.innerWidth"
        assert page.evaluate(overflow) <= 0
        if name == "phone":
            expect(page.locator("#filters")).to_be_hidden()
            page.tap("#filters-toggle")
            expect(page.locator('#filters [name="class_values"]')).to_be_visible()
            expect(page.locator('#filters [name="sort"]')).to_be_visible()
            assert (
                page.evaluate(
                    "(() => { const f = document.getElementById('filters');"
                    " return f.scrollWidth - f.clientWidth; })()"
                )
                <= 0
            )
            box = page.locator('#filters [name="sort"]').bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= options["viewport"]["width"]
            shot(page, f"{name}-filters.png")
            page.tap("#filters-toggle")
        shot(page, f"{name}-grid.png")
        page.locator(f'#grid li.tile[data-id="{ids[0]}"] button').tap()
        expect(page.locator("#d-overlay .ann")).to_have_count(3)
        page.wait_for_function("() => document.getElementById('d-image').naturalWidth > 0")
        assert page.evaluate(overflow) <= 0
        expect(page.locator("#d-split")).to_be_visible()
        shot(page, f"{name}-detail.png")
    finally:
        page.context.close()
    assert problems == []


def test_project_and_batch_choices_come_from_the_api(app, settings, live_server, tokens, page):
    for rule, method in (
        ("/data/projects", "POST"),
        ("/data/batches", "GET"),
        ("/data/batches/<int:batch_id>", "PATCH"),
    ):
        needs_route(app, rule, method)
    seed(settings, 6, fancy=False)
    write = {"Authorization": f"Bearer {tokens['write']}"}
    project = requests.post(
        f"{live_server.url}/data/projects", json={"name": "Line A"}, headers=write, timeout=10
    ).json()["data"]
    batches = api(live_server, tokens["read"], "/data/batches")["data"]
    cam01 = next(b for b in batches if b["device_id"] == "cam01")
    resp = requests.patch(
        f"{live_server.url}/data/batches/{cam01['id']}",
        json={"project_id": project["id"]},
        headers=write,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    sign_in(page, live_server, tokens["read"])
    wait_for_tiles(page, 6)
    project_select = page.locator('#filters select[name="project_id"]')
    expect(project_select.locator("option", has_text="Line A")).to_have_count(1)
    batch_options = page.locator('#filters select[name="batch_id"] option')
    expect(batch_options).to_have_count(1 + len(batches))
    project_select.select_option(str(project["id"]))  # applies at once beside the grid
    page.wait_for_url(re.compile(rf"project_id={project['id']}"))
    expected = [
        r["id"]
        for r in api(live_server, tokens["read"], f"/data/images?project_id={project['id']}")[
            "data"
        ]
    ]
    assert len(expected) == 3
    wait_for_tiles(page, 3)
    assert tile_ids(page) == expected


def test_filters_fall_back_to_typed_ids_without_list_endpoints(settings, live_server, tokens, page):
    seed(settings, 4, fancy=False)
    for path in ("/data/projects", "/data/batches"):
        page.route(
            re.compile(rf".*{path}(\?.*)?$"),
            lambda route: route.continue_(url=live_server.url + "/no-such"),
        )
    sign_in(page, live_server, tokens["read"])
    wait_for_tiles(page, 4)
    typed = page.locator('#filters input[name="project_id"]')
    expect(typed).to_be_visible()
    expect(page.locator('#filters select[name="project_id"]')).to_be_hidden()
    typed.fill("null")
    page.click('#filters button[type="submit"]')
    page.wait_for_url(re.compile(r"project_id=null"))
    expected = [
        r["id"] for r in api(live_server, tokens["read"], "/data/images?project_id=null")["data"]
    ]
    wait_for_tiles(page, len(expected))
    assert tile_ids(page) == expected


def test_bad_filter_value_shows_the_apis_message(settings, live_server, tokens, page):
    seed(settings, 2, fancy=False)
    sign_in(page, live_server, tokens["read"], "/?device_id=nosuchcam")
    expect(page.locator("#message")).to_contain_text("nosuchcam")
    expect(page.locator("#grid li.tile")).to_have_count(0)


def test_evicted_image_shows_that_its_file_is_gone(settings, live_server, tokens, page):
    from edgecatalog.models import Image

    ids = seed(settings, 2, fancy=False)
    Image.update(evicted_at=int(time.time() * 1e6)).where(Image.id == ids[0]).execute()
    sign_in(page, live_server, tokens["read"])
    wait_for_tiles(page, 2)
    tile = page.locator(f'#grid li.tile[data-id="{ids[0]}"]')
    expect(tile.locator(".thumb-missing")).to_have_text("file evicted")
    tile.locator("button").click()
    expect(page.locator("#d-nofile")).to_be_visible()
    expect(page.locator("#d-stage")).to_be_hidden()
