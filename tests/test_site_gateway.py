"""The site gateway's /api routes ([site] enabled), on both engines: what a device's sync worker
sends, answered as the cloud answers it, plus the mirror of edits with the later-edit-wins
rule. The whole chain (a real device worker, a real gateway process) is in
test_site_chain.py."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import make_settings
from upload_helpers import CONTENT_TYPE, image_bytes, upload_body

from edgecatalog import create_app, retention
from edgecatalog.auth import digest_key
from edgecatalog.models import Annotation, FieldEdit, IdempotencyRecord, Image, database
from edgecatalog.timeutil import format_ts, now_us

pytestmark = pytest.mark.both_engines

KEY_A = "adk_" + "a1" * 20
KEY_B = "adk_" + "b2" * 20
UPLOAD = "/api/device/images/upload"


def gateway_settings(tmp_path, database_url, **extra):
    return make_settings(
        tmp_path,
        database__url=database_url,
        site__enabled=True,
        auth__device_keys=[f"cam-a={KEY_A}", f"cam-b=sha256:{digest_key(KEY_B)}"],
        device__id="gateway",
        **extra,
    )


@pytest.fixture
def settings(tmp_path, database_url):
    return gateway_settings(tmp_path, database_url)


def dev(key: str, idem: str = "") -> dict[str, str]:
    headers = {"X-Device-Key": key}
    if idem:
        headers["Idempotency-Key"] = idem
    return headers


def upload(client, key: str, data: bytes, metadata=None, idem: str = ""):
    return client.post(
        UPLOAD,
        data=upload_body(data, metadata),
        headers={"Content-Type": CONTENT_TYPE, **dev(key, idem)},
    )


def image_count() -> int:
    with database.connection_context():
        return Image.select().count()


def annotations_of(image_id: int) -> list[tuple]:
    with database.connection_context():
        return sorted(
            (a.class_value, a.source, a.confidence)
            for a in Annotation.select().where(Annotation.image == image_id)
        )


META = {
    "model_id": "mdl_7",
    "model_version": "2.1.0",
    "timestamp": "2026-11-28T10:00:00Z",
    "annotations": [
        {
            "class_value": "crack",
            "type": "bbox",
            "geometry": [0.5, 0.5, 0.2, 0.2],
            "confidence": 0.9,
        },
        {
            "class_value": "dent",
            "type": "bbox",
            "geometry": [0.2, 0.2, 0.1, 0.1],
            "source": "manual",
        },
    ],
}


def test_site_routes_are_served_only_when_enabled(tmp_path, database_url):
    client = create_app(make_settings(tmp_path, database__url=database_url)).test_client()
    assert client.get("/api/device/self", headers=dev(KEY_A)).status_code == 404


def test_device_self_names_the_keys_device_and_what_it_may_mirror(client, auth_headers):
    resp = client.get("/api/device/self", headers=dev(KEY_B))
    assert resp.status_code == 200
    data = resp.get_json()["data"]
    assert data["device_id"] == "cam-b" and data["status"] == "approved"
    assert set(data["gateway"]["mirrors"]) >= {"patch_image", "update_annotation"}
    assert client.get("/api/device/self").status_code == 401
    bearer = client.get("/api/device/self", headers=auth_headers("write"))
    assert bearer.status_code == 403 and bearer.get_json()["error"]["details"] == "X-Device-Key"


def test_upload_keeps_what_the_device_sent(client, auth_headers):
    resp = upload(client, KEY_A, image_bytes(seed=1), META, idem="k1")
    assert resp.status_code == 201, resp.get_json()
    image_id = resp.get_json()["data"]["image_id"]
    row = client.get(f"/data/images/{image_id}", headers=auth_headers()).get_json()["data"]
    assert row["device_id"] == "cam-a"
    with database.connection_context():
        image = Image.get_by_id(image_id)
        assert (image.model_id, image.model_version) == ("mdl_7", "2.1.0")
        assert format_ts(image.captured_at) == "2026-11-28T10:00:00Z"
    # The device's reviewer's box stays "manual"; the model's keeps its confidence.
    assert annotations_of(image_id) == [("crack", "model", 0.9), ("dent", "manual", None)]


def test_idempotency_key_replays_the_first_answer_also_after_a_restart(settings, client):
    first = upload(client, KEY_A, image_bytes(seed=2), idem="same-key")
    assert first.status_code == 201
    again = upload(client, KEY_A, image_bytes(seed=2), idem="same-key")
    assert (again.status_code, again.get_json()) == (201, first.get_json())
    database.close()
    restarted = create_app(settings).test_client()  # a new process on the same database
    after = upload(restarted, KEY_A, image_bytes(seed=2), idem="same-key")
    assert (after.status_code, after.get_json()) == (201, first.get_json())
    assert image_count() == 1
    # Another key for the same bytes: the cloud's duplicate answer, with the image's ids.
    dup = upload(restarted, KEY_A, image_bytes(seed=2), idem="other-key")
    assert dup.status_code == 409
    body = dup.get_json()
    assert body["error"]["code"] == "DUPLICATE_IMAGE"
    assert body["data"]["image_id"] == first.get_json()["data"]["image_id"]
    assert image_count() == 1
    # Keys are per device: cam-b's "same-key" is its own.
    other = upload(restarted, KEY_B, image_bytes(seed=3), idem="same-key")
    assert other.status_code == 201 and image_count() == 2
    with database.connection_context():
        assert IdempotencyRecord.select().count() == 3


def test_idempotency_key_on_another_route_is_refused(client):
    assert upload(client, KEY_A, image_bytes(seed=4), idem="k").status_code == 201
    image_id = 1
    with database.connection_context():
        image_id = Image.select(Image.id).scalar()
    resp = client.post(
        "/api/data/annotations",
        json={"image_id": image_id, "class_value": "x", "type": "bbox", "geometry": [0.5] * 4},
        headers=dev(KEY_A, "k"),
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"] == "Idempotency-Key"
    assert annotations_of(image_id) == []
    bad = upload(client, KEY_A, image_bytes(seed=5), idem="bad key\u00e9")
    assert bad.status_code == 400 and bad.get_json()["error"]["details"] == "Idempotency-Key"


def test_upload_naming_another_device_is_refused_and_logged(client, caplog):
    meta = {"device_id": "cam-b"}
    with caplog.at_level(logging.WARNING, logger="edgecatalog"):
        resp = upload(client, KEY_A, image_bytes(seed=6), meta, idem="x")
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == "DEVICE_MISMATCH"
    assert "cam-a" in caplog.text and "cam-b" in caplog.text
    assert image_count() == 0


def _uploaded(client, key=KEY_A, seed=10, meta=META) -> int:
    resp = upload(client, key, image_bytes(seed=seed), meta)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["data"]["image_id"]


def test_a_device_changes_only_its_own_images(client):
    image_id = _uploaded(client, KEY_A)
    for method, path, body in (
        ("patch", f"/api/data/images/{image_id}", {"split": "train"}),
        ("put", f"/api/device/images/{image_id}/annotations", {"annotations": []}),
        (
            "post",
            "/api/data/annotations",
            {"image_id": image_id, "class_value": "x", "type": "bbox", "geometry": [0.5] * 4},
        ),
    ):
        resp = getattr(client, method)(path, json=body, headers=dev(KEY_B))
        assert resp.status_code == 403, (method, resp.get_json())
        assert resp.get_json()["error"]["code"] == "NOT_OWN_IMAGE"
        assert resp.get_json()["error"]["details"] in ("id", "image_id")
    with database.connection_context():
        assert Image.get_by_id(image_id).split == "none"
    assert len(annotations_of(image_id)) == 2


def _field(client, auth_headers, image_id, name):
    return client.get(f"/data/images/{image_id}", headers=auth_headers()).get_json()["data"][name]


def test_later_edit_wins_field_by_field(client, auth_headers):
    image_id = _uploaded(client)
    before_review = format_ts(now_us() - 5_000_000)  # the device changed it 5 s ago ...
    review = client.patch(
        f"/data/images/{image_id}",
        json={"annotation_status": "completed"},
        headers=auth_headers("write"),
    )  # ... and a reviewer at the gateway now
    assert review.status_code == 200
    resp = client.patch(
        f"/api/data/images/{image_id}",
        json={"annotation_status": "in_progress", "split": "val", "edited_at": before_review},
        headers=dev(KEY_A),
    )
    assert resp.status_code == 200
    assert resp.get_json()["data"]["superseded"] == ["annotation_status"]
    assert _field(client, auth_headers, image_id, "annotation_status") == "completed"
    assert _field(client, auth_headers, image_id, "split") == "val"  # no later edit here
    # The device changes it again, after the review: now the device's edit is the later one.
    resp = client.patch(
        f"/api/data/images/{image_id}",
        json={"annotation_status": "pending", "edited_at": format_ts(now_us())},
        headers=dev(KEY_A),
    )
    assert resp.get_json()["data"]["superseded"] == []
    assert _field(client, auth_headers, image_id, "annotation_status") == "pending"
    with database.connection_context():
        edits = {e.field: e.origin for e in FieldEdit.select().where(FieldEdit.image == image_id)}
    assert edits == {"annotation_status": "device:cam-a", "split": "device:cam-a"}


def test_a_split_locked_at_the_gateway_does_not_move(client, auth_headers):
    image_id = _uploaded(client)
    client.patch(
        f"/data/images/{image_id}",
        json={"split": "test", "split_locked": True},
        headers=auth_headers("write"),
    )
    resp = client.patch(
        f"/api/data/images/{image_id}",
        json={"split": "train", "edited_at": format_ts(now_us())},
        headers=dev(KEY_A),
    )
    assert resp.status_code == 200 and resp.get_json()["data"]["superseded"] == ["split"]
    assert _field(client, auth_headers, image_id, "split") == "test"


def test_a_clock_ahead_counts_as_now(client, auth_headers):
    image_id = _uploaded(client)
    future = format_ts(now_us() + 3600 * 1_000_000)
    client.patch(
        f"/api/data/images/{image_id}",
        json={"split": "val", "edited_at": future},
        headers=dev(KEY_A),
    )
    # A reviewer's edit a moment later still wins over the device's "future" one.
    client.patch(f"/data/images/{image_id}", json={"split": "test"}, headers=auth_headers("write"))
    stale = client.patch(
        f"/api/data/images/{image_id}",
        json={"split": "train", "edited_at": format_ts(now_us() - 1_000_000)},
        headers=dev(KEY_A),
    )
    assert stale.get_json()["data"]["superseded"] == ["split"]
    assert _field(client, auth_headers, image_id, "split") == "test"


def test_annotation_set_is_mirrored_keeping_what_did_not_change(client):
    image_id = _uploaded(client)
    with database.connection_context():
        ids = {a.class_value: a.id for a in Annotation.select().where(Annotation.image == image_id)}
    new_set = [
        META["annotations"][0],  # unchanged: keeps its id
        {
            "class_value": "scratch",
            "type": "polygon",
            "geometry": [0.1, 0.1, 0.3, 0.1, 0.2, 0.4],
            "source": "manual",
        },
    ]
    resp = client.put(
        f"/api/device/images/{image_id}/annotations",
        json={"annotations": new_set, "edited_at": format_ts(now_us())},
        headers=dev(KEY_A),
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["data"] == {
        "image_id": image_id,
        "applied": True,
        "added": 1,
        "removed": 1,
    }
    assert annotations_of(image_id) == [("crack", "model", 0.9), ("scratch", "manual", None)]
    with database.connection_context():
        assert Annotation.get(Annotation.class_value == "crack").id == ids["crack"]
    # The same set again changes nothing.
    again = client.put(
        f"/api/device/images/{image_id}/annotations",
        json={"annotations": new_set, "edited_at": format_ts(now_us())},
        headers=dev(KEY_A),
    )
    assert again.get_json()["data"]["added"] == again.get_json()["data"]["removed"] == 0


def test_annotations_edited_at_the_gateway_later_are_kept(client, auth_headers):
    image_id = _uploaded(client)
    device_edit = format_ts(now_us() - 2_000_000)
    with database.connection_context():
        ann_id = Annotation.select(Annotation.id).where(Annotation.image == image_id).scalar()
    fix = client.patch(
        f"/data/annotations/{ann_id}", json={"class_value": "hole"}, headers=auth_headers("write")
    )
    assert fix.status_code == 200
    kept = annotations_of(image_id)
    resp = client.put(
        f"/api/device/images/{image_id}/annotations",
        json={"annotations": [], "edited_at": device_edit},
        headers=dev(KEY_A),
    )
    assert resp.get_json()["data"]["applied"] is False
    assert annotations_of(image_id) == kept and len(kept) == 2


@pytest.mark.parametrize(
    "body, field",
    [
        ({"annotations": "none"}, "body.annotations"),
        ({}, "annotations"),
        ({"annotations": [], "edited_at": "yesterday"}, "edited_at"),
        ({"annotations": [], "extra": 1}, "extra"),
        (
            {"annotations": [{"class_value": "x", "type": "bbox", "geometry": [2, 0, 0, 0]}]},
            "body.annotations[0].geometry",
        ),
    ],
)
def test_bad_annotation_sets_name_the_field_and_change_nothing(client, body, field):
    image_id = _uploaded(client)
    before = annotations_of(image_id)
    resp = client.put(f"/api/device/images/{image_id}/annotations", json=body, headers=dev(KEY_A))
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"]["details"] == field
    assert annotations_of(image_id) == before


def test_create_annotation_as_the_cloud_takes_it(client):
    image_id = _uploaded(client, meta={})
    body = {
        "image_id": image_id,
        "class_value": "late",
        "type": "bbox",
        "geometry": [0.5, 0.5, 0.1, 0.1],
        "confidence": 0.4,
    }
    first = client.post("/api/data/annotations", json=body, headers=dev(KEY_A, "late-1"))
    assert first.status_code == 201, first.get_json()
    again = client.post("/api/data/annotations", json=body, headers=dev(KEY_A, "late-1"))
    assert again.get_json() == first.get_json()
    assert annotations_of(image_id) == [("late", "model", 0.4)]
    bad = client.post("/api/data/annotations", json={**body, "geometry": [0.5]}, headers=dev(KEY_A))
    assert bad.status_code == 400 and bad.get_json()["error"]["details"] == "geometry"


def test_full_gateway_without_upstream_answers_507_and_keeps_everything(tmp_path, database_url):
    settings = gateway_settings(
        tmp_path, database_url, retention__max_disk_percent=100, retention__min_free_bytes=10**9
    )
    client = create_app(settings).test_client()
    retention.use_disk_usage(lambda path: (10**10, 10**9 - 1))  # just under the floor
    try:
        resp = upload(client, KEY_A, image_bytes(seed=20), idem="full-1")
        assert resp.status_code == 507, resp.get_json()
        assert resp.get_json()["error"]["code"] == "INSUFFICIENT_STORAGE"
        assert image_count() == 0
        with database.connection_context():
            assert IdempotencyRecord.select().count() == 0  # a retry must be tried again
    finally:
        retention.use_disk_usage(None)
    resp = upload(client, KEY_A, image_bytes(seed=20), idem="full-1")
    assert resp.status_code == 201 and image_count() == 1
    assert json.loads(json.dumps(resp.get_json()))["data"]["image_id"] >= 1


def test_remembered_answers_expire(client, monkeypatch):
    from edgecatalog import site

    assert upload(client, KEY_A, image_bytes(seed=30), idem="old").status_code == 201
    assert upload(client, KEY_A, image_bytes(seed=31), idem="new").status_code == 201
    with database.connection_context():
        IdempotencyRecord.update(created_at=now_us() - 25 * 3600 * 1_000_000).where(
            IdempotencyRecord.key == "old"
        ).execute()
    monkeypatch.setattr(site, "_pruned_at", [-site.PRUNE_EVERY_SECONDS])
    assert upload(client, KEY_A, image_bytes(seed=32), idem="newer").status_code == 201
    with database.connection_context():
        kept = sorted(r.key for r in IdempotencyRecord.select())
    assert kept == ["new", "newer"]  # the day-old answer went with the next remembered one
    # Its upload is still found by its bytes: a duplicate, not a second image.
    again = upload(client, KEY_A, image_bytes(seed=30), idem="old")
    assert again.status_code == 409 and image_count() == 3


def test_an_added_annotation_is_held_to_the_images_byte_cap(tmp_path, database_url):
    client = create_app(
        gateway_settings(tmp_path, database_url, ingest__max_annotation_bytes=1024)
    ).test_client()
    polygon = {
        "class_value": "hole",
        "type": "polygon",
        "geometry": [0.01 * (i % 90 + 5) for i in range(80)],
    }
    image_id = _uploaded(client, meta={"annotations": [polygon]})
    body = {"image_id": image_id, **polygon}
    answers = [
        client.post("/api/data/annotations", json=body, headers=dev(KEY_A)) for _ in range(8)
    ]
    statuses = [a.status_code for a in answers]
    assert 201 in statuses and statuses[-1] == 400, statuses
    refused = answers[-1].get_json()["error"]
    assert refused["details"] == "geometry" and "max_annotation_bytes" in refused["message"]
    # What is stored fits the cap, and one more of the same would not have.
    with database.connection_context():
        sizes = [
            len(a.geometry.encode()) + len(a.class_value.encode()) + len(a.source.encode())
            for a in Annotation.select().where(Annotation.image == image_id)
        ]
    assert sum(sizes) <= 1024 < sum(sizes) + sizes[0]
    assert len(sizes) == 1 + statuses.count(201)
