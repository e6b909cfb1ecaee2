"""The page shows what the selection rules made of the queue, in a real browser against the
real server: the status bar's queue per priority, skipped and deferred counts, rate and sync
window, and the grid filtered to the images the rules keep local."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from browser_support import requires_browser, seed, shot, sign_in, tile_ids, wait_for_tiles
from sync_helpers import sync_settings

from edgecatalog.models import database
from edgecatalog.sync.worker import SyncWorker

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the tests are skipped then
    expect = None

pytestmark = requires_browser
START = time.time()
OPENS = dt.datetime.fromtimestamp(START) + dt.timedelta(hours=2)  # a window not yet open


@pytest.fixture
def settings(tmp_path, emulator, database_url):
    window = f"{OPENS:%H:%M}-{OPENS + dt.timedelta(hours=1):%H:%M}"
    return sync_settings(
        tmp_path,
        emulator,
        database__url=database_url,
        upstream__select=[{"match": "device:cam01"}, {"match": "*", "share": 0.0}],
        upstream__windows=[window],
    )


def test_status_bar_and_filter_show_the_rules_decisions(app, settings, live_server, tokens, page):
    ids = seed(settings, 12, fancy=False)  # odd ones from cam01, even ones from cam02
    worker = SyncWorker(settings)
    try:
        worker.run_pass(manual=True)  # decides; the window is closed, so nothing goes
    finally:
        worker.close()
    skipped = {i for (i,) in database.execute_sql(
        "SELECT id FROM image WHERE sync_state = 'skipped'").fetchall()}  # fmt: skip
    assert skipped == {i for n, i in enumerate(ids) if n % 2 == 0}
    sign_in(page, live_server, tokens["read"], "/?sync_state=skipped")
    wait_for_tiles(page, len(skipped))
    assert set(tile_ids(page)) == skipped
    expect(page.locator("#st-queue")).to_have_text(re.compile(r"^P1 6 \(.+\)$"))
    expect(page.locator("#st-held")).to_have_text("6 / 0")
    expect(page.locator("#st-window")).to_have_text(
        re.compile(rf"^closed, opens {OPENS:%H}.{OPENS:%M}")
    )
    expect(page.locator("#st-rate")).to_have_text("0/min")
    shot(page, "status-bar-selection.png")
