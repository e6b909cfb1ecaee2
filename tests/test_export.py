"""GET /data/exports/{format}: each format's files checked against the catalog's rows,
computed here from the rows (not by the code under test), the archive read with the
standard library's ``zipfile``, COCO loaded and evaluated by ``pycocotools``."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from export_helpers import open_zip, seed_catalog

from edgecatalog.models import Annotation, Image
from edgecatalog.timeutil import now_us

pytestmark = pytest.mark.both_engines


def export(client, auth_headers, fmt, **params):
    resp = client.get(f"/data/exports/{fmt}", headers=auth_headers(), query_string=params)
    assert resp.status_code == 200, resp.data[:300]
    assert int(resp.headers["Content-Length"]) == len(resp.data)
    assert resp.headers["Content-Type"] == "application/zip"
    return open_zip(resp.data)


def classes() -> list[str]:
    return sorted({a.class_value for a in Annotation.select()})


def stored_bytes(settings, image_id: int) -> bytes:
    image = Image.get_by_id(image_id)
    return (settings.images_dir / image.storage_key).read_bytes()


def expected_label(image: Image) -> str:
    names = classes()
    lines = []
    for ann in (
        Annotation.select()
        .where(Annotation.image == image.id)
        .order_by(Annotation.z_order, Annotation.id)
    ):
        if ann.type == "bbox":
            values = [ann.x_center, ann.y_center, ann.width, ann.height]
        else:
            points = json.loads(ann.geometry)
            values = [v / (image.width, image.height)[i % 2] for i, v in enumerate(points)]
        lines.append(" ".join([str(names.index(ann.class_value))] + [f"{v:.6f}" for v in values]))
    return "".join(line + "\n" for line in lines)


def test_yolo_layout_labels_and_names(settings, client, auth_headers):
    ids = seed_catalog(settings)
    z = export(client, auth_headers, "yolo")
    names = z.namelist()
    # Unsplit images are left out; the file name two devices share is told apart in id order,
    # and a name differing only in case counts as the same (then its id is added).
    assert names == [
        "images/train/frame.jpg",
        "labels/train/frame.txt",
        "images/val/frame_cam02.jpg",
        "labels/val/frame_cam02.txt",
        "images/train/Frame_3.JPG",
        "labels/train/Frame_3.txt",
        "images/test/test.jpg",
        "labels/test/test.txt",
        "data.yaml",
    ]
    placed = {"a": "train/frame", "b": "val/frame_cam02", "c": "train/Frame_3", "f": "test/test"}
    for key, stem in placed.items():
        image = Image.get_by_id(ids[key])
        assert z.read(f"labels/{stem}.txt").decode() == expected_label(image)
        suffix = ".JPG" if key == "c" else ".jpg"
        assert z.read(f"images/{stem}{suffix}") == stored_bytes(settings, ids[key])
    assert z.read("labels/train/Frame_3.txt") == b""  # no annotations: an empty label file
    yaml_text = z.read("data.yaml").decode()
    import yaml

    data = yaml.safe_load(yaml_text)
    assert data["path"] == "."
    assert (data["train"], data["val"], data["test"]) == (
        "images/train",
        "images/val",
        "images/test",
    )
    assert data["names"] == dict(enumerate(classes()))


def test_assign_unsplit_by_content_hash_and_locked_stays(settings, client, auth_headers):
    ids = seed_catalog(settings)
    z = export(client, auth_headers, "yolo", assign_unsplit="val:0.5,train:0.5")
    d = Image.get_by_id(ids["d"])
    point = int(d.sha256[:16], 16) / 2**64
    split = "train" if point < 0.5 else "val"  # train first, whatever the order given
    assert f"images/{split}/unsplit.jpg" in z.namelist()
    assert not [n for n in z.namelist() if "locked" in n]  # locked at none: never moved
    again = export(client, auth_headers, "yolo", assign_unsplit="train:0.5,val:0.5")
    assert again.namelist() == z.namelist()
    all_val = export(client, auth_headers, "yolo", assign_unsplit="val:1")
    assert "images/val/unsplit.jpg" in all_val.namelist()


@pytest.mark.parametrize(
    "value", ["train:0.5", "train:0.5,val:0.6", "dev:1", "train:x", "train:0.5,train:0.5", ""]
)
def test_bad_assign_unsplit_is_400(settings, client, auth_headers, value):
    resp = client.get(
        "/data/exports/yolo", headers=auth_headers(), query_string={"assign_unsplit": value}
    )
    assert resp.status_code == 400 and resp.json["error"]["details"] == "assign_unsplit"


def test_coco_loads_and_evaluates_in_pycocotools(settings, client, auth_headers, tmp_path):
    pycocotools = pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    assert pycocotools
    ids = seed_catalog(settings)
    z = export(client, auth_headers, "coco")
    assert sorted(n for n in z.namelist() if n.startswith("annotations/")) == [
        "annotations/instances_test.json",
        "annotations/instances_train.json",
        "annotations/instances_val.json",
    ]
    doc = json.loads(z.read("annotations/instances_train.json"))
    assert doc["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(classes())]
    assert [i["id"] for i in doc["images"]] == [ids["a"], ids["c"]]
    for image in doc["images"]:
        row = Image.get_by_id(image["id"])
        assert (image["width"], image["height"]) == (row.width, row.height)
        assert z.read(f"images/train/{image['file_name']}") == stored_bytes(settings, row.id)
    by_id = {a["id"]: a for a in doc["annotations"]}
    for ann in Annotation.select().where(Annotation.image == ids["a"]):
        out = by_id[ann.id]
        x0, y0, x1, y1 = _extent(json.loads(ann.geometry))
        assert all(abs(p - q) <= 1 for p, q in zip(out["bbox"], [x0, y0, x1 - x0, y1 - y0]))
        assert out["category_id"] == classes().index(ann.class_value) + 1
        assert ("score" in out) == (ann.source == "model")  # manual: a reviewed label
        assert ("segmentation" in out) == (ann.type == "polygon")
    path = tmp_path / "train.json"
    path.write_bytes(z.read("annotations/instances_train.json"))
    gt = COCO(str(path))
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in doc["annotations"]
    ]
    evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # the ground truth found exactly


def _extent(points: list[int]) -> tuple[int, int, int, int]:
    xs, ys = points[0::2], points[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def test_jsonl_and_csv_carry_every_image_of_the_view(settings, client, auth_headers):
    ids = seed_catalog(settings)
    z = export(client, auth_headers, "jsonl", device_id="cam01")
    lines = [json.loads(line) for line in z.read("images.jsonl").decode().splitlines()]
    assert [item["id"] for item in lines] == [ids[k] for k in ("a", "d", "e", "f")]
    listed = client.get(
        "/data/images",
        headers=auth_headers(),
        query_string={"device_id": "cam01", "include_annotations": "true", "sort": "filename"},
    ).json["data"]
    by_id = {item["id"]: item for item in listed}
    for item in lines:
        path = item.pop("file")
        assert item == by_id[item["id"]]  # the list's JSON, as the list serializes it
        assert z.read(path) == stored_bytes(settings, item["id"])
    z = export(client, auth_headers, "csv")
    rows = list(csv.DictReader(io.StringIO(z.read("annotations.csv").decode())))
    assert len(rows) == Annotation.select().count() + 1  # one row for the image without any
    assert {r["image_id"] for r in rows} == {str(i) for i in ids.values()}
    for row in rows:
        if row["annotation_id"]:
            ann = Annotation.get_by_id(int(row["annotation_id"]))
            assert float(row["x_center"]) == ann.x_center and row["class_value"] == ann.class_value


def test_filters_mean_what_they_mean_in_the_list(settings, client, auth_headers):
    ids = seed_catalog(settings)
    z = export(client, auth_headers, "jsonl", class_values="dent,scratch", split="train")
    got = [json.loads(line)["id"] for line in z.read("images.jsonl").decode().splitlines()]
    listed = client.get(
        "/data/images",
        headers=auth_headers(),
        query_string={"class_values": "dent,scratch", "split": "train", "limit": 100},
    ).json["data"]
    assert sorted(got) == sorted(item["id"] for item in listed) == [ids["a"]]


@pytest.mark.parametrize("fmt", ["coco", "yolo", "jsonl", "csv"])
def test_no_match_is_a_valid_empty_dataset(settings, client, auth_headers, fmt):
    seed_catalog(settings)
    z = export(client, auth_headers, fmt, class_values="nosuch")
    expected = {"coco": [], "yolo": ["data.yaml"], "jsonl": ["images.jsonl"]}
    assert z.namelist() == expected.get(fmt, ["annotations.csv"])
    for name in z.namelist():
        assert not name.startswith("images/")


def test_unknown_format_is_400_naming_it(settings, client, auth_headers):
    resp = client.get("/data/exports/voc", headers=auth_headers())
    assert resp.status_code == 400
    assert resp.json["error"]["details"] == "format" and "'voc'" in resp.json["error"]["message"]


def test_export_needs_a_read_token(settings, client):
    assert client.get("/data/exports/yolo").status_code == 401


def test_bytes_gone_are_listed_in_missing_txt(settings, client, auth_headers):
    ids = seed_catalog(settings)
    evicted = Image.get_by_id(ids["a"])
    (settings.images_dir / evicted.storage_key).unlink()
    Image.update(evicted_at=now_us()).where(Image.id == evicted.id).execute()
    lost = Image.get_by_id(ids["b"])
    (settings.images_dir / lost.storage_key).unlink()  # gone without the catalog knowing
    z = export(client, auth_headers, "yolo")
    missing = z.read("missing.txt").decode().splitlines()
    assert missing[0].startswith("#")
    assert [line.split("\t")[0] for line in missing[1:]] == [str(ids["a"]), str(ids["b"])]
    assert "evicted" in missing[1] and "not found" in missing[2]
    assert not [n for n in z.namelist() if n.startswith(("images/val", "labels/val"))]
    assert "images/train/frame.jpg" not in z.namelist()  # nor its label
    assert "labels/train/frame.txt" not in z.namelist()


def test_without_images_an_index_of_files(settings, client, auth_headers):
    ids = seed_catalog(settings)
    z = export(client, auth_headers, "coco", include_images="false")
    assert not [n for n in z.namelist() if n.startswith("images/")]
    index = list(csv.DictReader(io.StringIO(z.read("index.csv").decode())))
    assert [int(r["image_id"]) for r in index] == [ids[k] for k in ("a", "b", "c", "f")]
    for row in index:
        data = client.get(row["url"], headers=auth_headers()).data
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert len(data) == int(row["byte_size"])


def test_same_catalog_same_bytes_and_a_change_changes_the_etag(settings, client, auth_headers):
    ids = seed_catalog(settings)
    first = client.get("/data/exports/coco", headers=auth_headers())
    second = client.get("/data/exports/coco", headers=auth_headers())
    assert first.data == second.data and first.headers["ETag"] == second.headers["ETag"]
    same = client.get(
        "/data/exports/coco", headers={**auth_headers(), "If-None-Match": first.headers["ETag"]}
    )
    assert same.status_code == 304
    Annotation.update(x_center=0.51).where(Annotation.image == ids["a"]).execute()
    changed = client.get("/data/exports/coco", headers=auth_headers())
    assert changed.headers["ETag"] != first.headers["ETag"]
