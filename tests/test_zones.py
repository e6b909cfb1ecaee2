"""Zones: their bounds always hold, and every page found through them is the page.

A catalog is laid out over several zones (runs of 4,096 ids, ``listing.zones``): images
written through the catalog's own path (the gated bulk writer) in zone 0, and raw copies with
chosen ids (the row triggers) in later zones, each zone's names carrying an "era" of their own
so a search term sits together in one zone, as a capture day does. Edits move some older
images' ``updated_at`` past newer ones. Every search (terms clustered, spread, absent, short),
with and without other filters, every sort and order and several offsets, is then answered by
the list and by an oracle that filters and sorts the plain rows in Python; the planner's
budgets are set so each path runs (the bounded walk, the zones, the deep-offset skip, a
filter's time window).
"""

from __future__ import annotations

import pytest
from conftest import seed_image
from count_checks import assert_counts_match_rows, assert_zones_bound_rows, copy_image
from sync_helpers import box
from werkzeug.datastructures import MultiDict

from edgecatalog import catalog, listing
from edgecatalog.listing import plan, scan_cache, zones
from edgecatalog.models import database

pytestmark = pytest.mark.both_engines
ZONE = 1 << zones.ZONE_BITS
ERAS = ("dayA", "dayB", "dayC")


def _rows() -> list[dict]:
    database.connect(reuse_if_open=True)
    cur = database.execute_sql(
        "SELECT i.id, i.filename, i.split, i.annotation_status, d.device_id, i.created_at, "
        "i.updated_at FROM image i JOIN device d ON d.id = i.device_id"
    )
    keys = ("id", "filename", "split", "annotation_status", "device_id", "created_at")
    return [dict(zip((*keys, "updated_at"), r)) for r in cur.fetchall()]


def _oracle(params: dict) -> tuple[int, list[int]]:
    rows = _rows()
    term = params.get("search", "").lower()
    kept = [
        r
        for r in rows
        if term in r["filename"].lower()
        and all(r[k] == v for k, v in params.items() if k in ("split", "annotation_status"))
        and ("device_id" not in params or r["device_id"] == params["device_id"])
    ]
    sort, desc = params.get("sort", "created_at"), params.get("order", "desc") == "desc"
    kept.sort(key=lambda r: (r[sort], r["id"]), reverse=desc)
    offset, limit = int(params.get("offset", 0)), int(params.get("limit", 50))
    return len(kept), [r["id"] for r in kept[offset : offset + limit]]


def _answer(params: dict) -> tuple[int, list[int], dict]:
    query = listing.parse_image_query(MultiDict(params))
    page = listing.select_images(query)
    return page.total, [r["id"] for r in page.rows], page.plan


@pytest.fixture
def zoned(app, settings):
    """Zone 0: 12 images through the catalog's write path; zones 1-3: 12 raw copies each,
    named for their era; then edits that give older images the newest updated_at."""
    for i in range(12):
        seed_image(
            settings,
            filename=f"cam{i % 3:02d}_base_{i:03d}.jpg",
            device_id=f"cam{i % 3:02d}",
            seed=i,
        )
    database.connect(reuse_if_open=True)
    for e, era in enumerate(ERAS, start=1):
        for i in range(12):
            copy_image(1 + i % 12, e * ZONE + i * 7, f"cam{i % 3:02d}_{era}_{i:03d}.jpg")
    for image_id in (2, ZONE + 7, 2 * ZONE + 14):
        catalog.update_image(image_id, {"split": "val"})
    database.execute_sql("UPDATE image SET annotation_status = 'in_progress' WHERE id % 3 = 0")
    return settings


QUERIES = (
    [
        {"search": term, **extra}
        for term in ("dayA", "dayC", "_day", "cam01", "zzz", "a")
        for extra in (
            {},
            {"sort": "created_at", "order": "asc"},
            {"sort": "updated_at", "order": "desc"},
            {"sort": "updated_at", "order": "asc", "limit": "5"},
            {"offset": "13", "limit": "5"},
            {"offset": "30", "limit": "4", "order": "asc"},
            {"split": "val"},
            {"device_id": "cam01", "sort": "updated_at", "order": "desc", "limit": "3"},
        )
    ]
    + [
        {"split": "train", "sort": "updated_at", "order": order, "limit": limit, "offset": offset}
        for order in ("asc", "desc")
        for limit, offset in (("5", "0"), ("4", "20"))
    ]
    + [{"annotation_status": "in_progress", "sort": "updated_at", "order": "asc", "limit": "6"}]
)

BUDGETS = {
    # name: (WALK_MIN, WALK_BUDGET, FILTER_WALK_MIN, FILTER_WALK_BUDGET)
    "service": (plan.WALK_MIN, plan.WALK_BUDGET, plan.FILTER_WALK_MIN, plan.FILTER_WALK_BUDGET),
    "zones": (1, 0, 1, 0),  # no walk: the zones answer every search
    "short walks": (2, 4, 2, 4),  # walks that come back short, then zones or windows
}


@pytest.mark.parametrize("budgets", BUDGETS, ids=list(BUDGETS))
@pytest.mark.parametrize("fts_probe", (plan.FTS_PROBE, 0), ids=("fts", "no-fts"))
def test_every_page_equals_the_oracle(zoned, monkeypatch, budgets, fts_probe):
    for name, value in zip(
        ("WALK_MIN", "WALK_BUDGET", "FILTER_WALK_MIN", "FILTER_WALK_BUDGET"), BUDGETS[budgets]
    ):
        monkeypatch.setattr(plan, name, value)
    monkeypatch.setattr(plan, "FTS_PROBE", fts_probe)
    scan_cache.forget()
    seen = set()
    for params in QUERIES:
        total, ids, chosen = _answer(params)
        assert (total, ids) == _oracle(params), (params, chosen)
        seen.add(chosen.get("page", "")[:12])
    if budgets != "service":
        assert "zone by zone" in seen  # the zones were what answered some of them
    assert_zones_bound_rows()


def test_a_deep_offset_skips_whole_zones(zoned, monkeypatch):
    monkeypatch.setattr(plan, "FTS_PROBE", 0)
    monkeypatch.setattr(plan, "WALK_BUDGET", 0)
    params = {"search": "_day", "offset": "25", "limit": "5"}
    total, ids, chosen = _answer(params)
    assert (total, ids) == _oracle(params)
    assert "skips whole zones" in chosen["page"]


def test_carried_zone_counts_follow_inserts_renames_and_deletes(zoned, monkeypatch):
    monkeypatch.setattr(plan, "FTS_PROBE", 0)
    monkeypatch.setattr(plan, "WALK_BUDGET", 0)
    scan_cache.forget()
    params = {"search": "dayB", "sort": "created_at", "order": "asc", "limit": "5"}
    assert _answer(params)[:2] == _oracle(params)
    assert scan_cache.is_carried(listing.sql.like_pattern("dayB"))
    # New matches in a new zone (carried: only rows above the old largest id are counted).
    for i in range(3):
        copy_image(1, 5 * ZONE + i, f"cam09_dayB_late{i}.jpg")
    for params in (
        {"search": "dayB"},
        {"search": "dayB", "order": "asc", "offset": "10", "limit": "5"},
    ):
        assert _answer(params)[:2] == _oracle(params)
    # A rename away and a delete: the name epoch moves, the counts are taken again.
    database.execute_sql(f"UPDATE image SET filename = 'moved.jpg' WHERE id = {2 * ZONE + 7}")
    database.execute_sql(f"DELETE FROM image WHERE id = {2 * ZONE + 14}")
    params = {"search": "dayB", "limit": "100"}
    assert _answer(params)[:2] == _oracle(params)
    assert_zones_bound_rows()
    assert_counts_match_rows()


def test_zone_bounds_widen_with_every_write(zoned):
    assert_zones_bound_rows()
    # An update moving updated_at both ways and created_at back: bounds widen to hold them.
    database.execute_sql(f"UPDATE image SET updated_at = 1, created_at = 2 WHERE id = {ZONE}")
    database.execute_sql(
        f"UPDATE image SET updated_at = 9000000000000000 WHERE id = {3 * ZONE + 7}"
    )
    assert_zones_bound_rows()
    (lo,) = database.execute_sql("SELECT created_lo FROM image_zone WHERE zone = 1").fetchone()
    assert lo == 2
    (top,) = database.execute_sql("SELECT updated_hi FROM image_zone WHERE zone = 3").fetchone()
    assert top == 9000000000000000


def test_few_rows_far_along_the_sort_order_are_sorted_not_walked_to(zoned, monkeypatch):
    # A device's names sit together in the filename order (cam00_... before cam01_...):
    # walking it from the far end passes every other device's rows first. With the filter's
    # rows few, after a short walk they are sorted instead (on PostgreSQL the planner walked
    # the filename index past 740,000 rows at 1M images).
    for name, value in zip(
        ("WALK_MIN", "WALK_BUDGET", "FILTER_WALK_MIN", "FILTER_WALK_BUDGET"), (2, 4, 2, 64)
    ):
        monkeypatch.setattr(plan, name, value)
    for extra in ({}, {"offset": "5", "limit": "4"}, {"limit": "20"}):
        params = {"device_id": "cam00", "sort": "filename", "order": "desc", **extra}
        total, ids, chosen = _answer(params)
        assert (total, ids) == _oracle(params), (params, chosen)
        assert "they are sorted" in chosen["page"], chosen
    # Read from the near end, the walk finds the page: nothing to sort.
    params = {"device_id": "cam00", "sort": "filename", "order": "asc", "limit": "5"}
    total, ids, chosen = _answer(params)
    assert (total, ids) == _oracle(params)
    assert "bounded walk" in chosen["page"], chosen


def test_rows_too_few_for_the_long_walk_get_a_short_one(app, settings, monkeypatch):
    # A filter whose rows are too few for a walk of 16 times the average within the budget
    # (a device's 33k of 1M) walks 4 times it by updated_at: enough where its rows are spread
    # over the sort order, where before they were all sorted. By filename, where a device's
    # names sit together, they are sorted without a walk. Here: 60 images, 20 a device,
    # every third in progress; a page of one row; walks of at most 15 rows.
    for i in range(60):
        seed_image(
            settings, filename=f"cam{i % 3:02d}_{i:03d}.jpg", device_id=f"cam{i % 3:02d}", seed=i
        )
    database.connect(reuse_if_open=True)
    database.execute_sql("UPDATE image SET annotation_status = 'in_progress' WHERE id % 3 = 0")
    for name, value in zip(
        ("WALK_MIN", "WALK_BUDGET", "FILTER_WALK_MIN", "FILTER_WALK_BUDGET"), (2, 4, 2, 15)
    ):
        monkeypatch.setattr(plan, name, value)
    spread = {"annotation_status": "in_progress", "sort": "updated_at", "limit": "1"}
    for order in ("desc", "asc"):
        params = {**spread, "order": order}
        total, ids, chosen = _answer(params)
        assert (total, ids) == _oracle(params), (params, chosen)
        assert "the first 12 rows" in chosen["page"], chosen  # 4 * 1 * 60 / 20
    together = {"device_id": "cam02", "sort": "filename", "order": "asc", "limit": "1"}
    total, ids, chosen = _answer(together)
    assert (total, ids) == _oracle(together), chosen
    assert "bounded walk" not in chosen["page"], chosen


def test_a_search_with_a_rare_class_rechecks_its_images(app, settings, monkeypatch):
    # 36 images: "cat" on every sixth, "person" on every other; names carry a day and a
    # device. Classes with at most CLASS_PROBE images are rechecked image by image with every
    # condition (the search's LIKE among them); more, and the search's own plan answers.
    for i in range(36):
        classes = [c for c, every in (("cat", 6), ("person", 2)) if i % every == 0]
        seed_image(
            settings,
            filename=f"cam{i % 3:02d}_day{i % 4}_{i:03d}.jpg",
            device_id=f"cam{i % 3:02d}",
            seed=i,
            annotations=tuple(box(c, 0.5, 0.5, 0.2, 0.2) for c in classes),
        )
    database.connect(reuse_if_open=True)
    database.execute_sql("UPDATE image SET annotation_status = 'in_progress' WHERE id % 4 = 0")
    monkeypatch.setattr(plan, "CLASS_PROBE", 6)  # "cat" has 6 images, "person" 18
    rows = {r["id"]: r for r in _rows()}
    classes_of = {i: set() for i in rows}
    for image_id, value in database.execute_sql(
        "SELECT image_id, class_value FROM annotation"
    ).fetchall():
        classes_of[image_id].add(value)
    for params, rare in (
        ({"class_values": "cat", "search": "day0"}, True),
        ({"class_values": "cat", "search": "cam0", "sort": "updated_at", "order": "asc"}, True),
        ({"class_values": "cat", "search": "_", "annotation_status": "in_progress"}, True),
        ({"class_values": "cat", "search": "day2", "offset": "1", "limit": "2"}, True),
        ({"class_values": "cat", "search": "zzz"}, True),
        ({"class_values": "person", "search": "day0"}, False),
        ({"class_values": "cat,person", "search": "day0", "sort": "filename"}, False),
    ):
        total, ids, chosen = _answer(params)
        wanted = set(params["class_values"].split(","))
        kept = [i for i in _oracle({**params, "limit": "100", "offset": "0"})[1]]
        kept = [i for i in kept if classes_of[i] & wanted]
        offset, limit = int(params.get("offset", 0)), int(params.get("limit", 50))
        assert (total, ids) == (len(kept), kept[offset : offset + limit]), (params, chosen)
        assert ("rechecked with every condition" in chosen.get("search", "")) is rare, chosen


def test_a_search_by_updated_at_walks_further_than_by_created_at(app, settings, monkeypatch):
    # By created_at the zones find a spread term's page as cheaply as a walk; by updated_at
    # their bounds overlap, so the walk a filter gets is tried first.
    for i in range(60):
        seed_image(
            settings, filename=f"cam{i % 3:02d}_{i:03d}.jpg", device_id=f"cam{i % 3:02d}", seed=i
        )
    for name, value in zip(
        ("WALK_MIN", "WALK_BUDGET", "FILTER_WALK_MIN", "FILTER_WALK_BUDGET"), (2, 4, 2, 64)
    ):
        monkeypatch.setattr(plan, name, value)
    monkeypatch.setattr(plan, "FTS_PROBE", 0)  # the term's zones, not its trigram candidates
    scan_cache.forget()
    for sort, path in (("updated_at", "the first 12 rows"), ("created_at", "zone by zone")):
        params = {"search": "cam01", "sort": sort, "limit": "1"}
        total, ids, chosen = _answer(params)
        assert (total, ids) == _oracle(params), (params, chosen)
        assert chosen["page"].startswith(path), chosen  # 4 * 1 * 60 / 20 rows
