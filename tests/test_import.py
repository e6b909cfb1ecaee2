"""``edgecatalog import``: an export imported into an empty catalog is the same images, boxes
within a pixel, the same classes and splits; the layouts other tools write; a malformed
dataset refused with its file and line or field named and nothing stored; unsafe ZIP members
refused; the same bytes imported once. The catalogs are compared from their rows."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from conftest import assert_crcs_are_the_files, engine_database, jpeg_bytes, make_settings
from export_helpers import seed_catalog

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.datasets.importer import import_dataset
from edgecatalog.datasets.source import MalformedDataset
from edgecatalog.models import Annotation, Batch, Image, database

pytestmark = pytest.mark.both_engines


def snapshot() -> dict[str, tuple]:
    """sha256 -> (split, sorted (class, type, pixel geometry)) of the open catalog."""
    out = {}
    for image in Image.select():
        anns = sorted(
            (a.class_value, a.type, tuple(json.loads(a.geometry)))
            for a in Annotation.select().where(Annotation.image == image.id)
        )
        out[image.sha256] = (image.split, anns)
    return out


def exported(settings, fmt: str, **params) -> bytes:
    client = create_app(settings).test_client()
    token = Authenticator(settings).issue_token("t", "read")
    resp = client.get(
        f"/data/exports/{fmt}", headers={"Authorization": f"Bearer {token}"}, query_string=params
    )
    assert resp.status_code == 200
    return resp.data


def empty_catalog(tmp_path: Path, request, engine: str, name: str = "b"):
    other = make_settings(tmp_path / name, database__url=engine_database(request, engine))
    create_app(other)  # binds the catalog and migrates it
    return other


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_export_then_import_into_an_empty_catalog(settings, app, tmp_path, request, engine, fmt):
    seed_catalog(settings)
    Image.update(split="train").where(Image.split_locked == False).where(
        Image.split == "none"
    ).execute()
    before = {k: v for k, v in snapshot().items() if v[0] != "none"}
    archive = tmp_path / f"{fmt}.zip"
    archive.write_bytes(exported(settings, fmt))
    database.close()
    other = empty_catalog(tmp_path, request, engine)
    report = import_dataset(other, archive, fmt, device_id="imported", project="from-export")
    after = snapshot()
    assert report.images == len(before) == len(after) and report.duplicates == 0
    assert set(after) == set(before)
    for sha, (split, anns) in before.items():
        got_split, got = after[sha]
        assert got_split == split
        assert [(c, t) for c, t, _ in got] == [(c, t) for c, t, _ in anns]
        for (_, _, mine), (_, _, theirs) in zip(got, anns):
            assert len(mine) == len(theirs) and max(abs(p - q) for p, q in zip(mine, theirs)) <= 1
    assert {a.source for a in Annotation.select()} == {"import"}
    assert assert_crcs_are_the_files() == len(after)
    assert {i.annotation_status for i in Image.select()} == {"completed"}
    batch = Batch.get()
    assert batch.project.name == "from-export" and batch.image_count == len(after)
    assert batch.device.device_id == "imported"
    for image in Image.select():  # the bytes are where the catalog says, and whole
        assert (other.images_dir / image.storage_key).stat().st_size == image.byte_size
    again = import_dataset(other, archive, fmt)  # the same bytes are imported once
    assert again.images == 0 and again.duplicates == len(before)


def _zip(files: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _yolo_files(**extra: bytes) -> dict[str, bytes]:
    files = {
        "data.yaml": b"path: .\ntrain: images/train\nval: images/val\nnames: [crack, dent]\n",
        "images/train/a.jpg": jpeg_bytes(64, 48, seed=1),
        "labels/train/a.txt": b"0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.3 0.1 0.2 0.4\n",
        "images/train/b.jpg": jpeg_bytes(64, 48, seed=2),
        "images/val/c.jpg": jpeg_bytes(64, 48, seed=3),
        "labels/val/c.txt": b"1 0.5 0.5 0.2 0.2\n",
    }
    files.update(extra)
    return files


def assert_nothing_stored(settings) -> None:
    assert Image.select().count() == 0
    for sub in ("raw-data", ".incoming"):
        folder = settings.images_dir / sub
        assert not folder.exists() or os.listdir(folder) == [], sub


@pytest.mark.parametrize(
    "files, where",
    [
        (
            _yolo_files(**{"labels/val/c.txt": b"1 0.5 0.5 0.2 0.2\n\n0 0.5 0.5 1.5 0.2\n"}),
            "labels/val/c.txt line 3",
        ),
        (_yolo_files(**{"labels/val/c.txt": b"7 0.5 0.5 0.2 0.2\n"}), "labels/val/c.txt line 1"),
        (_yolo_files(**{"labels/val/c.txt": b"0 0.5 0.5 0.2\n"}), "labels/val/c.txt line 1"),
        (_yolo_files(**{"data.yaml": b"train: images/train\nnames: &x [a]\n"}), "data.yaml line 2"),
        (_yolo_files(**{"images/val/c.jpg": b"\xff\xd8\xff not a whole jpeg"}), "images/val/c.jpg"),
        (_yolo_files(**{"../evil.jpg": b"x"}), "../evil.jpg"),
        (_yolo_files(**{"/abs.jpg": b"x"}), "/abs.jpg"),
    ],
)
def test_a_malformed_yolo_dataset_is_refused_whole(settings, app, tmp_path, files, where):
    path = tmp_path / "bad.zip"
    path.write_bytes(_zip(files))
    with pytest.raises(MalformedDataset) as info:
        import_dataset(settings, path, "yolo")
    assert info.value.where.startswith(where), str(info.value)
    assert_nothing_stored(settings)


def test_a_symlink_member_is_refused(settings, app, tmp_path):
    path = tmp_path / "link.zip"
    path.write_bytes(_zip(_yolo_files(), links=("images/train/x.jpg",)))
    with pytest.raises(MalformedDataset, match="symbolic link"):
        import_dataset(settings, path, "yolo")
    folder = tmp_path / "folder"
    for name, data in _yolo_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "images/train/link.jpg").symlink_to(folder / "images/train/a.jpg")
    with pytest.raises(MalformedDataset, match="link.jpg: a symbolic link"):
        import_dataset(settings, folder, "yolo")
    assert_nothing_stored(settings)
    (folder / "images/train/link.jpg").unlink()
    report = import_dataset(settings, folder, "yolo")  # the folder itself, once clean
    assert report.images == 3 and report.splits == {"train": 2, "val": 1}


def _coco(images, annotations, categories=({"id": 1, "name": "crack"},)) -> bytes:
    return json.dumps(
        {"images": images, "annotations": annotations, "categories": list(categories)}, indent=1
    ).encode()


def test_a_malformed_coco_dataset_names_the_file_and_place(settings, app, tmp_path):
    image = {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}
    good = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}
    cases = [
        (b'{"images": [\n  {"id": 1,,}\n]}', "annotations/instances_train.json line 2 column"),
        (
            _coco([image], [good, {**good, "bbox": [1, 2, -3, 4]}]),
            "annotations/instances_train.json annotations[1].bbox",
        ),
        (
            _coco([image], [{**good, "category_id": 9}]),
            "annotations/instances_train.json annotations[0].category_id",
        ),
        (
            _coco([{**image, "file_name": "nowhere.jpg"}], []),
            "annotations/instances_train.json images[0].file_name",
        ),
        (_coco([{**image, "width": 65}], [good]), "images/train/a.jpg"),  # not its real size
    ]
    for document, where in cases:
        path = tmp_path / "bad.zip"
        path.write_bytes(
            _zip(
                {
                    "annotations/instances_train.json": document,
                    "images/train/a.jpg": jpeg_bytes(64, 48, seed=1),
                }
            )
        )
        with pytest.raises(MalformedDataset) as info:
            import_dataset(settings, path, "coco")
        assert info.value.where.startswith(where), str(info.value)
        assert_nothing_stored(settings)


def test_layouts_other_tools_write(settings, app, tmp_path):
    roboflow_coco = {
        "train/_annotations.coco.json": _coco(
            [{"id": 0, "file_name": "a.jpg", "width": 64, "height": 48}],
            [
                {
                    "id": 0,
                    "image_id": 0,
                    "category_id": 1,
                    "bbox": [8, 8, 16, 8],
                    "score": 0.5,
                    "segmentation": [],
                    "area": 128,
                    "iscrowd": 0,
                }
            ],
        ),
        "train/a.jpg": jpeg_bytes(64, 48, seed=11),
        "valid/_annotations.coco.json": _coco(
            [{"id": 0, "file_name": "b.jpg", "width": 64, "height": 48}], []
        ),
        "valid/b.jpg": jpeg_bytes(64, 48, seed=12),
    }
    path = tmp_path / "rf.zip"
    path.write_bytes(_zip(roboflow_coco))
    report = import_dataset(settings, path, "coco")
    assert report.splits == {"train": 1, "val": 1}
    ann = Annotation.get()
    assert (ann.class_value, ann.geometry, ann.confidence) == ("crack", "[8,8,24,16]", 0.5)
    roboflow_yolo = {
        "data.yaml": b"train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['dent']\n",
        "train/images/x.jpg": jpeg_bytes(64, 48, seed=13),
        "train/labels/x.txt": b"0 0.5 0.5 0.5 0.5\n",
        "valid/images/y.jpg": jpeg_bytes(64, 48, seed=14),
    }
    path = tmp_path / "rfy.zip"
    path.write_bytes(_zip(roboflow_yolo))
    report = import_dataset(settings, path, "yolo")
    assert report.splits == {"train": 1, "val": 1} and report.annotations == 1


def test_a_device_key_cannot_claim_an_import_label():
    from edgecatalog.catalog import NewAnnotation
    from edgecatalog.errors import ReviewForbidden
    from edgecatalog.ingest.metadata import Metadata
    from edgecatalog.ingest.upload import check_device_upload

    claimed = NewAnnotation("crack", "bbox", [0.5, 0.5, 0.1, 0.1], source=" Import")
    with pytest.raises(ReviewForbidden):
        check_device_upload(Metadata(annotations=(claimed,)), "cam01")
