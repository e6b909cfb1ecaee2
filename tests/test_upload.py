"""POST /device/images/upload: the cloud's device upload contract against the real app and a
real SQLite file. Expected values come from the bytes and metadata the test sent, never from
reading back through the code under test.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import tracemalloc

import pytest
from conftest import assert_crcs_are_the_files, make_settings
from upload_helpers import (
    CONTENT_TYPE,
    DEVICE_KEY,
    PLAIN_DEVICE_KEY,
    body,
    catalog_counts,
    device_key_settings,
    image_bytes,
    part,
    stored_files,
    upload_body,
)

from edgecatalog import create_app
from edgecatalog.auth import Authenticator, digest_key
from edgecatalog.models import Batch, Device, Image, database

UPLOAD = "/device/images/upload"


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, device__id="edge-box", **device_key_settings())


def post(client, data: bytes, headers: dict | None = None, content_type: str = CONTENT_TYPE):
    auth = {"X-Device-Key": DEVICE_KEY} if headers is None else headers
    return client.post(UPLOAD, data=data, headers={"Content-Type": content_type, **auth})


def test_upload_stores_file_row_and_annotations(client, settings, auth_headers):
    data = image_bytes("JPEG", 200, 100, seed=1)
    meta = {
        "model_id": "mdl_123",
        "model_version": "1.0.0",
        "source": "camera-1",
        "timestamp": "2026-11-28T10:00:00Z",
        "annotations": [
            {
                "class_value": "defect",
                "type": "bbox",
                "geometry": [0.5, 0.5, 0.2, 0.1],
                "confidence": 0.9,
            },
            {
                "class_value": "scratch",
                "type": "polygon",
                "geometry": [0.1, 0.1, 0.3, 0.1, 0.2, 0.4],
                "z_order": 5,
            },
        ],
    }
    resp = post(client, upload_body(data, meta, "frame.jpg"))
    assert resp.status_code == 201, resp.json
    got = resp.json["data"]
    assert set(got) == {"image_id", "batch_id", "storage_key", "duplicate"}
    assert got["duplicate"] is False
    prefix, _, name = got["storage_key"].partition("_")
    assert prefix.startswith("raw-data/") and len(prefix) == len("raw-data/") + 36
    assert name == "frame.jpg"
    on_disk = settings.images_dir / got["storage_key"]
    assert hashlib.sha256(on_disk.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()

    image = client.get(f"/data/images/{got['image_id']}", headers=auth_headers()).json["data"]
    assert (image["width"], image["height"], image["device_id"]) == (200, 100, "edge-box")
    assert image["batch_id"] == got["batch_id"] and image["filename"] == "frame.jpg"
    box, poly = image["annotations"]
    # bbox [0.5,0.5,0.2,0.1] on 200x100 -> corners (80,45)-(120,55) in pixels.
    assert box["geometry"] == [80, 45, 120, 55] and box["confidence"] == 0.9
    assert box["source"] == "model" and box["class_value"] == "defect"
    assert poly["geometry"] == [20, 10, 60, 10, 40, 40] and poly["z_order"] == 5
    with database.connection_context():
        row = Image.get_by_id(got["image_id"])
        assert (row.model_id, row.model_version, row.source) == ("mdl_123", "1.0.0", "camera-1")
        assert row.captured_at == 1_795_860_000 * 1_000_000  # 2026-11-28T10:00:00Z
        assert assert_crcs_are_the_files() == 1


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp")])
def test_other_formats_named_from_their_bytes(client, settings, fmt, ext):
    resp = post(client, upload_body(image_bytes(fmt, 30, 20), None, filename=None))
    assert resp.status_code == 201, resp.json
    assert resp.json["data"]["storage_key"].endswith(f"_image.{ext}")


def test_filename_precedence(client):
    first = post(client, upload_body(image_bytes(seed=2), {"filename": "meta.jpg"}, "part.jpg"))
    second = post(client, upload_body(image_bytes(seed=3), None, "part.jpg"))
    assert first.json["data"]["storage_key"].endswith("_meta.jpg")
    assert second.json["data"]["storage_key"].endswith("_part.jpg")


def test_device_id_precedence(tmp_path, auth_headers):
    app = create_app(make_settings(tmp_path, **device_key_settings()))  # no [device] id
    client = app.test_client()
    # A bearer token may name any device; a bare configured key is this device's (hostname).
    post(client, upload_body(image_bytes(seed=4), {"device_id": "cam-7"}), auth_headers("write"))
    post(client, upload_body(image_bytes(seed=5)))
    with database.connection_context():
        names = sorted(d.device_id for d in Device.select())
    assert names == sorted(["cam-7", socket.gethostname()])


def test_duplicate_returns_existing_ids_and_keeps_one_file(client, settings):
    data = image_bytes(seed=6)
    first = post(
        client,
        upload_body(
            data,
            {
                "annotations": [
                    {"class_value": "a", "type": "bbox", "geometry": [0.5, 0.5, 0.1, 0.1]}
                ]
            },
        ),
    )
    again = post(client, upload_body(data, {"filename": "other.jpg"}))
    assert first.status_code == 201 and again.status_code == 200
    assert again.json["data"] == {**first.json["data"], "duplicate": True}
    assert len(stored_files(settings.images_dir)) == 1
    assert catalog_counts() == (1, 1)


def test_auth(client, settings, auth_headers, tmp_path):
    data = upload_body(image_bytes(seed=7))
    assert post(client, data, {}).status_code == 401
    assert post(client, data, {"X-Device-Key": "adk_wrong"}).status_code == 401
    assert post(client, data, {"X-Device-Key": ""}).status_code == 401
    assert post(client, data, {"Authorization": "Bearer nope"}).status_code == 401
    # A valid token without the write scope is authenticated but not allowed.
    forbidden = post(client, data, auth_headers("read"))
    assert forbidden.status_code == 403 and forbidden.json["error"]["code"] == "FORBIDDEN"
    assert catalog_counts() == (0, 0) and stored_files(settings.images_dir) == []
    assert post(client, data, {"X-Device-Key": PLAIN_DEVICE_KEY}).status_code == 201
    assert post(client, upload_body(image_bytes(seed=8)), auth_headers("write")).status_code == 201
    assert post(client, upload_body(image_bytes(seed=9))).status_code == 201


def test_device_keys_file(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"sha256:{digest_key('adk_fromfile')}\n")
    settings = make_settings(tmp_path, auth__device_keys_file=str(keys))
    client = create_app(settings).test_client()
    ok = post(client, upload_body(image_bytes(seed=10)), {"X-Device-Key": "adk_fromfile"})
    assert ok.status_code == 201
    other = post(client, upload_body(image_bytes(seed=11)), {"X-Device-Key": DEVICE_KEY})
    assert other.status_code == 401


GOOD = image_bytes(seed=12)
PNG = image_bytes("PNG", 40, 30, seed=12)
_IDAT = PNG.index(b"IDAT") + 6  # a byte inside the first IDAT chunk's data
WEBP = image_bytes("WEBP", 40, 30, seed=12)
BMP = image_bytes("BMP", 40, 30, seed=12)
BAD_INPUT = [
    (
        "png cut short",
        upload_body(PNG[: len(PNG) - 20], None, "p.png"),
        None,
        400,
        "VALIDATION_ERROR",
        "image",
    ),
    (
        "png with a flipped data byte",
        upload_body(PNG[:_IDAT] + bytes([PNG[_IDAT] ^ 0xFF]) + PNG[_IDAT + 1 :], None, "p.png"),
        None,
        400,
        "VALIDATION_ERROR",
        "image",
    ),
    (
        "png header then garbage",
        upload_body(PNG[:33] + b"\0" * 100, None, "p.png"),
        None,
        400,
        "VALIDATION_ERROR",
        "image",
    ),
    (
        "jpeg header cut short",
        upload_body(GOOD[:200], None),
        None,
        400,
        "VALIDATION_ERROR",
        "image",
    ),
    # The whole header, then the scan cut off before its end-of-image marker.
    (
        "jpeg image data cut short",
        upload_body(GOOD[:-16], None),
        None,
        400,
        "VALIDATION_ERROR",
        "image",
    ),
    (
        "webp cut short",
        upload_body(WEBP[:-10], None, "w.webp"),
        None,
        400,
        "VALIDATION_ERROR",
        "image",
    ),
    ("bmp cut short", upload_body(BMP[:60], None, "b.bmp"), None, 400, "VALIDATION_ERROR", "image"),
    # (id, body, content type, status, code, details)
    ("no image part", body(part("metadata", b"{}")), None, 400, "VALIDATION_ERROR", "image"),
    ("empty image part", upload_body(b""), None, 400, "VALIDATION_ERROR", "image"),
    (
        "text named .jpg",
        upload_body(b"hello, not an image at all"),
        None,
        400,
        "VALIDATION_ERROR",
        "image",
    ),
    (
        "jpeg magic then garbage",
        upload_body(b"\xff\xd8\xff\xe0" + b"\x00" * 40),
        None,
        400,
        "VALIDATION_ERROR",
        "image",
    ),
    (
        "metadata not JSON",
        upload_body(GOOD, "{not json"),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata",
    ),
    (
        "metadata not an object",
        upload_body(GOOD, "[1, 2]"),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata",
    ),
    (
        "unknown annotation type",
        upload_body(
            GOOD,
            {"annotations": [{"class_value": "a", "type": "circle", "geometry": [0.5, 0.5, 0.1]}]},
        ),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.annotations[0].type",
    ),
    (
        "bbox of 3 numbers",
        upload_body(
            GOOD,
            {"annotations": [{"class_value": "a", "type": "bbox", "geometry": [0.5, 0.5, 0.1]}]},
        ),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.annotations[0].geometry",
    ),
    (
        "polygon odd length",
        upload_body(
            GOOD,
            {
                "annotations": [
                    {"class_value": "a", "type": "polygon", "geometry": [0.1, 0.1, 0.2, 0.2, 0.3]}
                ]
            },
        ),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.annotations[0].geometry",
    ),
    (
        "geometry above 1",
        upload_body(
            GOOD,
            {
                "annotations": [
                    {"class_value": "a", "type": "bbox", "geometry": [0.5, 0.5, 1.2, 0.1]}
                ]
            },
        ),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.annotations[0].geometry",
    ),
    (
        "geometry below 0",
        upload_body(
            GOOD,
            {
                "annotations": [
                    {"class_value": "a", "type": "bbox", "geometry": [-0.1, 0.5, 0.2, 0.1]}
                ]
            },
        ),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.annotations[0].geometry",
    ),
    (
        "confidence above 1",
        upload_body(
            GOOD,
            {
                "annotations": [
                    {
                        "class_value": "a",
                        "type": "bbox",
                        "geometry": [0.5, 0.5, 0.2, 0.1],
                        "confidence": 1.5,
                    }
                ]
            },
        ),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.annotations[0].confidence",
    ),
    (
        "confidence not a number",
        upload_body(
            GOOD,
            {
                "annotations": [
                    {
                        "class_value": "a",
                        "type": "bbox",
                        "geometry": [0.5, 0.5, 0.2, 0.1],
                        "confidence": "high",
                    }
                ]
            },
        ),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.annotations[0].confidence",
    ),
    (
        "second annotation bad",
        upload_body(
            GOOD,
            {
                "annotations": [
                    {"class_value": "a", "type": "bbox", "geometry": [0.5, 0.5, 0.2, 0.1]},
                    {"class_value": "", "type": "bbox", "geometry": [0.5, 0.5, 0.2, 0.1]},
                ]
            },
        ),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.annotations[1].class_value",
    ),
    (
        "metadata filename with slash",
        upload_body(GOOD, {"filename": "a/b.jpg"}),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.filename",
    ),
    (
        "metadata filename with backslash",
        upload_body(GOOD, {"filename": "a\\b.jpg"}),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.filename",
    ),
    (
        "metadata filename with NUL",
        upload_body(GOOD, {"filename": "a\u0000.jpg"}),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.filename",
    ),
    (
        "part filename with dot-dot",
        upload_body(GOOD, None, "../../etc/x.jpg"),
        None,
        400,
        "VALIDATION_ERROR",
        "image.filename",
    ),
    (
        "bad timestamp",
        upload_body(GOOD, {"timestamp": "yesterday"}),
        None,
        400,
        "VALIDATION_ERROR",
        "metadata.timestamp",
    ),
    (
        "two image parts",
        body(part("image", GOOD, "a.jpg"), part("image", GOOD, "b.jpg")),
        None,
        400,
        "VALIDATION_ERROR",
        "image",
    ),
    (
        "no closing boundary",
        body(part("image", GOOD, "a.jpg"), close=False),
        None,
        400,
        "VALIDATION_ERROR",
        "body",
    ),
    ("not multipart", GOOD, "image/jpeg", 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type"),
    (
        "multipart without boundary",
        upload_body(GOOD),
        "multipart/form-data",
        400,
        "VALIDATION_ERROR",
        "Content-Type",
    ),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_and_nothing_is_stored(client, settings, case):
    _, data, content_type, status, code, details = case
    resp = post(client, data, content_type=content_type or CONTENT_TYPE)
    assert resp.status_code == status, resp.json
    assert resp.json["success"] is False
    assert resp.json["error"]["code"] == code
    assert resp.json["error"]["details"] == details
    assert resp.json["error"]["message"]
    assert catalog_counts() == (0, 0)
    assert stored_files(settings.images_dir) == []


class Unreadable:
    """A body that fails the test if anyone reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = readlines = __iter__ = read


def test_declared_length_over_limit_is_refused_unread(client, settings):
    resp = client.post(
        UPLOAD,
        headers={"Content-Type": CONTENT_TYPE, "X-Device-Key": DEVICE_KEY},
        environ_overrides={
            "wsgi.input": Unreadable(),
            "CONTENT_TYPE": CONTENT_TYPE,
            "CONTENT_LENGTH": str(60 * 1024 * 1024),
        },
    )
    assert resp.status_code == 413
    assert resp.json["error"] == {
        "code": "PAYLOAD_TOO_LARGE",
        "details": "body",
        "message": resp.json["error"]["message"],
    }
    assert "52428800" in resp.json["error"]["message"]
    assert stored_files(settings.images_dir) == []


class Endless:
    """A chunked body of ``total`` bytes made on the fly: a multipart head, then zeros."""

    def __init__(self, total: int, head: bytes) -> None:
        self.left, self.head = total, head

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = min(n if n > 0 else 1 << 20, self.left)
        chunk, self.head = (self.head[:n], self.head[n:]) if self.head else (b"\0" * n, b"")
        self.left -= len(chunk)
        return chunk


def test_chunked_body_over_limit_is_cut_off_without_holding_it(client, settings):
    head = part("image", b"", "big.jpg")[:-2]  # headers of an image part, data follows
    stream = Endless(60 * 1024 * 1024, head)
    tracemalloc.start()
    try:
        resp = client.post(
            UPLOAD,
            headers={
                "Content-Type": CONTENT_TYPE,
                "Transfer-Encoding": "chunked",
                "X-Device-Key": DEVICE_KEY,
            },
            environ_overrides={
                "wsgi.input": stream,
                "wsgi.input_terminated": True,
                "CONTENT_LENGTH": "",
                # Set here too: the test client replaces a multipart type it did not encode.
                "CONTENT_TYPE": CONTENT_TYPE,
            },
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status_code == 413 and resp.json["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert peak < 8 * 1024 * 1024, f"peak Python allocation {peak} bytes"
    # Reading stopped just past the 50 MiB limit, not at the end of the 60 MiB stream.
    assert stream.left >= 60 * 1024 * 1024 - 50 * 1024 * 1024 - 1024 * 1024
    assert stored_files(settings.images_dir) == [] and catalog_counts() == (0, 0)


def test_metadata_part_over_its_cap(client, settings):
    meta = b'{"x": "' + b"a" * (4 * 1024 * 1024) + b'"}'
    resp = post(client, upload_body(GOOD, meta))
    assert resp.status_code == 413 and resp.json["error"]["details"] == "metadata"
    assert stored_files(settings.images_dir) == []


def test_field_order_does_not_matter_and_extra_fields_are_ignored(client):
    data = body(
        part("metadata", json.dumps({"filename": "late.jpg"}).encode()),
        part("comment", b"ignored"),
        part("image", image_bytes(seed=13), "x.jpg"),
    )
    resp = post(client, data)
    assert resp.status_code == 201 and resp.json["data"]["storage_key"].endswith("_late.jpg")


def test_batch_completes_at_max_images(tmp_path):
    client = create_app(
        make_settings(tmp_path, batches__max_images=3, **device_key_settings())
    ).test_client()
    ids = [
        post(client, upload_body(image_bytes(seed=20 + i))).json["data"]["batch_id"]
        for i in range(7)
    ]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert ids[3] == ids[4] == ids[5] != ids[6]
    with database.connection_context():
        stages = {b.id: (b.stage, b.image_count) for b in Batch.select()}
    assert stages == {ids[0]: ("complete", 3), ids[3]: ("complete", 3), ids[6]: ("collecting", 1)}


def test_batch_completes_after_its_window(tmp_path):
    client = create_app(
        make_settings(
            tmp_path,
            batches__window_minutes=0.01,  # 0.6 s
            **device_key_settings(),
        )
    ).test_client()
    first = post(client, upload_body(image_bytes(seed=30))).json["data"]["batch_id"]
    same = post(client, upload_body(image_bytes(seed=31))).json["data"]["batch_id"]
    time.sleep(0.65)
    later = post(client, upload_body(image_bytes(seed=32))).json["data"]["batch_id"]
    assert first == same != later
    with database.connection_context():
        assert Batch.get_by_id(first).stage == "complete"
        assert Batch.get_by_id(later).stage == "collecting"


def test_batches_are_per_device(client, auth_headers):
    write = auth_headers("write")  # a device key may only name its own device
    a = post(client, upload_body(image_bytes(seed=40), {"device_id": "a"}), write).json["data"]
    b = post(client, upload_body(image_bytes(seed=41), {"device_id": "b"}), write).json["data"]
    a2 = post(client, upload_body(image_bytes(seed=42), {"device_id": "a"}), write).json["data"]
    assert a["batch_id"] == a2["batch_id"] != b["batch_id"]


def test_uploaded_image_is_listed_and_served(client, settings, auth_headers):
    data = image_bytes(seed=50)
    got = post(client, upload_body(data)).json["data"]
    listed = client.get("/data/images", headers=auth_headers()).json
    assert [row["id"] for row in listed["data"]] == [got["image_id"]]
    served = client.get(f"/files/{got['image_id']}", headers=auth_headers())
    assert served.status_code == 200 and served.data == data


def test_token_issued_for_other_secret_is_refused(client, tmp_path):
    other = Authenticator(make_settings(tmp_path / "other", auth__jwt_secret="x" * 40))
    token = other.issue_token("w", "write")
    resp = post(client, upload_body(GOOD), {"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401


def test_jpeg_with_bytes_after_its_end_marker_is_accepted(client):
    """Some cameras append data after EOI; the image itself is whole."""
    data = image_bytes(seed=31) + b"trailer written by a camera" * 100
    resp = post(client, upload_body(data, None))
    assert resp.status_code == 201, resp.json
    assert catalog_counts()[0] == 1
