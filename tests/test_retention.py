"""Disk pressure on a simulated disk (a small total, real files): eviction takes the oldest
synced files only, and ingestion refuses cleanly when only unsynced data fills the disk."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pytest
import requests
from conftest import LiveServer, jpeg_bytes, make_settings, seed_image

from edgecatalog import create_app, retention
from edgecatalog.auth import Authenticator
from edgecatalog.errors import InsufficientStorage
from edgecatalog.models import Image, database

MB = 1024 * 1024


class SimulatedDisk:
    """A disk of ``total`` bytes holding ``other`` bytes of someone else's plus every file
    under the data folder, measured for real on each call."""

    def __init__(self, data_dir, total: int, other: int) -> None:
        self.data_dir, self.total, self.other = data_dir, total, other

    def used(self) -> int:
        size = 0
        for folder, _, files in os.walk(self.data_dir):
            size += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        return self.other + size

    def __call__(self, path) -> tuple[int, int]:
        return self.total, self.total - self.used()


@pytest.fixture
def disk_settings(tmp_path):
    settings = make_settings(
        tmp_path, retention__max_disk_percent=50.0, retention__min_free_bytes=0
    )
    app = create_app(settings)
    disk = SimulatedDisk(settings.data_dir, total=10 * MB, other=0)
    retention.use_disk_usage(disk)
    yield settings, app, disk
    retention.use_disk_usage(None)
    if not database.is_closed():
        database.close()


def _seed(settings, count: int, synced: int, start: int = 0):
    images = []
    for i in range(start, start + count):
        data = jpeg_bytes(seed=i) + os.urandom(100_000)
        images.append(seed_image(settings, filename=f"r{i}.jpg", data=data, seed=i))
    for image in images[:synced]:
        Image.update(sync_state="synced").where(Image.id == image.id).execute()
    return images


def _file(settings, image) -> str:
    return str(settings.images_dir / image.storage_key)


def test_eviction_takes_the_oldest_synced_files_and_never_an_unsynced_one(disk_settings):
    settings, app, disk = disk_settings
    images = _seed(settings, 10, synced=6)
    Image.update(sync_state="quarantined").where(Image.id == images[6].id).execute()
    Image.update(sync_state="local_only").where(Image.id == images[7].id).execute()
    unsynced = images[6:]
    digests = {
        i.id: hashlib.sha256(Path(_file(settings, i)).read_bytes()).hexdigest() for i in unsynced
    }
    # Cross the 50 % line by ~350 KB: four 100 KB files must go, the oldest synced ones.
    disk.other = disk.total // 2 - disk.used() + disk.other + 350_000
    report = retention.evict_if_needed(settings)
    assert report.image_ids == [i.id for i in images[:4]]
    assert report.still_short == 0
    total, free = disk(settings.data_dir)
    assert (total - free) <= total * 0.5
    for image in images[:4]:
        assert not os.path.exists(_file(settings, image))
        assert Image.get_by_id(image.id).evicted_at is not None
    for image in images[4:]:
        assert os.path.exists(_file(settings, image))
        assert Image.get_by_id(image.id).evicted_at is None
    client = app.test_client()
    auth = {"Authorization": "Bearer " + Authenticator(settings).issue_token("t", "read")}
    gone = client.get(f"/files/{images[0].id}", headers=auth)
    assert gone.status_code == 410 and gone.json["error"]["code"] == "GONE"
    listed = client.get("/data/images?include_image_url=true&limit=100", headers=auth).json
    urls = {row["id"]: row["image_url"] for row in listed["data"]}
    assert [urls[i.id] for i in images[:4]] == [""] * 4
    assert all(urls[i.id] for i in images[4:])
    # Far over the line: every synced file goes, then it stops; unsynced bytes are untouched.
    disk.other += 2 * MB
    report = retention.evict_if_needed(settings)
    assert report.image_ids == [i.id for i in images[4:6]] and report.still_short > 0
    for image in unsynced:
        data = Path(_file(settings, image)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digests[image.id]
        assert Image.get_by_id(image.id).evicted_at is None
    with pytest.raises(InsufficientStorage) as refused:
        retention.ensure_ingest_space(settings, 1000)
    assert refused.value.status == 507 and "waiting to be synced" in refused.value.message


def test_eviction_never_takes_a_pinned_image(disk_settings):
    """Pinned through the API (single and bulk), the oldest synced files stay whatever the
    disk; the next oldest go instead, and when only pinned ones are left nothing goes."""
    settings, app, disk = disk_settings
    images = _seed(settings, 6, synced=6)
    client = app.test_client()
    auth = {"Authorization": "Bearer " + Authenticator(settings).issue_token("t", "write")}
    resp = client.patch(f"/data/images/{images[0].id}", json={"pinned": True}, headers=auth)
    assert resp.status_code == 200 and resp.json["data"]["pinned"] is True
    resp = client.patch(
        "/data/images", json={"ids": [images[1].id], "set": {"pinned": True}}, headers=auth
    )
    assert resp.json["data"] == {"matched": 1, "changed": 1, "skipped_locked": 0}
    disk.other = disk.total // 2 - disk.used() + disk.other + 150_000
    report = retention.evict_if_needed(settings)
    assert report.image_ids == [images[2].id, images[3].id]
    disk.other += 2 * MB
    report = retention.evict_if_needed(settings)
    assert report.image_ids == [images[4].id, images[5].id] and report.still_short > 0
    for image in images[:2]:
        assert os.path.exists(_file(settings, image))
        assert Image.get_by_id(image.id).evicted_at is None


def test_eviction_removes_the_cached_thumbnails_of_evicted_images(disk_settings):
    settings, app, disk = disk_settings
    images = _seed(settings, 4, synced=2)
    client = app.test_client()
    auth = {"Authorization": "Bearer " + Authenticator(settings).issue_token("t", "read")}
    for image in images:
        assert client.get(f"/files/{image.id}/thumbnail?size=128", headers=auth).status_code == 200
    cached = {i.id: list((settings.data_dir / "thumbnails").rglob(f"{i.sha256}-*")) for i in images}
    # One decode caches every size (thumbnails.SIZES), so each image has all three here.
    assert all(len(paths) == 3 for paths in cached.values())
    disk.other = disk.total  # far over the limits: every synced file must go
    report = retention.evict_if_needed(settings)
    assert sorted(report.image_ids) == sorted(i.id for i in images[:2])
    for image in images[:2]:
        assert not any(p.exists() for p in cached[image.id])
        gone = client.get(f"/files/{image.id}/thumbnail?size=128", headers=auth)
        assert gone.status_code == 410
    for image in images[2:]:
        assert all(p.exists() for p in cached[image.id])


def test_min_free_bytes_counts_the_incoming_bytes(disk_settings):
    settings, _, disk = disk_settings
    settings = settings.replace(retention__max_disk_percent=100.0, retention__min_free_bytes=1 * MB)
    _seed(settings, 3, synced=0)
    disk.other = disk.total - disk.used() - 1 * MB - 50_000  # 50 KB above the free floor
    retention.ensure_ingest_space(settings, 40_000)
    with pytest.raises(InsufficientStorage):
        retention.ensure_ingest_space(settings, 60_000)


def test_shortfall_arithmetic():
    settings = make_settings(
        Path("unused"), retention__max_disk_percent=90.0, retention__min_free_bytes=100
    )
    assert retention.shortfall(settings, 1000, 200) == 0
    assert retention.shortfall(settings, 1000, 50) == 50  # 100 free needed, 50 free
    assert retention.shortfall(settings, 1000, 150, incoming=100) == 50  # 90 % line, incoming
    assert retention.shortfall(settings, 1000, 95) == 5


def _multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = "XbOuNdArYx"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_upload_answers_507_when_only_unsynced_data_fills_the_disk(disk_settings):
    settings, app, disk = disk_settings
    _seed(settings, 3, synced=0)
    server = LiveServer(app)
    try:
        token = Authenticator(settings).issue_token("cam", "write")
        headers = {"Authorization": f"Bearer {token}"}
        disk.other = disk.total // 2 - disk.used() + disk.other - 50_000  # 50 KB of room
        body, ctype = _multipart(jpeg_bytes(seed=500) + os.urandom(100_000), "big.jpg")
        before = (Image.select().count(), disk.used())
        resp = requests.post(
            server.url + "/device/images/upload",
            data=body,
            headers={**headers, "Content-Type": ctype},
            timeout=10,
        )
        assert resp.status_code == 507
        error = resp.json()["error"]
        assert error["code"] == "INSUFFICIENT_STORAGE" and error["details"] == "image"
        assert "waiting to be synced" in error["message"]
        assert (Image.select().count(), disk.used()) == before  # nothing half-written
        disk.other -= 200_000  # space returns (say the operator cleared other data)
        resp = requests.post(
            server.url + "/device/images/upload",
            data=body,
            headers={**headers, "Content-Type": ctype},
            timeout=10,
        )
        assert resp.status_code == 201, resp.text
        assert Image.select().count() == before[0] + 1
    finally:
        server.close()


def test_capture_watcher_pauses_while_full_and_resumes(tmp_path, caplog):
    from edgecatalog.ingest.capture import CaptureService

    watch = tmp_path / "captures"
    watch.mkdir()
    settings = make_settings(
        tmp_path,
        retention__max_disk_percent=50.0,
        retention__min_free_bytes=0,
        capture__watch_dirs=[str(watch)],
        capture__settle_seconds=0.1,
        capture__scan_interval_seconds=1.0,
    )
    create_app(settings)
    total = 10 * MB
    state = {"used": total}  # full: nothing synced to evict
    retention.use_disk_usage(lambda path: (total, total - state["used"]))
    service = CaptureService(settings)
    caplog.set_level(logging.INFO, logger="edgecatalog")
    try:
        service.start()
        (watch / "c1.jpg").write_bytes(jpeg_bytes(seed=1))
        time.sleep(1.5)
        with database.connection_context():
            assert Image.select().count() == 0
        assert any("capture paused" in r.getMessage() for r in caplog.records)
        assert (watch / "c1.jpg").exists()
        state["used"] = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with database.connection_context():
                if Image.select().count() == 1:
                    break
            time.sleep(0.1)
        with database.connection_context():
            assert Image.select().count() == 1
        assert any("capture resumed" in r.getMessage() for r in caplog.records)
    finally:
        service.stop(5)
        retention.use_disk_usage(None)
        if not database.is_closed():
            database.close()
