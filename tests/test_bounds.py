"""Bounds where a device or client controls size, and on every number it sends.

* ``[ingest] max_polygon_points`` and ``[ingest] max_annotation_bytes`` hold on every path
  annotations enter: device upload metadata, capture-folder sidecars (JSON and YOLO), manual
  annotation edits, and ``bulk.add_images`` whatever its caller vouched for.
* Every integer and number a client or device sends (z_order, confidence, geometry, ids,
  query integers) outside its range - 2**64, -2**63-1, 1e309, NaN - is a 4xx JSON error
  naming the field, never a 500, and nothing is stored. Text SQLite cannot store (a lone
  surrogate, which a JSON body can spell) is refused the same way.

Expected byte counts are worked out here from the inputs, not read back through the code.
"""

from __future__ import annotations

import io
import json
import os
import random

import pytest
from capture_helpers import annotations_of, image_by_sha, rejected_paths, sha, unique_jpeg
from conftest import make_settings, seed_image
from upload_helpers import (
    CONTENT_TYPE,
    DEVICE_KEY,
    catalog_counts,
    device_key_settings,
    image_bytes,
    stored_files,
    upload_body,
)

from edgecatalog import create_app
from edgecatalog.catalog import (
    MAX_Z,
    AnnotationLimits,
    NewAnnotation,
    NewImage,
    annotation_columns,
    stored_size_bound,
    validate_annotation,
)
from edgecatalog.errors import ValidationError
from edgecatalog.ingest import bulk
from edgecatalog.ingest.commands import run_scan
from edgecatalog.ingest.metadata import plainly_valid
from edgecatalog.models import Annotation, Batch, Image, database

UPLOAD = "/device/images/upload"
# Raw JSON number spellings: json.dumps cannot write 1e309 (it would write Infinity).
HOSTILE = {
    "2**64": "18446744073709551616",
    "-2**63-1": "-9223372036854775809",
    "1e309": "1e309",
    "NaN": "NaN",
}
DEFAULT_POINTS, DEFAULT_BYTES = 4096, 262144  # the settings' defaults, as documented
STORED_BYTES_SQL = (
    "SELECT coalesce(sum(length(CAST(geometry AS BLOB)) + "
    "length(CAST(class_value AS BLOB)) + length(CAST(source AS BLOB))), 0) "
    "FROM annotation WHERE image_id = ?"
)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, **device_key_settings())


def upload(client, metadata: str, seed: int = 1, width: int = 64, height: int = 48):
    return client.post(
        UPLOAD,
        data=upload_body(image_bytes("JPEG", width, height, seed), metadata),
        headers={"Content-Type": CONTENT_TYPE, "X-Device-Key": DEVICE_KEY},
    )


def send_json(client, method: str, path: str, text: str, headers: dict):
    return client.open(
        path, method=method, data=text, content_type="application/json", headers=headers
    )


def assert_refused(resp, field: str, *words: str, status: int = 400) -> dict:
    """A JSON error envelope naming ``field``, its message containing ``words``."""
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, text
    body = json.loads(text)
    assert body["success"] is False and body["data"] is None
    assert body["error"]["code"] == "VALIDATION_ERROR" and body["error"]["details"] == field, body
    for word in words:
        assert word in body["error"]["message"], body
    assert "Traceback" not in text
    return body


def bbox_metadata(g: str = "0.5", c: str = "0.5", z: str = "0") -> str:
    return (
        '{"annotations": [{"class_value": "a", "type": "bbox", '
        f'"geometry": [{g}, 0.5, 0.1, 0.1], "confidence": {c}, "z_order": {z}}}]}}'
    )


def polygon(points: int, offset: float = 0.0) -> list[float]:
    """``points`` distinct-ish normalized vertices."""
    return [round((i % 89) / 89 + offset, 6) % 1.0 for i in range(2 * points)]


# -- device upload metadata --------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("field", ["z_order", "confidence", "geometry"])
def test_upload_hostile_numbers_are_400_and_store_nothing(client, settings, field, name):
    given = {
        "z_order": {"z": HOSTILE[name]},
        "confidence": {"c": HOSTILE[name]},
        "geometry": {"g": HOSTILE[name]},
    }[field]
    resp = upload(client, bbox_metadata(**given))
    assert_refused(resp, f"metadata.annotations[0].{field}")
    assert catalog_counts() == (0, 0)
    assert stored_files(settings.images_dir) == []


def test_upload_numbers_at_their_bounds_are_stored(client, auth_headers):
    resp = upload(client, bbox_metadata(g="1", c="0", z=str(MAX_Z)))
    assert resp.status_code == 201, resp.json
    resp2 = upload(client, bbox_metadata(g="0", c="1.0", z=str(-MAX_Z)), seed=2)
    assert resp2.status_code == 201, resp2.json
    got = client.get(f"/data/images/{resp.json['data']['image_id']}", headers=auth_headers())
    [ann] = got.json["data"]["annotations"]
    assert ann["z_order"] == 2**31 - 1 and ann["confidence"] == 0


BOX = '"type": "bbox", "geometry": [0.5, 0.5, 0.1, 0.1]'


@pytest.mark.parametrize(
    "metadata, field",
    [
        ('{"model_id": "\\ud800"}', "metadata.model_id"),
        ('{"device_id": "cam\\u2028forged"}', "metadata.device_id"),
        (
            '{"annotations": [{"class_value": "\\udfff", %s}]}',
            "metadata.annotations[0].class_value",
        ),
        (
            '{"annotations": [{"class_value": "a\\u001b[2J", %s}]}',
            "metadata.annotations[0].class_value",
        ),
        (
            '{"annotations": [{"class_value": "%s", %%s}]}' % ("x" * 257),
            "metadata.annotations[0].class_value",
        ),
        (
            '{"annotations": [{"class_value": "a", "source": "\\ud800", %s}]}',
            "metadata.annotations[0].source",
        ),
    ],
)
def test_upload_text_sqlite_cannot_store_is_400(client, settings, metadata, field):
    if "%s" in metadata:
        metadata = metadata % BOX
    assert_refused(upload(client, metadata), field)
    assert catalog_counts() == (0, 0) and stored_files(settings.images_dir) == []


@pytest.mark.parametrize("filename", ["a\u2028b.jpg", "a\u0085.jpg", "a\x7f.jpg"])
def test_upload_file_name_with_line_breaking_characters_is_400(client, settings, filename):
    data = upload_body(image_bytes("JPEG", 8, 8, 1), None, filename)
    resp = client.post(
        UPLOAD, data=data, headers={"Content-Type": CONTENT_TYPE, "X-Device-Key": DEVICE_KEY}
    )
    assert_refused(resp, "image.filename")
    assert catalog_counts() == (0, 0) and stored_files(settings.images_dir) == []


def test_upload_polygon_vertex_cap(client, auth_headers, settings):
    at_cap = {
        "annotations": [
            {"class_value": "a", "type": "polygon", "geometry": polygon(DEFAULT_POINTS)}
        ]
    }
    resp = upload(client, json.dumps(at_cap), width=640, height=480)
    assert resp.status_code == 201, resp.json
    image = client.get(f"/data/images/{resp.json['data']['image_id']}", headers=auth_headers())
    assert len(image.json["data"]["annotations"][0]["geometry"]) == 2 * DEFAULT_POINTS
    over = {
        "annotations": [
            {"class_value": "a", "type": "bbox", "geometry": [0.5, 0.5, 0.1, 0.1]},
            {"class_value": "a", "type": "polygon", "geometry": polygon(DEFAULT_POINTS + 1)},
        ]
    }
    assert_refused(
        upload(client, json.dumps(over), seed=2),
        "metadata.annotations[1].geometry",
        str(DEFAULT_POINTS),
        "max_polygon_points",
    )
    assert catalog_counts() == (1, 1) and len(stored_files(settings.images_dir)) == 1


def test_upload_annotation_bytes_cap(client, settings):
    """Five full polygons fit in 256 KiB as stored, six do not, counted as the docs say: each
    coordinate at its widest (5 digits and a comma), plus brackets, class_value and source."""
    per_polygon = 2 * DEFAULT_POINTS * 6 + 1 + len("a") + len("model")
    assert 5 * per_polygon <= DEFAULT_BYTES < 6 * per_polygon  # 245795 and 294954
    five = [
        {"class_value": "a", "type": "polygon", "geometry": polygon(DEFAULT_POINTS, k / 10)}
        for k in range(5)
    ]
    resp = upload(client, json.dumps({"annotations": five}), width=640, height=480)
    assert resp.status_code == 201, resp.json
    with database.connection_context():
        (stored,) = database.execute_sql(
            STORED_BYTES_SQL, (resp.json["data"]["image_id"],)
        ).fetchone()
    assert 0 < stored <= DEFAULT_BYTES
    six = five + [{"class_value": "a", "type": "polygon", "geometry": polygon(DEFAULT_POINTS)}]
    assert_refused(
        upload(client, json.dumps({"annotations": six}), seed=2),
        "metadata.annotations",
        str(DEFAULT_BYTES),
        "max_annotation_bytes",
    )
    assert catalog_counts() == (1, 5) and len(stored_files(settings.images_dir)) == 1


# -- capture-folder sidecars -------------------------------------------------------------------


def _scan(tmp_path, folder, **overrides):
    settings = make_settings(tmp_path, capture__settle_seconds=0.0, **overrides)
    create_app(settings)
    return run_scan(
        settings, folder, recursive=False, mode=None, out=io.StringIO(), err=io.StringIO()
    )


def test_sidecar_hostile_numbers_reject_the_sidecar_not_the_image(tmp_path):
    folder = tmp_path / "captures"
    folder.mkdir()
    (folder / "classes.txt").write_text("box\n")
    cases: list[tuple[bytes, str, str]] = []  # image bytes, sidecar name, what the reason names
    seed = 0
    for field in ("z_order", "confidence", "geometry"):
        for raw in HOSTILE.values():
            seed += 1
            stem = f"j{seed}"
            given = {"z_order": {"z": raw}, "confidence": {"c": raw}, "geometry": {"g": raw}}
            (folder / f"{stem}.json").write_text(bbox_metadata(**given[field]))
            cases.append((unique_jpeg(seed), f"{stem}.json", f".annotations[0].{field}"))
    for field, line in (
        ("class index", "{} 0.5 0.5 0.1 0.1"),
        ("geometry", "0 {} 0.5 0.1 0.1"),
        ("confidence", "0 0.5 0.5 0.1 0.1 {}"),
    ):
        for raw in HOSTILE.values():
            seed += 1
            stem = f"y{seed}"
            (folder / f"{stem}.txt").write_text(line.format(raw) + "\n")
            cases.append((unique_jpeg(seed), f"{stem}.txt", "line 1"))
    for data, sidecar, _ in cases:
        (folder / (os.path.splitext(sidecar)[0] + ".jpg")).write_bytes(data)
    report = _scan(tmp_path, folder)
    assert report.indexed == len(cases)
    reasons = rejected_paths()
    for data, sidecar, names in cases:
        image = image_by_sha(sha(data))
        assert image is not None, sidecar  # the image is fine; only its sidecar is refused
        assert annotations_of(image.id) == []
        reason = reasons[os.path.realpath(folder / sidecar)]
        assert names in reason and "Error" not in reason, (sidecar, reason)
    database.close()


def test_sidecar_caps(tmp_path):
    folder = tmp_path / "captures"
    folder.mkdir()
    long_class = "c" * 256
    (folder / "classes.txt").write_text(long_class + "\n")
    # JSON: one vertex over the cap.
    big = {
        "annotations": [
            {"class_value": "a", "type": "polygon", "geometry": polygon(DEFAULT_POINTS + 1)}
        ]
    }
    (folder / "poly.json").write_text(json.dumps(big))
    poly = unique_jpeg(1)
    (folder / "poly.jpg").write_bytes(poly)
    # YOLO: 1000 boxes (max_annotations) of a 256-character class: on a 32x32 image each is
    # stored as 13 bytes of geometry ("[14,14,18,18]"), 256 of class_value and 5 of source.
    assert 1000 * (13 + 256 + 5) > DEFAULT_BYTES
    (folder / "many.txt").write_text("0 0.5 0.5 0.1 0.1\n" * 1000)
    many = unique_jpeg(2)
    (folder / "many.jpg").write_bytes(many)
    _scan(tmp_path, folder)
    reasons = rejected_paths()
    assert image_by_sha(sha(poly)) is not None
    assert annotations_of(image_by_sha(sha(poly)).id) == []
    reason = reasons[os.path.realpath(folder / "poly.json")]
    assert "annotations[0].geometry" in reason and str(DEFAULT_POINTS) in reason
    # The YOLO image (or its sidecar) is refused by the byte cap; nothing over it is stored.
    stored = image_by_sha(sha(many))
    assert stored is None or annotations_of(stored.id) == []
    assert any("max_annotation_bytes" in r for r in reasons.values()), reasons
    assert Annotation.select().count() == 0
    database.close()


def test_configured_caps_reach_uploads_and_sidecars(tmp_path):
    """Not only the defaults: a configured 10-vertex cap holds on the upload and in a capture
    folder's JSON and YOLO sidecars (YOLO boxes are counted against the byte cap)."""
    folder = tmp_path / "captures"
    folder.mkdir()
    (folder / "poly.json").write_text(
        json.dumps(
            {"annotations": [{"class_value": "a", "type": "polygon", "geometry": polygon(11)}]}
        )
    )
    poly = unique_jpeg(11)
    (folder / "poly.jpg").write_bytes(poly)
    (folder / "classes.txt").write_text("c" * 200 + "\n")
    # Six boxes of a 200-character class on a 32x32 image: at least 6 * 205 > 1024 bytes.
    (folder / "boxes.txt").write_text("0 0.5 0.5 0.1 0.1\n" * 6)
    boxes = unique_jpeg(12)
    (folder / "boxes.jpg").write_bytes(boxes)
    _scan(tmp_path, folder, ingest__max_polygon_points=10, ingest__max_annotation_bytes=1024)
    reasons = rejected_paths()
    assert "10" in reasons[os.path.realpath(folder / "poly.json")]
    assert "1024" in reasons[os.path.realpath(folder / "boxes.txt")]
    assert image_by_sha(sha(poly)) is not None and image_by_sha(sha(boxes)) is not None
    assert Annotation.select().count() == 0
    database.close()

    settings = make_settings(tmp_path / "up", ingest__max_polygon_points=10)
    client = create_app(settings).test_client()
    from edgecatalog.auth import Authenticator

    write = {
        "Authorization": f"Bearer {Authenticator(settings).issue_token('w', 'write')}",
        "Content-Type": CONTENT_TYPE,
    }
    meta = {"annotations": [{"class_value": "a", "type": "polygon", "geometry": polygon(11)}]}
    resp = client.post(UPLOAD, data=upload_body(image_bytes(seed=5), meta), headers=write)
    assert_refused(resp, "metadata.annotations[0].geometry", "10")
    meta["annotations"][0]["geometry"] = polygon(10)
    resp = client.post(UPLOAD, data=upload_body(image_bytes(seed=5), meta), headers=write)
    assert resp.status_code == 201, resp.json
    database.close()


# -- manual annotation edits and other bodies ---------------------------------------------------


@pytest.fixture
def image(settings):
    with database.connection_context():
        return seed_image(
            settings,
            width=200,
            height=100,
            annotations=(
                NewAnnotation("cat", "bbox", (0.5, 0.5, 0.2, 0.4), confidence=0.8, z_order=3),
            ),
        )


def _annotations(client, auth_headers, image_id: int) -> list[dict]:
    return client.get(f"/data/images/{image_id}", headers=auth_headers()).json["data"][
        "annotations"
    ]


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("field", ["image_id", "z_order", "confidence", "geometry"])
def test_manual_create_hostile_numbers(client, app, auth_headers, image, field, name):
    values = {"image_id": str(image.id), "z_order": "0", "confidence": "null", "geometry": "0.5"}
    values[field] = HOSTILE[name]
    text = (
        f'{{"image_id": {values["image_id"]}, "class_value": "a", "type": "bbox", '
        f'"geometry": [{values["geometry"]}, 0.5, 0.1, 0.1], "z_order": {values["z_order"]}, '
        f'"confidence": {values["confidence"]}}}'
    )
    before = _annotations(client, auth_headers, image.id)
    assert_refused(
        send_json(client, "POST", "/data/annotations", text, auth_headers("write")), field
    )
    assert _annotations(client, auth_headers, image.id) == before


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("field", ["z_order", "confidence", "geometry"])
def test_manual_patch_hostile_numbers(client, app, auth_headers, image, field, name):
    [ann] = _annotations(client, auth_headers, image.id)
    text = {
        "z_order": f'{{"z_order": {HOSTILE[name]}}}',
        "confidence": f'{{"confidence": {HOSTILE[name]}}}',
        "geometry": f'{{"geometry": [0.5, {HOSTILE[name]}, 0.1, 0.1]}}',
    }[field]
    assert_refused(
        send_json(client, "PATCH", f"/data/annotations/{ann['id']}", text, auth_headers("write")),
        field,
    )
    assert _annotations(client, auth_headers, image.id) == [ann]


@pytest.mark.parametrize(
    "path, body, field",
    [
        (
            "/data/annotations",
            '{{"image_id": {id}, "class_value": "\\ud800", ' + BOX + "}}",
            "class_value",
        ),
        ("/data/annotations/{ann}", '{{"class_value": "a\\u0085b"}}', "class_value"),
        ("/data/projects", '{{"name": "p\\ud800"}}', "name"),
        ("/data/projects", '{{"name": "p", "description": "a\\u2028b"}}', "description"),
    ],
)
def test_text_sqlite_cannot_store_in_bodies_is_400(
    client, app, auth_headers, image, path, body, field
):
    [ann] = _annotations(client, auth_headers, image.id)
    method = "PATCH" if "{ann}" in path else "POST"
    resp = send_json(
        client, method, path.format(ann=ann["id"]), body.format(id=image.id), auth_headers("write")
    )
    assert_refused(resp, field)
    assert _annotations(client, auth_headers, image.id) == [ann]
    assert client.get("/data/projects", headers=auth_headers()).json["data"] == []


@pytest.mark.parametrize("name", HOSTILE)
def test_batch_patch_hostile_project_id(client, app, auth_headers, image, name):
    with database.connection_context():
        batch = Batch.get_by_id(Image.get_by_id(image.id).batch_id)
    resp = send_json(
        client,
        "PATCH",
        f"/data/batches/{batch.id}",
        f'{{"project_id": {HOSTILE[name]}}}',
        auth_headers("write"),
    )
    assert_refused(resp, "project_id")
    with database.connection_context():
        assert Batch.get_by_id(batch.id).project_id is None


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize(
    "path, field",
    [
        ("/data/images?offset={}", "offset"),
        ("/data/batches?project_id={}", "project_id"),
        ("/data/images?project_id={}", "project_id"),
        ("/data/projects?offset={}", "offset"),
        ("/data/images?limit={}", "limit"),
    ],
)
def test_query_integers_out_of_range_are_400(client, app, auth_headers, image, path, field, name):
    if field == "limit" and name == "2**64":
        # A limit above the maximum is clamped, as upstream does: a page, not an error.
        assert client.get(path.format(HOSTILE[name]), headers=auth_headers()).status_code == 200
        return
    assert_refused(client.get(path.format(HOSTILE[name]), headers=auth_headers()), field)


def test_path_ids_beyond_int64_are_404_not_500(client, app, auth_headers):
    for path in ("/data/images/", "/data/batches/", "/files/"):
        assert client.get(path + HOSTILE["2**64"], headers=auth_headers()).status_code in (403, 404)


def test_manual_caps_follow_the_configuration(tmp_path):
    """A configured cap, not just the default: 10 vertices, 1024 bytes."""
    settings = make_settings(
        tmp_path, ingest__max_polygon_points=10, ingest__max_annotation_bytes=1024
    )
    app = create_app(settings)
    client = app.test_client()
    from edgecatalog.auth import Authenticator

    write = {"Authorization": f"Bearer {Authenticator(settings).issue_token('w', 'write')}"}
    with database.connection_context():
        image = seed_image(settings, width=200, height=100)

    def create(points: int, class_value: str = "c"):
        return client.post(
            "/data/annotations",
            headers=write,
            json={
                "image_id": image.id,
                "class_value": class_value,
                "type": "polygon",
                "geometry": [0.5] * (2 * points),
            },
        )

    assert_refused(create(11), "geometry", "10", "max_polygon_points")
    # Ten vertices at (0.5, 0.5) on 200x100 are stored as "[100,50,...]": 10 * (3 + 2) digits,
    # 19 commas and 2 brackets = 71 bytes; with class_value "c" and source "manual", 78.
    per = 71 + 1 + len("manual")
    fits = 1024 // per  # 13
    ids = []
    for _ in range(fits):
        resp = create(10)
        assert resp.status_code == 201, resp.json
        ids.append(resp.json["data"]["id"])
    assert_refused(create(10), "geometry", "1024", "max_annotation_bytes")
    with database.connection_context():
        (stored,) = database.execute_sql(STORED_BYTES_SQL, (image.id,)).fetchone()
        assert stored == fits * per and Annotation.select().count() == fits
    # A change that grows past the cap is refused; one that does not is applied.
    grow = client.patch(
        f"/data/annotations/{ids[0]}",
        headers=write,
        json={"class_value": "c" * (1024 - fits * per + 2)},
    )
    assert_refused(grow, "class_value", "max_annotation_bytes")
    fine = client.patch(
        f"/data/annotations/{ids[0]}",
        headers=write,
        json={"class_value": "c" * (1024 - fits * per + 1)},
    )
    assert fine.status_code == 200, fine.json
    with database.connection_context():
        (stored,) = database.execute_sql(STORED_BYTES_SQL, (image.id,)).fetchone()
    assert stored == 1024
    database.close()


# -- the bulk path and its fast-path copies of the rules -----------------------------------------


def _new(i: int, annotations=(), width: int = 64, height: int = 48) -> NewImage:
    return NewImage(
        filename=f"f{i}.jpg",
        storage_key=f"raw-data/f{i}.jpg",
        sha256=f"{i:064x}",
        byte_size=10,
        width=width,
        height=height,
        root="/nowhere",
        device_id="cam",
        annotations=tuple(annotations),
    )


def _refused(call, param: str, *words: str) -> None:
    with pytest.raises(ValidationError) as info:
        call()
    assert info.value.param == param
    for word in words:
        assert word in info.value.message
    assert Image.select().count() == 0 and Annotation.select().count() == 0


def test_bulk_checks_the_caps_whatever_the_caller_vouched_for(app):
    box = NewAnnotation("a", "bbox", (0.5, 0.5, 0.1, 0.1))
    with database.connection_context():
        # Rows a probe worker converted (and vouched for): a z_order out of range, a polygon
        # one vertex over, then too many bytes.
        for z in (2**64, -(2**63) - 1, MAX_Z + 1):
            bad = NewAnnotation("a", "bbox", (0.5, 0.5, 0.1, 0.1), z_order=z)
            rows = [bulk.annotation_values(box, 64, 48), bulk.annotation_values(bad, 64, 48)]
            _refused(
                lambda rows=rows: bulk.add_probed_images([_new(1)], [rows]),
                "annotations[1].z_order",
            )
        over = NewAnnotation("a", "polygon", polygon(DEFAULT_POINTS + 1))
        rows = [bulk.annotation_values(over, 64, 48)]
        _refused(
            lambda: bulk.add_probed_images([_new(2)], [rows]),
            "annotations[0].geometry",
            str(DEFAULT_POINTS),
        )
        wide = NewAnnotation("c" * 256, "bbox", (0.5, 0.5, 0.1, 0.1))
        rows = [bulk.annotation_values(wide, 64, 48)] * 1000  # 1000 * (13 + 256 + 5) bytes
        _refused(
            lambda: bulk.add_probed_images([_new(3)], [rows]), "annotations", str(DEFAULT_BYTES)
        )
        # The limits given are the ones applied, validated here or not.
        tight = AnnotationLimits(max_polygon_points=3, max_annotation_bytes=1024)
        square = NewAnnotation("a", "polygon", [0.1, 0.1, 0.9, 0.1, 0.9, 0.9, 0.1, 0.9])
        _refused(
            lambda: bulk.add_images([_new(4, [square])], limits=tight),
            "annotations[0].geometry",
            "3",
        )
        _refused(
            lambda: bulk.add_probed_images(
                [_new(5)], [[bulk.annotation_values(square, 64, 48)]], limits=tight
            ),
            "annotations[0].geometry",
            "3",
        )
        bulk.add_images([_new(6, [box, square])])  # within the defaults: stored
        assert (Image.select().count(), Annotation.select().count()) == (1, 2)


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"z_order": MAX_Z + 1}, "z_order"),
        ({"z_order": -MAX_Z - 1}, "z_order"),
        ({"z_order": 2**64}, "z_order"),
        ({"z_order": -(2**63) - 1}, "z_order"),
        ({"confidence": float("nan")}, "confidence"),
        ({"confidence": float("inf")}, "confidence"),
        ({"confidence": 2**64}, "confidence"),
        ({"class_value": "x" * 257}, "class_value"),
        ({"class_value": "a\x1b[2J"}, "class_value"),
        ({"class_value": "a\u2028"}, "class_value"),
        ({"class_value": "a\x85"}, "class_value"),
        ({"class_value": "\ud800"}, "class_value"),
        ({"source": "s" * 65}, "source"),
        ({"source": "\x00"}, "source"),
        ({"source": "\udfff"}, "source"),
    ],
)
def test_fast_path_refuses_what_validate_annotation_refuses(fields, param):
    ann = NewAnnotation(
        **{"class_value": "a", "type": "bbox", "geometry": [0.5, 0.5, 0.1, 0.1], **fields}
    )
    assert not plainly_valid(ann)
    with pytest.raises(ValidationError) as info:
        validate_annotation(ann, "x")
    assert info.value.param == f"x.{param}"


def test_fast_path_and_validate_agree_at_the_bounds():
    for fields in (
        {"z_order": MAX_Z},
        {"z_order": -MAX_Z},
        {"class_value": "x" * 256},
        {"source": "s" * 64},
        {"class_value": "caf\u00e9 \u4e2d"},
    ):
        ann = NewAnnotation(
            **{"class_value": "a", "type": "bbox", "geometry": [0.5, 0.5, 0.1, 0.1], **fields}
        )
        assert plainly_valid(ann)
        validate_annotation(ann)


def test_the_stored_size_bound_never_undercounts_and_is_tight_at_the_widest():
    rng = random.Random(3)
    for _ in range(3000):
        kind = rng.choice(["bbox", "polygon"])
        count = 4 if kind == "bbox" else 2 * rng.randrange(3, 40)
        ann = NewAnnotation(
            rng.choice(["a", "caf\u00e9", "x" * 256, "\u4e2d" * 85]),
            kind,
            [rng.random() for _ in range(count)],
            source=rng.choice(["model", "m\u00e9" * 32]),
        )
        width, height = rng.choice([1, 9, 640, 65535]), rng.choice([1, 10, 480, 65535])
        cols = annotation_columns(ann, width, height)
        exact = sum(len(cols[k].encode("utf-8")) for k in ("geometry", "class_value", "source"))
        assert exact <= stored_size_bound(ann)
    # Every coordinate 5 digits (>= 10000 of 65535 pixels): the bound is the exact size.
    wide = NewAnnotation("a", "polygon", [rng.uniform(0.2, 1.0) for _ in range(20)])
    cols = annotation_columns(wide, 65535, 65535)
    assert len(cols["geometry"]) + 1 + len("model") == stored_size_bound(wide)


# -- what the caps leave: the largest list page ------------------------------------------------


@pytest.mark.slow
def test_worst_list_page_with_annotations_is_within_the_computed_bound(tmp_path):
    """A full page (the maximum limit) of images at the caps, each annotation built to be as
    long as possible in the response; GET through the real ``edgecatalog serve``. Prints the
    figures (run with -s): bound from the caps, bytes answered, the server's peak RSS."""
    import re
    import time
    from pathlib import Path

    import requests
    from serve_process import ServeProcess, free_port, write_config

    from edgecatalog.auth import Authenticator
    from edgecatalog.listing.query import MAX_LIMIT

    count, budget, page = 1000, DEFAULT_BYTES, MAX_LIMIT  # [ingest] max_annotations default
    settings = make_settings(tmp_path)
    create_app(settings)
    # The smallest stored geometry ("[0,0,0,0]" on a 1x1 image) leaves the byte budget to
    # text in 2-byte characters, which the API writes as 6-byte \u00e9 escapes; floats have
    # the longest repr (23 characters); z_order the longest value.
    text = budget // count - 9
    tiny = 1.2345678901234567e-100
    ann = NewAnnotation(
        "\u00e9" * ((text - 128) // 2),
        "bbox",
        (tiny,) * 4,
        confidence=tiny,
        z_order=-MAX_Z,
        source="\u00e9" * 64,
    )
    with database.connection_context():
        for k in range(0, page, 10):
            bulk.add_images([_new(i, (ann,) * count, 1, 1) for i in range(k, k + 10)])
    database.close()
    # The bound: per annotation the fixed JSON (keys, punctuation) and the widest values (ids
    # of 19 digits, 5 floats of 23 characters, "polygon", 11-character z_order, 2 timestamps
    # of 27), plus at most 3x the stored bytes (a UTF-8 character escaped as \uXXXX).
    keys = (
        "id",
        "image_id",
        "class_value",
        "type",
        "geometry",
        "x_center",
        "y_center",
        "width",
        "height",
        "confidence",
        "source",
        "z_order",
        "created_at",
        "updated_at",
    )
    # Keys, colons, commas and braces; 5 values are quoted strings; 1 comma between objects.
    fixed = len(json.dumps(dict.fromkeys(keys, 0), separators=(",", ":"))) - len(keys) + 10 + 1
    widest = fixed + 2 * 19 + 5 * 23 + len("polygon") + 11 + 2 * 27
    image_fields = 4096  # generous: the image's own fields at their widest
    bound = page * (count * widest + 3 * budget + image_fields)
    port = free_port()
    proc = ServeProcess(write_config(tmp_path / "c.toml", settings.data_dir, port), port)
    try:
        proc.wait_ready()
        status = Path(f"/proc/{proc.proc.pid}/status")
        rss_before = int(re.search(r"VmHWM:\s+(\d+)", status.read_text()).group(1))
        token = Authenticator(settings).issue_token("m", "read")
        started = time.monotonic()
        resp = requests.get(
            f"{proc.url}/data/images?include_annotations=true&limit={page}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=600,
        )
        took = time.monotonic() - started
        rss_after = int(re.search(r"VmHWM:\s+(\d+)", status.read_text()).group(1))
    finally:
        proc.close()
    size = len(resp.content)
    print(
        f"\nworst list page: bound {bound / 1e6:.1f} MB, answered {size / 1e6:.1f} MB in "
        f"{took:.1f} s, server peak RSS {rss_before // 1024} -> {rss_after // 1024} MiB"
    )
    assert resp.status_code == 200 and len(resp.json()["data"]) == page
    assert 0.9 * bound <= size <= bound  # the bound holds, and this catalog comes close to it
    # Written out image by image (views/images.py, listing.Page.items): the server never
    # holds the page. Before it did, this page took the peak from ~60 to ~460 MiB.
    assert rss_after - rss_before < 100 * 1024, (rss_before, rss_after)
