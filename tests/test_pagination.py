"""Walking every page of a query returns each matching image exactly once, in contract order,
and a page costs a fixed number of SQL statements whatever its size.

The seed has ties in created_at (pairs), updated_at (fives) and filename (dup.jpg x3), so the
id tie-break is what keeps pages from repeating or skipping rows.
"""

from __future__ import annotations

import pytest
from conftest import ENGINES, engine_database
from seeded_catalog import build_catalog, expected

from edgecatalog.explain import captured_statements
from edgecatalog.listing import sql as listing_sql
from edgecatalog.models import database

SORTS = ("created_at", "updated_at", "filename")
ORDERS = ("asc", "desc")
QUERIES = ({}, {"split": "val"}, {"class_values": "cat,dog"}, {"search": "jpg"})


@pytest.fixture(scope="module", params=ENGINES)
def cat(request, tmp_path_factory):
    catalog = build_catalog(
        tmp_path_factory.mktemp("pages"), engine_database(request, request.param)
    )
    yield catalog
    database.close()


def walk(cat, query: dict[str, str], limit: int) -> tuple[list[int], set[int]]:
    ids: list[int] = []
    totals = set()
    offset = 0
    for _ in range(200):  # bounded: the seed has fewer than 200 images
        resp = cat.client.get(
            "/data/images",
            headers=cat.headers,
            query_string={**query, "limit": limit, "offset": offset},
        )
        assert resp.status_code == 200
        body = resp.get_json()
        assert body["meta"]["offset"] == offset and body["meta"]["limit"] == limit
        assert body["meta"]["count"] == len(body["data"])
        totals.add(body["meta"]["total"])
        if not body["data"]:
            break
        ids.extend(row["id"] for row in body["data"])
        offset += limit
    return ids, totals


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("query", QUERIES, ids=repr)
@pytest.mark.parametrize("limit", (1, 7))
def test_walk_every_page(cat, sort, order, query, limit):
    want = expected(cat.records, query, sort, order)
    got, totals = walk(cat, {**query, "sort": sort, "order": order}, limit)
    assert len(got) == len(set(got))  # nothing repeated
    assert got == want  # nothing skipped, right order
    assert totals == {len(want)}


def test_default_sort_is_created_at_desc(cat):
    resp = cat.client.get("/data/images?limit=100", headers=cat.headers)
    assert [r["id"] for r in resp.get_json()["data"]] == expected(cat.records, {})


def test_offset_past_the_end(cat):
    resp = cat.client.get("/data/images?offset=1000&limit=5", headers=cat.headers)
    body = resp.get_json()
    assert resp.status_code == 200 and body["data"] == []
    assert body["meta"] == {"count": 0, "limit": 5, "offset": 1000, "total": len(cat.records)}


def test_limit_defaults_and_clamp(cat):
    body = cat.client.get("/data/images", headers=cat.headers).get_json()
    assert body["meta"]["limit"] == 50 and body["meta"]["count"] == min(50, len(cat.records))
    body = cat.client.get("/data/images?limit=500", headers=cat.headers).get_json()
    assert body["meta"]["limit"] == 100 and body["meta"]["count"] == len(cat.records)


def _statements(cat, url: str) -> list[str]:
    """The SQL statements one request runs: on SQLite traced on the real connection (every
    statement the engine runs), on PostgreSQL from peewee's statement log (every statement
    the catalog sends). The auth state's poll of ``auth_epoch`` is left out: it runs once per
    interval of the clock, in whichever request comes first, whatever that request asks."""
    database.connect(reuse_if_open=True)
    conn = database.connection()
    if not hasattr(conn, "set_trace_callback"):
        with captured_statements() as statements:
            resp = cat.client.get(url, headers=cat.headers)
        assert resp.status_code == 200
        return [s.sql for s in statements if "auth_epoch" not in s.sql]
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        resp = cat.client.get(url, headers=cat.headers)
    finally:
        conn.set_trace_callback(None)
    assert resp.status_code == 200
    return [sql for sql in seen if "auth_epoch" not in sql]


@pytest.mark.parametrize("extra", ("", "&device_id=cam02", "&class_values=cat&project_id=1"))
def test_query_count_does_not_grow_with_page_size(cat, extra, monkeypatch):
    # A small chunk, so that every page below spans several.
    monkeypatch.setattr(listing_sql, "ANNOTATION_CHUNK", 4)
    small = _statements(cat, "/data/images?include_annotations=true&limit=5" + extra)
    large = _statements(cat, "/data/images?include_annotations=true&limit=100" + extra)
    # The large page really is larger, and really carries annotations.
    body = cat.client.get(
        "/data/images?include_annotations=true&limit=100" + extra, headers=cat.headers
    ).get_json()
    assert body["meta"]["count"] > 5
    assert sum(len(r["annotations"]) for r in body["data"]) > 5
    # Annotations are read ANNOTATION_CHUNK images a statement (the engine sorts each
    # statement's rows whole): one statement per chunk of the page, never one per image.
    chunks = -(-body["meta"]["count"] // listing_sql.ANNOTATION_CHUNK)
    assert chunks > 1  # the page really spans chunks
    annotation_reads = [sql for sql in large if "JOIN annotation a" in sql]
    assert len(annotation_reads) == chunks, annotation_reads
    assert len([sql for sql in small if "JOIN annotation a" in sql]) == 2  # 5 images: 4 + 1
    # count + rows + annotations (+ the device lookup when filtering by device)
    assert len(large) - chunks <= 3, large
    # Each image still carries its own annotations, in z order, across the chunks' seams.
    for row in body["data"]:
        want = database.execute_sql(
            f"SELECT id FROM annotation WHERE image_id = {int(row['id'])} ORDER BY z_order, id"
        ).fetchall()
        assert [a["id"] for a in row["annotations"]] == [w[0] for w in want]


def test_single_image_query_count(cat):
    some = cat.records[3].id
    seen = _statements(cat, f"/data/images/{some}")
    assert len(seen) <= 2, seen
