"""Every counted or indexed path of the list answers fresh right after a write.

The list's totals come from trigger-kept tables (facet counts, class counts) and its search
from an FTS5 index (migration 0004). After each kind of write (insert, PATCH of split and
status, batch project/stage changes, annotation create/delete/re-class, sync_state changes,
delete), every filter set is read back at once through HTTP and compared with an oracle that
reads the plain ``image``/``annotation``/``batch`` rows with its own SQL and filters in Python.
"""

from __future__ import annotations

import threading

import pytest
import requests
from conftest import seed_image
from count_checks import assert_counts_match_rows, copy_image

from edgecatalog.catalog import NewAnnotation
from edgecatalog.engines import current as engine
from edgecatalog.listing import plan, scan_cache, sql
from edgecatalog.models import database
from edgecatalog.sync import outbox

pytestmark = pytest.mark.both_engines
BOX = (0.5, 0.5, 0.2, 0.2)


def _snapshot() -> list[dict]:
    """The catalog as the oracle sees it: plain rows, nothing the list code computes."""
    database.connect(reuse_if_open=True)
    rows = database.execute_sql(
        "SELECT i.id, i.filename, i.batch_id, d.device_id, i.annotation_status, i.split, "
        "i.sync_state, i.created_at, b.project_id, b.stage FROM image i "
        "JOIN device d ON d.id = i.device_id JOIN batch b ON b.id = i.batch_id"
    ).fetchall()
    classes: dict[int, set[str]] = {}
    for image_id, cls in database.execute_sql("SELECT image_id, class_value FROM annotation"):
        classes.setdefault(image_id, set()).add(cls)
    keys = (
        "id",
        "filename",
        "batch_id",
        "device_id",
        "annotation_status",
        "split",
        "sync_state",
        "created_at",
        "project_id",
        "stage",
    )
    return [dict(zip(keys, r), classes=classes.get(r[0], set())) for r in rows]


def _matches(rec: dict, q: dict) -> bool:
    for key, value in q.items():
        if key in ("limit", "stage"):
            continue
        if key == "project_id":
            want = None if value == "null" else int(value)
            if rec["project_id"] != want or ("stage" in q and rec["stage"] != q["stage"]):
                return False
        elif key == "class_values":
            if not rec["classes"] & set(value.split(",")):
                return False
        elif key == "search":
            if value.lower() not in rec["filename"].lower():
                return False
        elif key == "batch_id":
            if rec["batch_id"] != int(value):
                return False
        elif rec[key] != value:
            return False
    return True


def _queries(snap: list[dict]) -> list[dict]:
    batches = sorted({r["batch_id"] for r in snap})
    projects = sorted({r["project_id"] for r in snap if r["project_id"] is not None})
    qs: list[dict] = [
        {},
        {"project_id": "null"},
        {"device_id": "cam01"},
        {"device_id": "cam02"},
        {"search": "fresh"},
        {"search": "_7"},
        {"search": "ame"},
        {"search": "f"},
        {"filename": "fresh_3.jpg"},
    ]
    qs += [{"batch_id": str(b)} for b in batches]
    for p in projects:
        qs += [
            {"project_id": str(p)},
            {"project_id": str(p), "stage": "complete"},
            {"project_id": str(p), "stage": "unassigned", "split": "val"},
        ]
    qs += [{"annotation_status": s} for s in ("pending", "in_progress", "completed")]
    qs += [{"split": s} for s in ("train", "val", "test", "none")]
    qs += [{"sync_state": s} for s in ("pending", "local_only", "synced")]
    for cls in ("person", "cat", "dog"):
        # limit=2 makes the page take the EXISTS probe, limit=100 the IN list.
        qs += [{"class_values": cls, "limit": "2"}, {"class_values": cls}]
    qs += [
        {"class_values": "cat,dog"},
        {"class_values": "person", "split": "train"},
        {"class_values": "cat", "device_id": "cam02", "limit": "2"},
        {"search": "resh_1", "device_id": "cam01"},
        {"class_values": "dog", "split": "none"},
        {"class_values": "person", "annotation_status": "completed"},
        {"class_values": "person", "split": "none"},
        {"class_values": "cat", "split": "none"},
        {"class_values": "dog", "device_id": "cam01"},
    ]
    return qs


def _check_all(client, headers) -> int:
    snap = _snapshot()
    checked = 0
    for q in _queries(snap):
        limit = int(q.get("limit", 100))
        want = sorted(
            (r for r in snap if _matches(r, q)),
            key=lambda r: (r["created_at"], r["id"]),
            reverse=True,
        )
        resp = client.get("/data/images", query_string={**q, "limit": limit}, headers=headers)
        assert resp.status_code == 200, (q, resp.get_json())
        body = resp.get_json()
        assert body["meta"]["total"] == len(want), q
        assert [r["id"] for r in body["data"]] == [r["id"] for r in want[:limit]], q
        checked += 1
    return checked


@pytest.fixture
def cat(app, settings, client, auth_headers):
    names = ("person", "cat", "dog")
    for i in range(12):
        anns = tuple(NewAnnotation(names[(i + k) % 3], "bbox", BOX) for k in range(i % 3))
        seed_image(
            settings,
            filename=f"fresh_{i}.jpg",
            device_id=("cam01", "cam02")[i % 2],
            annotations=anns,
            seed=i,
        )
    return client


def _batch_of(device: str) -> int:
    return database.execute_sql(
        "SELECT b.id FROM batch b JOIN device d ON d.id = b.device_id WHERE d.device_id = ?",
        (device,),
    ).fetchone()[0]


@pytest.mark.parametrize("fts_probe", (2000, 0), ids=("fts", "like"))
def test_every_counted_path_is_fresh_after_each_write(
    cat, settings, auth_headers, fts_probe, monkeypatch
):
    # 0: every search is too common for the trigram index, so the LIKE path is checked too.
    monkeypatch.setattr(plan, "FTS_PROBE", fts_probe)
    read, write = auth_headers("read"), auth_headers("write")
    assert _check_all(cat, read) >= 30

    # insert
    seed_image(
        settings,
        filename="fresh_new_cat.jpg",
        device_id="cam02",
        seed=99,
        annotations=(NewAnnotation("cat", "bbox", BOX),),
    )
    _check_all(cat, read)

    # PATCH of split and status
    some = database.execute_sql("SELECT id FROM image ORDER BY id LIMIT 3").fetchall()
    for (image_id,), change in zip(
        some,
        (
            {"annotation_status": "completed", "split": "train"},
            {"split": "val"},
            {"annotation_status": "in_progress"},
        ),
    ):
        assert cat.patch(f"/data/images/{image_id}", json=change, headers=write).status_code == 200
        _check_all(cat, read)

    # batch project and stage
    project = cat.post("/data/projects", json={"name": "Fresh"}, headers=write).get_json()
    batch = _batch_of("cam01")
    for change in (
        {"project_id": project["data"]["id"]},
        {"stage": "complete"},
        {"stage": "unassigned"},
        {"project_id": None},
    ):
        resp = cat.patch(f"/data/batches/{batch}", json=change, headers=write)
        assert resp.status_code == 200, resp.get_json()
        _check_all(cat, read)

    # annotation create, re-class and delete (the image's only 'dog', then its last 'cat')
    target = some[0][0]
    body = {"image_id": target, "class_value": "dog", "type": "bbox", "geometry": list(BOX)}
    created = cat.post("/data/annotations", json=body, headers=write)
    assert created.status_code == 201, created.get_json()
    ann_id = created.get_json()["data"]["id"]
    _check_all(cat, read)
    resp = cat.patch(f"/data/annotations/{ann_id}", json={"class_value": "cat"}, headers=write)
    assert resp.status_code == 200, resp.get_json()
    _check_all(cat, read)
    assert cat.delete(f"/data/annotations/{ann_id}", headers=write).status_code == 200
    _check_all(cat, read)

    # sync_state, through the sync code's own bulk updates
    assert outbox.release_local_only() >= 0
    _check_all(cat, read)
    assert outbox.mark_local_only() >= 0
    _check_all(cat, read)

    # delete (no API deletes images; the catalog's tables must still stay in step, including
    # the annotations the foreign key cascades away)
    (victim,) = database.execute_sql(
        "SELECT image_id FROM annotation GROUP BY image_id "
        "ORDER BY count(DISTINCT class_value) DESC LIMIT 1"
    ).fetchone()
    with database.atomic():
        database.execute_sql("DELETE FROM image WHERE id = ?", (victim,))
    _check_all(cat, read)


def test_counts_equal_a_full_recount(cat, settings):
    """The trigger-kept tables equal a recount from the rows after a mix of writes."""
    seed_image(
        settings,
        filename="recount.jpg",
        device_id="cam03",
        seed=50,
        annotations=(NewAnnotation("dog", "bbox", BOX), NewAnnotation("dog", "bbox", BOX)),
    )
    database.execute_sql("UPDATE image SET split = 'test' WHERE id % 2 = 0")
    database.execute_sql("DELETE FROM annotation WHERE id % 3 = 0")
    database.execute_sql("UPDATE annotation SET class_value = 'cat' WHERE id % 4 = 1")
    database.execute_sql("UPDATE image SET annotation_status = 'completed' WHERE id % 3 = 1")
    # Captures moved by two hours (the hour tables' key is computed from captured_at).
    database.execute_sql("UPDATE image SET captured_at = captured_at + 7200000000 WHERE id % 3 = 2")
    # Annotations moved to another image (their classes and annotation counts move with them).
    database.execute_sql(
        "UPDATE annotation SET image_id = (SELECT min(id) FROM image) "
        "WHERE id % 5 = 2 OR class_value = 'cat'"
    )
    database.execute_sql("DELETE FROM image WHERE id IN (SELECT max(image_id) FROM annotation)")
    recounted = assert_counts_match_rows()
    # The recount is not vacuous: some image carries several annotations of one class.
    assert any(n < a for *_, n, a in recounted["image_class_facet"])
    assert len(recounted["image_class_facet"]) >= 3
    assert len(recounted["image_total_count"]) >= 2


def _scan_cached(sql: str = "SELECT random()") -> tuple:
    database.connect(reuse_if_open=True)
    return scan_cache.fetchone(sql, ())


def test_scan_cache_remembers_until_any_connection_writes(cat, settings):
    """random() shows whether the statement ran again: same value = answered from memory.
    PostgreSQL has no cheap "nothing changed" signal: there nothing is remembered at all."""
    first = _scan_cached()
    if not engine().remembers:
        assert _scan_cached() != first
        return
    assert _scan_cached() == first
    # A commit on another connection (another thread's) changes data_version.
    done = threading.Event()

    def other_writer():
        with database.connection_context():
            database.execute_sql("UPDATE image SET split = 'test' WHERE id = 1")
        done.set()

    threading.Thread(target=other_writer).start()
    assert done.wait(10)
    second = _scan_cached()
    assert second != first and _scan_cached() == second
    # A write on this very connection changes its total_changes.
    database.execute_sql("UPDATE image SET split = 'val' WHERE id = 1")
    third = _scan_cached()
    assert third != second and _scan_cached() == third
    # Inside a transaction nothing is remembered (it could be rolled back).
    with database.atomic():
        assert _scan_cached() != _scan_cached()


def test_search_total_is_fresh_across_connections(
    cat, settings, live_server, auth_headers, monkeypatch
):
    """The server's threads keep their own connections (and caches); a write made on another
    connection shows in the very next answer of each of them."""
    monkeypatch.setattr(plan, "FTS_PROBE", 0)  # the LIKE path, whose total is remembered
    headers = auth_headers("read")

    def totals(term: str) -> set[int]:
        # Several requests so that every server thread has answered (and remembered) it.
        return {
            requests.get(
                f"{live_server.url}/data/images",
                params={"search": term},
                headers=headers,
                timeout=10,
            ).json()["meta"]["total"]
            for _ in range(8)
        }

    for term in ("fresh", "fr"):
        before = sum(term in r["filename"] for r in _snapshot())
        assert totals(term) == {before}
    seed_image(settings, filename="fresh_late.jpg", device_id="cam01", seed=77)
    for term in ("fresh", "fr"):
        assert totals(term) == {sum(term in r["filename"] for r in _snapshot())} != {before}


def _oracle_total(term: str) -> int:
    return sum(term in r["filename"].lower() for r in _snapshot())


def _search_total(term: str) -> int:
    return scan_cache.search_total(sql.like_pattern(term))


def test_carried_search_total_stays_exact(cat, settings):
    """The total of a search alone is carried across inserts and recomputed after anything
    else: deletes, renames, an insert below the largest id, a rolled-back insert."""
    term = "fresh"
    assert _search_total(term) == _oracle_total(term) == 12
    # Inserts above the largest id, matching and not, from another connection.
    done = threading.Event()

    def other_writer():
        with database.connection_context():
            copy_image(1, None, "fresh_other.jpg")
            copy_image(1, None, "unrelated.jpg")
        done.set()

    threading.Thread(target=other_writer).start()
    assert done.wait(10)
    assert _search_total(term) == _oracle_total(term) == 13
    # A rename away, and a delete.
    database.execute_sql("UPDATE image SET filename = 'renamed.jpg' WHERE id = 2")
    assert _search_total(term) == _oracle_total(term) == 12
    database.execute_sql("DELETE FROM image WHERE id = 3")
    assert _search_total(term) == _oracle_total(term) == 11
    # Back into the hole below the largest id, with no delete to bump the epoch.
    copy_image(1, 3, "fresh_hole.jpg")
    assert _search_total(term) == _oracle_total(term) == 12
    # A matching insert seen inside a transaction, then rolled back; its id is then reused
    # by a row that does not match.
    with database.atomic() as tx:
        copy_image(1, None, "fresh_rolled_back.jpg")
        assert _search_total(term) == 13
        tx.rollback()
    copy_image(1, None, "nothing.jpg")
    assert _search_total(term) == _oracle_total(term) == 12


def test_carried_totals_belong_to_their_database(tmp_path, cat, settings):
    term = "fresh"
    assert _search_total(term) == 12
    from edgecatalog import db

    other = db.init_database(tmp_path / "other" / "catalog.db")
    db.migrate(other)
    database.connect(reuse_if_open=True)
    assert _search_total(term) == 0
