"""Annotation sidecars: JSON (the upload metadata format) and YOLO, before and after their
image, changed later, broken, through both the watcher and ``scan``."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from capture_helpers import (
    annotations_of,
    image_by_sha,
    json_sidecar,
    rejected_paths,
    sha,
    unique_jpeg,
    wait_for,
)
from conftest import make_settings

from edgecatalog import create_app
from edgecatalog.errors import ValidationError
from edgecatalog.ingest.capture import CaptureService
from edgecatalog.ingest.commands import run_scan
from edgecatalog.ingest.sidecars import classify, parse_yolo
from edgecatalog.models import Annotation, Image, Outbox, database
from edgecatalog.timeutil import now_us

SETTLE = 0.3


@pytest.fixture
def watched(tmp_path):
    folder = tmp_path / "captures"
    folder.mkdir()
    settings = make_settings(
        tmp_path,
        capture__watch_dirs=[str(folder)],
        capture__settle_seconds=SETTLE,
        capture__classes=["box", "can"],
    )
    create_app(settings)
    service = CaptureService(settings)
    service.start()
    yield folder
    service.stop(5)
    if not database.is_closed():
        database.close()


@pytest.mark.parametrize(
    "name, kind",
    [
        ("a.jpg", "image"),
        ("A.JPEG", "image"),
        ("b.webp", "image"),
        ("c.json", "sidecar"),
        ("c.txt", "sidecar"),
        ("classes.txt", "classes"),
        ("x.jpg.tmp", None),
        ("x.part", None),
        (".x.jpg", None),
        ("notes.csv", None),
    ],
)
def test_classify(name, kind):
    assert classify(name) == kind


@pytest.mark.parametrize(
    "text, where",
    [
        ("0 0.5 0.5 0.1", "line 1"),  # too few fields
        ("0 0.5 0.5 0.1 0.1\nx 0.5 0.5 0.1 0.1", "line 2"),  # class index not an integer
        ("5 0.5 0.5 0.1 0.1", "line 1"),  # index beyond the class list
        ("0 1.5 0.5 0.1 0.1", "line 1"),  # not normalized
        ("0 0.5 0.5 0.1 0.1 2", "line 1"),  # confidence outside 0..1
    ],
)
def test_yolo_errors_name_the_line(text, where):
    with pytest.raises(ValidationError) as info:
        parse_yolo(text, ["a", "b"], "f.txt")
    assert info.value.param.startswith(f"f.txt {where}")


def test_yolo_lines():
    anns = parse_yolo("1 0.5 0.4 0.2 0.1 0.75\n\n0 0.1 0.1 0.1 0.1\n", ["a", "b"], "f.txt")
    assert [(a.class_value, list(a.geometry), a.confidence) for a in anns] == [
        ("b", [0.5, 0.4, 0.2, 0.1], 0.75),
        ("a", [0.1, 0.1, 0.1, 0.1], None),
    ]


def test_sidecar_before_image(watched):
    json_sidecar(
        watched / "f.json",
        ("dog", [0.5, 0.5, 0.2, 0.2]),
        model_id="m1",
        timestamp="2026-11-01T10:00:00Z",
        device_id="cam-7",
    )
    time.sleep(SETTLE * 2)
    data = unique_jpeg(1)
    (watched / "f.jpg").write_bytes(data)
    image = wait_for(lambda: image_by_sha(sha(data)))
    assert annotations_of(image.id) == [("dog", 0.5, 0.5, 0.2, 0.2)]
    assert image.model_id == "m1" and image.device.device_id == "cam-7"
    assert image.captured_at == 1_793_527_200_000_000  # the sidecar's timestamp


def test_late_sidecar_is_attached_then_replaced(watched):
    data = unique_jpeg(2)
    (watched / "g.jpg").write_bytes(data)
    image = wait_for(lambda: image_by_sha(sha(data)))
    assert annotations_of(image.id) == []
    Annotation.create(
        image=image.id,
        class_value="person-checked",
        type="bbox",
        geometry="[]",
        x_center=0.1,
        y_center=0.1,
        width=0.1,
        height=0.1,
        source="manual",
        created_at=now_us(),
        updated_at=now_us(),
    )
    (watched / "g.txt").write_text("1 0.5 0.5 0.25 0.25 0.9\n")
    wait_for(lambda: len(annotations_of(image.id)) == 2)
    assert ("can", 0.5, 0.5, 0.25, 0.25) in annotations_of(image.id)
    touched = Image.get_by_id(image.id).updated_at
    assert touched > image.updated_at

    # Already upstream: the next change is queued for the sync worker.
    Image.update(sync_state="synced").where(Image.id == image.id).execute()
    time.sleep(0.05)
    (watched / "g.txt").write_text("0 0.3 0.3 0.1 0.1\n0 0.7 0.7 0.1 0.1\n")
    wait_for(lambda: ("box", 0.7, 0.7, 0.1, 0.1) in annotations_of(image.id))
    assert annotations_of(image.id) == [
        ("box", 0.3, 0.3, 0.1, 0.1),
        ("box", 0.7, 0.7, 0.1, 0.1),
        ("person-checked", 0.1, 0.1, 0.1, 0.1),
    ]
    kinds = sorted(
        o.kind
        for o in Outbox.select().where((Outbox.image == image.id) & (Outbox.kind != "upload"))
    )
    assert kinds == ["create_annotation", "create_annotation", "delete_annotation"]


def test_broken_sidecar_is_rejected_then_fixed(watched):
    data = unique_jpeg(3)
    sidecar = watched / "h.json"
    sidecar.write_text('{"annotations": [{"class_value": "x", "type": "bbox", "geometry": [2]}]}')
    time.sleep(SETTLE * 2)
    (watched / "h.jpg").write_bytes(data)
    image = wait_for(lambda: image_by_sha(sha(data)))  # the image itself is fine
    real = os.path.realpath(sidecar)
    reason = wait_for(lambda: rejected_paths().get(real))
    assert "geometry" in reason
    assert annotations_of(image.id) == []
    json_sidecar(sidecar, ("x", [0.5, 0.5, 0.5, 0.5]))
    wait_for(lambda: annotations_of(image.id) == [("x", 0.5, 0.5, 0.5, 0.5)])
    wait_for(lambda: real not in rejected_paths())


def test_json_wins_over_yolo_and_missing_classes_reject(tmp_path):
    settings = make_settings(tmp_path, capture__settle_seconds=0.0)
    create_app(settings)
    folder = tmp_path / "both"
    folder.mkdir()
    both, yolo_only = unique_jpeg(4), unique_jpeg(5)
    (folder / "both.jpg").write_bytes(both)
    json_sidecar(folder / "both.json", ("from-json", [0.5, 0.5, 0.1, 0.1]))
    (folder / "both.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (folder / "yolo.jpg").write_bytes(yolo_only)
    (folder / "yolo.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no classes.txt, none configured
    report = run_scan(
        settings, folder, recursive=False, mode=None, out=io.StringIO(), err=io.StringIO()
    )
    assert (report.indexed, report.rejected) == (2, 1)
    assert [a[0] for a in annotations_of(image_by_sha(sha(both)).id)] == ["from-json"]
    assert annotations_of(image_by_sha(sha(yolo_only)).id) == []
    reason = rejected_paths()[os.path.realpath(folder / "yolo.txt")]
    assert "classes.txt" in reason
    # A classes.txt arriving later makes the sidecar readable; it is attached on the next scan.
    (folder / "classes.txt").write_text("widget\n")
    later = Path(folder / "yolo.txt")
    later.write_text("0 0.5 0.5 0.1 0.1\n")
    run_scan(settings, folder, recursive=False, mode=None, out=io.StringIO(), err=io.StringIO())
    assert [a[0] for a in annotations_of(image_by_sha(sha(yolo_only)).id)] == ["widget"]
    database.close()


def test_late_sidecar_finds_its_image_by_any_spelling_of_its_suffix(watched):
    # The image's path is its stem and an image suffix in any case ("Cap.JpEg"); a name with
    # the stem and more before the suffix ("Cap.x.jpg", stem "Cap.x") is another image's.
    (watched / "deep").mkdir()
    ours, other = unique_jpeg(3), unique_jpeg(4)
    (watched / "deep" / "Cap.x.jpg").write_bytes(other)
    (watched / "deep" / "Cap.JpEg").write_bytes(ours)
    image = wait_for(lambda: image_by_sha(sha(ours)))
    neighbour = wait_for(lambda: image_by_sha(sha(other)))
    (watched / "deep" / "Cap.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    wait_for(lambda: len(annotations_of(image.id)) == 1)
    assert annotations_of(image.id) == [("box", 0.5, 0.5, 0.25, 0.25)]
    assert annotations_of(neighbour.id) == []
