"""PATCH /data/images: bulk changes by ids and by filter, the split lock and force, split
assignment by content hash, the outbox, idempotency under a key (also across a failure mid
way), and bad bodies (a 400 naming the field, nothing written). Oracles are plain SQL."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgecatalog import bulk_edits
from edgecatalog.catalog import NewAnnotation, NewImage
from edgecatalog.ingest.bulk import add_images
from edgecatalog.models import Image, Outbox, database

pytestmark = pytest.mark.both_engines


def seed_many(settings, count: int, start: int = 0) -> list[int]:
    """``count`` image rows through the catalog's bulk writer (no files: a bulk change reads
    none); every third has a box of "cat" at a confidence cycling over 0.05..0.95."""
    news = [
        NewImage(
            filename=f"b{i}.jpg",
            storage_key=f"raw-data/b{i}.jpg",
            sha256=hashlib.sha256(f"bulk-{i}".encode()).hexdigest(),
            byte_size=10,
            width=64,
            height=48,
            root=str(settings.images_dir),
            device_id=("cam01", "cam02")[i % 2],
            annotations=(
                (
                    NewAnnotation(
                        "cat", "bbox", (0.5, 0.5, 0.1, 0.1), confidence=0.05 + (i % 10) / 10
                    ),
                )
                if i % 3 == 0
                else ()
            ),
        )
        for i in range(start, start + count)
    ]
    ids = []
    for at in range(0, count, 2_000):
        ids += [image_id for image_id, _ in add_images(news[at : at + 2_000])]
    return ids


def bulk(client, auth_headers, body, key: str | None = None, scope: str = "write"):
    headers = auth_headers(scope)
    if key:
        headers["Idempotency-Key"] = key
    return client.patch("/data/images", json=body, headers=headers)


def rows() -> dict[int, tuple]:
    cursor = database.execute_sql(
        "SELECT id, annotation_status, split, split_locked, pinned, updated_at FROM image"
    )
    return {r[0]: (r[1], r[2], bool(r[3]), bool(r[4]), r[5]) for r in cursor.fetchall()}


def total(client, auth_headers, **query) -> int:
    resp = client.get("/data/images", query_string={**query, "limit": 1}, headers=auth_headers())
    return resp.get_json()["meta"]["total"]


def count(sql: str) -> int:
    return database.execute_sql(sql).fetchone()[0]


def test_by_ids_sets_fields_and_only_changed_images_move(client, auth_headers, settings):
    ids = seed_many(settings, 30)
    Image.update(annotation_status="completed").where(Image.id.in_(ids[:5])).execute()
    before = rows()
    chosen = ids[:20] + [10**9]  # an id that does not exist is not matched
    resp = bulk(client, auth_headers, {"ids": chosen, "set": {"annotation_status": "completed"}})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["data"] == {"matched": 20, "changed": 15, "skipped_locked": 0}
    after = rows()
    for image_id in ids:
        if image_id in ids[5:20]:
            assert after[image_id][0] == "completed" and after[image_id][4] > before[image_id][4]
        else:
            assert after[image_id] == before[image_id]
    # The totals right after, exact, against COUNT(*).
    done = count("SELECT count(*) FROM image WHERE annotation_status = 'completed'")
    assert done == 20 == total(client, auth_headers, annotation_status="completed")
    assert total(client, auth_headers, annotation_status="pending") == 10


def test_by_filter_with_several_fields_and_an_empty_match(client, auth_headers, settings):
    seed_many(settings, 60)
    cams = count(
        "SELECT count(*) FROM image i JOIN device d ON d.id = i.device_id "
        "WHERE d.device_id = 'cam02'"
    )
    body = {"filter": {"device_id": "cam02"}, "set": {"split": "val", "pinned": True}}
    resp = bulk(client, auth_headers, body)
    assert resp.get_json()["data"] == {"matched": cams, "changed": cams, "skipped_locked": 0}
    assert count("SELECT count(*) FROM image WHERE split = 'val' AND pinned = (1 = 1)") == cams
    assert total(client, auth_headers, split="val", pinned="true") == cams
    assert total(client, auth_headers, split="val", device_id="cam02") == cams
    # Again: everything already so, nothing changes.
    assert bulk(client, auth_headers, body).get_json()["data"]["changed"] == 0
    # A filter that matches nothing changes nothing and says so.
    before = rows()
    nothing = {"filter": {"search": "no-such-name"}, "set": {"annotation_status": "completed"}}
    resp = bulk(client, auth_headers, nothing)
    assert resp.get_json()["data"] == {"matched": 0, "changed": 0, "skipped_locked": 0}
    assert rows() == before


def test_by_review_queue_filter(client, auth_headers, settings):
    seed_many(settings, 90)
    queue = {"min_confidence": "0.4", "max_confidence": "0.6", "class_values": "cat"}
    want = count(
        "SELECT count(DISTINCT image_id) FROM annotation WHERE confidence >= 0.4 "
        "AND confidence <= 0.6 AND class_value = 'cat'"
    )
    assert want > 0
    resp = bulk(
        client, auth_headers, {"filter": queue, "set": {"annotation_status": "in_progress"}}
    )
    assert resp.get_json()["data"]["matched"] == want
    assert total(client, auth_headers, annotation_status="in_progress") == want
    assert total(client, auth_headers, annotation_status="in_progress", **queue) == want


def test_a_locked_split_stays_unless_forced(client, auth_headers, settings):
    ids = seed_many(settings, 10)
    Image.update(split="train", split_locked=True).where(Image.id.in_(ids[:4])).execute()
    body = {"ids": ids, "set": {"split": "test", "annotation_status": "completed"}}
    resp = bulk(client, auth_headers, body)
    assert resp.get_json()["data"] == {"matched": 10, "changed": 10, "skipped_locked": 4}
    after = rows()
    assert [after[i][:3] for i in ids[:4]] == [("completed", "train", True)] * 4
    assert [after[i][:3] for i in ids[4:]] == [("completed", "test", False)] * 6
    # Unlocking in the same change moves them, as a single edit does.
    resp = bulk(
        client, auth_headers, {"ids": ids[:2], "set": {"split": "val", "split_locked": False}}
    )
    assert resp.get_json()["data"] == {"matched": 2, "changed": 2, "skipped_locked": 0}
    resp = bulk(client, auth_headers, {"ids": ids[2:4], "set": {"split": "val"}, "force": True})
    assert resp.get_json()["data"] == {"matched": 2, "changed": 2, "skipped_locked": 0}
    after = rows()
    assert [after[i][1:3] for i in ids[:4]] == [("val", False)] * 2 + [("val", True)] * 2


def _split_of(sha256: str, shares: dict[str, float]) -> str:
    # The documented rule, written again: the hash's first 64 bits as a point in [0, 1), on
    # the shares laid end to end in the order train, val, test, none.
    point, reached = int(sha256[:16], 16) / 2**64, 0.0
    for name in ("train", "val", "test", "none"):
        reached += shares.get(name, 0)
        if point < reached:
            return name
    return "none"


def test_assign_split_by_content_hash(client, auth_headers, settings):
    ids = seed_many(settings, 200)
    Image.update(split="none", split_locked=True).where(Image.id.in_(ids[:10])).execute()
    shares = {"train": 0.8, "val": 0.1, "test": 0.1}
    resp = bulk(client, auth_headers, {"filter": {}, "assign_split": shares})
    data = resp.get_json()["data"]
    assert data["matched"] == 200
    stored = dict(database.execute_sql("SELECT sha256, split FROM image").fetchall())
    locked = {Image.get_by_id(i).sha256 for i in ids[:10]}
    moved = [sha for sha in stored if sha not in locked]
    assert all(stored[sha] == "none" for sha in locked)
    assert all(stored[sha] == _split_of(sha, shares) for sha in moved)
    assert data["skipped_locked"] == sum(_split_of(sha, shares) != "none" for sha in locked)
    # The same image always lands in the same split: again, nothing moves.
    again = bulk(client, auth_headers, {"ids": ids, "assign_split": shares}).get_json()["data"]
    assert again["changed"] == 0


def test_assigned_proportions_within_one_percent_at_ten_thousand():
    shares = (("train", 0.8), ("val", 0.1), ("test", 0.1))
    picks = [
        bulk_edits.split_for(hashlib.sha256(f"image-{i}".encode()).hexdigest(), shares)
        for i in range(10_000)
    ]
    for name, share in shares:
        assert abs(picks.count(name) / 10_000 - share) <= 0.01, name


def test_synced_images_are_queued_for_upstream_as_single_edits(client, auth_headers, settings):
    ids = seed_many(settings, 12)
    Image.update(sync_state="synced").where(Image.id.in_(ids[:6])).execute()
    Outbox.delete().execute()
    body = {"ids": ids, "set": {"annotation_status": "completed", "pinned": True}}
    assert bulk(client, auth_headers, body).get_json()["data"]["changed"] == 12
    queued = {r.image_id: json.loads(r.payload) for r in Outbox.select()}
    # The upstream fields only (a pin is this catalog's), and only for synced images.
    assert queued == {i: {"annotation_status": "completed"} for i in ids[:6]}
    assert all(r.kind == "patch_image" and r.state == "pending" for r in Outbox.select())
    # A pin alone queues nothing.
    assert bulk(client, auth_headers, {"ids": ids, "set": {"pinned": False}}).status_code == 200
    assert Outbox.select().count() == 6


def test_idempotency_key_replays_and_refuses_another_body(client, auth_headers, settings):
    ids = seed_many(settings, 10)
    body = {"ids": ids, "set": {"annotation_status": "completed"}}
    first = bulk(client, auth_headers, body, key="k-1").get_json()["data"]
    assert first == {"matched": 10, "changed": 10, "skipped_locked": 0}
    Image.update(annotation_status="pending").where(Image.id == ids[0]).execute()
    # The retry gets the first answer and changes nothing more.
    assert bulk(client, auth_headers, body, key="k-1").get_json()["data"] == first
    assert Image.get_by_id(ids[0]).annotation_status == "pending"
    other = {"ids": ids, "set": {"annotation_status": "in_progress"}}
    resp = bulk(client, auth_headers, other, key="k-1")
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"] == "Idempotency-Key"
    assert count("SELECT count(*) FROM image WHERE annotation_status = 'in_progress'") == 0


def test_a_keyed_change_interrupted_mid_way_goes_on_where_it_stopped(
    client, auth_headers, settings, monkeypatch
):
    ids = seed_many(settings, 50)
    Image.update(split="val", split_locked=True).where(Image.id.in_(ids[::7])).execute()
    monkeypatch.setattr(bulk_edits, "CHUNK", 8)
    real, calls = bulk_edits._apply_chunk, []

    def failing_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3:  # the process dies in the third chunk's transaction
            raise RuntimeError("power cut")
        return real(*args, **kw)

    monkeypatch.setattr(bulk_edits, "_apply_chunk", failing_third)
    body = {"filter": {}, "set": {"split": "test", "annotation_status": "completed"}}
    resp = bulk(client, auth_headers, body, key="k-2")
    assert resp.status_code == 500 and "power cut" not in resp.get_data(as_text=True)
    assert count("SELECT count(*) FROM image WHERE annotation_status = 'completed'") == 16
    # New images arrive meanwhile: not part of the change (the selection's bound holds).
    late = seed_many(settings, 5, start=1000)
    resp = bulk(client, auth_headers, body, key="k-2")
    locked = len(ids[::7])
    assert resp.get_json()["data"] == {"matched": 50, "changed": 50, "skipped_locked": locked}
    assert count("SELECT count(*) FROM image WHERE annotation_status = 'completed'") == 50
    assert count("SELECT count(*) FROM image WHERE split = 'test'") == 50 - locked
    assert all(Image.get_by_id(i).annotation_status == "pending" for i in late)
    assert bulk(client, auth_headers, body, key="k-2").get_json()["data"]["matched"] == 50


BAD = [
    ({}, "ids"),
    ({"ids": [1], "filter": {}, "set": {"pinned": True}}, "ids"),
    ({"ids": [], "set": {"pinned": True}}, "ids"),
    ({"ids": list(range(1, 10_002)), "set": {"pinned": True}}, "ids"),
    ({"ids": [1, "2"], "set": {"pinned": True}}, "ids"),
    ({"ids": [True], "set": {"pinned": True}}, "ids"),
    ({"ids": [1]}, "set"),
    ({"ids": [1], "set": {}}, "set"),
    ({"ids": [1], "set": {"colour": "red"}}, "set.colour"),
    ({"ids": [1], "set": {"split": "holdout"}}, "set.split"),
    ({"ids": [1], "set": {"pinned": "yes"}}, "set.pinned"),
    ({"ids": [1], "set": {"annotation_status": 3}}, "set.annotation_status"),
    ({"ids": [1], "set": []}, "set"),
    ({"filter": {"colour": "red"}, "set": {"pinned": True}}, "filter.colour"),
    ({"filter": {"split": "holdout"}, "set": {"pinned": True}}, "filter.split"),
    ({"filter": {"min_confidence": "2"}, "set": {"pinned": True}}, "filter.min_confidence"),
    ({"filter": {"batch_id": ["1"]}, "set": {"pinned": True}}, "filter.batch_id"),
    ({"filter": "split=val", "set": {"pinned": True}}, "filter"),
    ({"ids": [1], "assign_split": {"train": 0.5}}, "assign_split"),
    ({"ids": [1], "assign_split": {"train": 0.5, "holdout": 0.5}}, "assign_split.holdout"),
    ({"ids": [1], "assign_split": {"train": 1.5, "val": -0.5}}, "assign_split.train"),
    ({"ids": [1], "assign_split": {"train": 1}, "set": {"split": "val"}}, "assign_split"),
    ({"ids": [1], "set": {"pinned": True}, "force": "yes"}, "force"),
    ({"ids": [1], "set": {"pinned": True}, "dry_run": True}, "dry_run"),
    ([1, 2], "body"),
]


def test_bad_bodies_are_refused_naming_the_field(client, auth_headers, settings):
    # One catalog for every case (a fresh one each would cost a database per case).
    seed_many(settings, 3)
    before = rows()
    for body, field in BAD:
        resp = bulk(client, auth_headers, body)
        assert resp.status_code == 400, (body, resp.get_json())
        error = resp.get_json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and error["details"] == field, (body, error)
        assert rows() == before, body


def test_read_scope_and_unknown_device(client, auth_headers, settings):
    seed_many(settings, 3)
    resp = bulk(client, auth_headers, {"ids": [1], "set": {"pinned": True}}, scope="read")
    assert resp.status_code == 403
    resp = bulk(client, auth_headers, {"filter": {"device_id": "cam9"}, "set": {"pinned": True}})
    assert resp.status_code == 404 and resp.get_json()["error"]["details"] == "device_id"
    assert count("SELECT count(*) FROM image WHERE pinned = (1 = 1)") == 0
