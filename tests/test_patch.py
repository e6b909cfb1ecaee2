"""PATCH /data/images/{id}: partial updates, the split lock, and bad bodies (nothing written)."""

from __future__ import annotations

import json

import pytest
from conftest import seed_image

from edgecatalog.models import Image

pytestmark = pytest.mark.both_engines


@pytest.fixture
def img(settings):
    return seed_image(settings, filename="p.jpg")


def patch(client, auth_headers, image_id, body, **kw):
    return client.patch(f"/data/images/{image_id}", json=body, headers=auth_headers("write"), **kw)


def stored(image_id: int) -> Image:
    return Image.get_by_id(image_id)


def test_partial_update(client, auth_headers, img):
    before = stored(img.id)
    resp = patch(client, auth_headers, img.id, {"annotation_status": "in_progress"})
    assert resp.status_code == 200
    data = resp.get_json()["data"]
    assert data["annotation_status"] == "in_progress"
    assert data["split"] == "none" and data["split_locked"] is False  # untouched
    after = stored(img.id)
    assert after.annotation_status == "in_progress" and after.split == before.split
    assert after.updated_at > before.updated_at
    assert data["updated_at"] != data["created_at"]
    got = client.get(f"/data/images/{img.id}", headers=auth_headers()).get_json()["data"]
    assert got == data


def test_unchanged_values_do_not_touch_updated_at(client, auth_headers, img):
    before = stored(img.id).updated_at
    resp = patch(client, auth_headers, img.id, {"split": "none", "annotation_status": "pending"})
    assert resp.status_code == 200 and stored(img.id).updated_at == before


def test_split_lock(client, auth_headers, img):
    assert (
        patch(client, auth_headers, img.id, {"split": "train", "split_locked": True}).status_code
        == 200
    )  # set and lock together
    locked_at = stored(img.id).updated_at
    resp = patch(client, auth_headers, img.id, {"split": "val"})
    assert resp.status_code == 409
    err = resp.get_json()["error"]
    assert err["code"] == "CONFLICT" and err["details"] == "split"
    row = stored(img.id)
    assert (row.split, row.split_locked, row.updated_at) == ("train", True, locked_at)
    # Changing the status of a locked image is fine, and so is restating its split.
    resp = patch(client, auth_headers, img.id, {"split": "train", "annotation_status": "completed"})
    assert resp.status_code == 200
    # Still locked after saying so again: refused, nothing half-written.
    resp = patch(
        client,
        auth_headers,
        img.id,
        {"split": "test", "split_locked": True, "annotation_status": "pending"},
    )
    assert resp.status_code == 409 and stored(img.id).annotation_status == "completed"
    # Unlock and change in the same request.
    resp = patch(client, auth_headers, img.id, {"split": "test", "split_locked": False})
    assert resp.status_code == 200
    row = stored(img.id)
    assert (row.split, row.split_locked) == ("test", False)
    assert patch(client, auth_headers, img.id, {"split": "val"}).status_code == 200


BAD_BODIES = [
    ({}, "body"),
    ([], "body"),
    (["split", "train"], "body"),
    ("train", "body"),
    (None, "body"),
    (5, "body"),
    ({"split": "TRAIN"}, "split"),
    ({"split": "all"}, "split"),  # 'all' is a list filter, not a split
    ({"split": 1}, "split"),
    ({"split": None}, "split"),
    ({"annotation_status": "done"}, "annotation_status"),
    ({"annotation_status": ["pending"]}, "annotation_status"),
    ({"split_locked": "true"}, "split_locked"),
    ({"split_locked": 1}, "split_locked"),
    ({"split_locked": None}, "split_locked"),
    ({"filename": "evil.jpg"}, "filename"),
    ({"split": "train", "path": "/etc/passwd"}, "path"),
    ({"split": "train", "split_locked": "yes"}, "split_locked"),
]


@pytest.mark.parametrize("body,field", BAD_BODIES, ids=lambda v: repr(v)[:40])
def test_bad_body_is_400_and_writes_nothing(client, auth_headers, img, body, field):
    before = stored(img.id)
    resp = client.patch(
        f"/data/images/{img.id}",
        data=json.dumps(body),
        content_type="application/json",
        headers=auth_headers("write"),
    )
    assert resp.status_code == 400, resp.get_json()
    err = resp.get_json()["error"]
    assert err["code"] == "VALIDATION_ERROR" and err["details"] == field
    after = stored(img.id)
    assert (after.split, after.split_locked, after.annotation_status, after.updated_at) == (
        before.split,
        before.split_locked,
        before.annotation_status,
        before.updated_at,
    )


@pytest.mark.parametrize("raw", [b"{oops", b"", b"\xff\xfe", b'{"split": "train"', b"[" * 5000])
def test_not_json_is_400(client, auth_headers, img, raw):
    resp = client.patch(
        f"/data/images/{img.id}",
        data=raw,
        content_type="application/json",
        headers=auth_headers("write"),
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"] == {
        "code": "VALIDATION_ERROR",
        "details": "body",
        "message": resp.get_json()["error"]["message"],
    }


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client, auth_headers, img, ctype):
    kw = {"content_type": ctype} if ctype else {}
    resp = client.patch(
        f"/data/images/{img.id}", data='{"split": "train"}', headers=auth_headers("write"), **kw
    )
    assert resp.status_code == 415
    assert resp.get_json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert stored(img.id).split == "none"


def test_body_too_large_is_413(client, auth_headers, img, settings):
    big = json.dumps({"split": "train", "pad": "x" * settings["server.max_json_body_bytes"]})
    resp = client.patch(
        f"/data/images/{img.id}",
        data=big,
        content_type="application/json",
        headers=auth_headers("write"),
    )
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_unknown_image_is_404(client, auth_headers):
    resp = patch(client, auth_headers, 9999, {"split": "train"})
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "NOT_FOUND"
