"""Review at the speed of the line, in a real browser: selection (click, shift-click,
Ctrl-click, Ctrl-A over every image matching the filters), the bulk bar and its confirmation
above 1,000 images, the review queues, a failed bulk change, and a walk of 20 images with the
keyboard alone. Every change is checked through the API."""

from __future__ import annotations

import time

from browser_support import api, requires_browser, seed, shot, sign_in, tile_ids, wait_for_tiles
from test_bulk_edits import _split_of, seed_many

from edgecatalog.auth import Authenticator
from edgecatalog.models import Image, database
from edgecatalog.revocation import revoke_tokens

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the tests are skipped then
    expect = None

pytestmark = requires_browser


def listed(live_server, token: str, query: str = "") -> dict[int, dict]:
    rows, offset = {}, 0
    while True:
        body = api(live_server, token, f"/data/images?limit=100&offset={offset}&{query}")
        rows.update({row["id"]: row for row in body["data"]})
        offset += 100
        if offset >= body["meta"]["total"]:
            return rows


def box(page, index: int):
    return page.locator("#grid li.tile").nth(index).locator(".tile-select")


def test_click_shift_click_and_ctrl_click_select_then_set_status(
    settings, live_server, tokens, page
):
    seed(settings, 12, fancy=False)
    sign_in(page, live_server, tokens["write"])
    wait_for_tiles(page, 12)
    order = tile_ids(page)
    box(page, 1).click()
    box(page, 4).click(modifiers=["Shift"])
    expect(page.locator("#sel-count")).to_have_text("4 selected")
    page.locator("#grid li.tile").nth(7).locator("button").click(modifiers=["Control"])
    expect(page.locator("#sel-count")).to_have_text("5 selected")
    expect(page.locator("#detail")).to_be_hidden()  # a modified click selects, never opens
    box(page, 2).click()  # off again
    expect(page.locator("#sel-count")).to_have_text("4 selected")
    page.select_option("#bulk-status", "completed")
    expect(page.locator("#bulk-result")).to_have_text("Changed 4 of 4 images.")
    rows = listed(live_server, tokens["read"])
    chosen = {order[i] for i in (1, 3, 4, 7)}
    assert {i for i, r in rows.items() if r["annotation_status"] == "completed"} == chosen
    page.locator("#bulk-bar [data-set=pinned][data-value=true]").click()
    expect(page.locator("#bulk-result")).to_have_text("Changed 4 of 4 images.")
    expect(page.locator("#grid li.tile.pinned .pin-mark")).to_have_count(4)
    rows = listed(live_server, tokens["read"])
    assert {i for i, r in rows.items() if r["pinned"]} == chosen
    shot(page, "bulk-bar.png")


def test_ctrl_a_selects_every_match_of_the_filters_and_assigns_splits(
    settings, live_server, tokens, page
):
    seed(settings, 60, fancy=False)  # more than a page of tiles (48)
    sign_in(page, live_server, tokens["write"], "/?device_id=cam01")
    wait_for_tiles(page, 30)
    page.keyboard.press("Control+a")
    expect(page.locator("#sel-count")).to_contain_text("30 selected")
    page.select_option("#bulk-split", "test")
    expect(page.locator("#bulk-result")).to_have_text("Changed 30 of 30 images.")
    rows = listed(live_server, tokens["read"])
    assert {r["split"] for r in rows.values() if r["device_id"] == "cam01"} == {"test"}
    assert {r["split"] for r in rows.values() if r["device_id"] == "cam02"} == {"none"}
    # Every image, beyond the tiles loaded: the exact total of the list.
    page.click("#filters-reset")
    expect(page.locator("#result-count")).to_have_text("48 of 60 images")
    page.keyboard.press("Control+a")
    expect(page.locator("#sel-count")).to_contain_text("60 selected")
    page.select_option("#bulk-split", "assign")
    expect(page.locator("#bulk-result")).to_contain_text("of 60 images")
    rows = listed(live_server, tokens["read"])
    with database.connection_context():
        sha = dict(database.execute_sql("SELECT id, sha256 FROM image").fetchall())
    shares = {"train": 0.8, "val": 0.1, "test": 0.1}
    assert all(r["split"] == _split_of(sha[i], shares) for i, r in rows.items())


def test_more_than_1000_images_are_confirmed_first(settings, live_server, tokens, page):
    with database.connection_context():
        seed_many(settings, 1001)
    sign_in(page, live_server, tokens["write"])
    wait_for_tiles(page, 48)
    page.keyboard.press("Control+a")
    expect(page.locator("#sel-count")).to_contain_text("1,001 selected")
    page.select_option("#bulk-status", "completed")
    expect(page.locator("#bulk-confirm")).to_contain_text("Change 1,001 images?")
    page.click("#bulk-no")
    expect(page.locator("#bulk-confirm")).to_be_hidden()
    total = api(live_server, tokens["read"], "/data/images?annotation_status=completed")
    assert total["meta"]["total"] == 0
    page.select_option("#bulk-status", "completed")
    page.click("#bulk-yes")
    expect(page.locator("#bulk-result")).to_have_text("Changed 1001 of 1001 images.")
    total = api(live_server, tokens["read"], "/data/images?annotation_status=completed")
    assert total["meta"]["total"] == 1001


def test_a_failed_bulk_change_shows_its_error_and_changes_nothing(
    settings, live_server, tokens, page
):
    seed(settings, 6, fancy=False)
    mine = Authenticator(settings).issue_token("line-reviewer", "write")
    sign_in(page, live_server, mine)
    wait_for_tiles(page, 6)
    box(page, 0).click()
    box(page, 2).click(modifiers=["Shift"])
    time.sleep(1.1)  # a revocation covers the tokens issued before it (whole seconds)
    with database.connection_context():
        revoke_tokens("subject", "line-reviewer")
    time.sleep(1.5)  # the running service sees it within a second
    page.select_option("#bulk-status", "completed")
    expect(page.locator("#bulk-error")).to_contain_text("revoked")
    expect(page.locator("#sel-count")).to_have_text("3 selected")  # the view as it was
    wait_for_tiles(page, 6)
    rows = listed(live_server, tokens["read"])
    assert {r["annotation_status"] for r in rows.values()} == {"pending"}


def test_review_queues_menu(settings, live_server, tokens, page):
    ids = seed(settings, 12, fancy=True)  # boxes with confidences 0.3..0.95
    with database.connection_context():
        Image.update(pinned=True).where(Image.id.in_(ids[:3])).execute()
    sign_in(page, live_server, tokens["read"])
    wait_for_tiles(page, 12)
    for queue, query in (
        ("uncertain", "min_confidence=0.4&max_confidence=0.6"),
        ("unlabelled", "has_annotations=false"),
        ("pinned", "pinned=true"),
    ):
        page.click(f'#queues [data-queue="{queue}"]')
        want = api(live_server, tokens["read"], f"/data/images?limit=100&{query}")
        expect(page.locator("#result-count")).to_have_text(
            f"{len(want['data'])} of {want['meta']['total']} images"
        )
        assert sorted(tile_ids(page)) == sorted(r["id"] for r in want["data"])
    page.click('#queues [data-queue="changed"]')
    expect(page.locator("#message")).to_contain_text("No dataset export yet")
    wait_for_tiles(page, 12)


KEYS = ("a", "r", "1", "2", "3", "4")
EXPECTED = {
    "a": ("annotation_status", "completed"),
    "r": ("annotation_status", "in_progress"),
    "1": ("split", "train"),
    "2": ("split", "val"),
    "3": ("split", "test"),
    "4": ("split", "none"),
}


def test_walk_20_images_with_the_keyboard_alone(settings, live_server, tokens, page):
    seed(settings, 20, fancy=False)
    sign_in(page, live_server, tokens["write"])
    wait_for_tiles(page, 20)
    order = tile_ids(page)
    names = {r["id"]: r["filename"] for r in listed(live_server, tokens["read"]).values()}
    page.keyboard.press("ArrowRight")  # into the grid, on the first tile
    page.keyboard.press("Enter")
    expect(page.locator("#d-title")).to_have_text(names[order[0]])
    page.keyboard.press("?")
    expect(page.locator("#keys-help")).to_be_visible()
    page.keyboard.press("?")
    expect(page.locator("#keys-help")).to_be_hidden()
    started = time.monotonic()
    for i, image_id in enumerate(order):
        key = KEYS[i % len(KEYS)]
        if i == 5:  # pin and lock stay on the image
            page.keyboard.press("p")
            expect(page.locator("#d-pinned")).to_be_checked()
            page.keyboard.press("l")
            expect(page.locator("#d-locked")).to_be_checked()
        page.keyboard.press(key)
        if i + 1 < len(order):
            expect(page.locator("#d-title")).to_have_text(names[order[i + 1]])
    took = time.monotonic() - started
    expect(page.locator("#d-message")).to_be_hidden()
    rows = listed(live_server, tokens["read"])
    for i, image_id in enumerate(order):
        field, value = EXPECTED[KEYS[i % len(KEYS)]]
        assert rows[image_id][field] == value, (i, image_id, rows[image_id])
    assert rows[order[5]]["pinned"] is True and rows[order[5]]["split_locked"] is True
    assert took < 24, f"20 images took {took:.1f} s: 100 would not fit in two minutes"


def test_box_visibility_keys(settings, live_server, tokens, page):
    ids = seed(settings, 1, fancy=True)
    sign_in(page, live_server, tokens["read"])
    wait_for_tiles(page, 1)
    page.click(f'#grid li.tile[data-id="{ids[0]}"] button')
    shapes = page.locator("#d-overlay .ann")
    expect(shapes).to_have_count(3)
    page.keyboard.press("b")  # the first box selected
    page.keyboard.press("h")  # hidden
    expect(shapes).to_have_count(2)
    page.keyboard.press("h")
    expect(shapes).to_have_count(3)
    page.keyboard.press("b")
    page.keyboard.press("b")
    page.keyboard.press("b")  # past the last: the first again
    page.keyboard.press("h")
    expect(shapes).to_have_count(2)
