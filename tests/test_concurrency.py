"""Several threads upload through a real waitress server while another reads the list: no
error (no "database is locked"), and every image is in the catalog exactly once, including
the same bytes sent by two threads at the same moment.
"""

from __future__ import annotations

import hashlib
import threading

import requests
from conftest import LiveServer, make_settings
from upload_helpers import DEVICE_KEY, catalog_counts, device_key_settings, image_bytes

from edgecatalog import create_app
from edgecatalog.models import Image, database

THREADS = 4
PER_THREAD = 20
SHARED = 8  # images every uploader sends: racing duplicates


def upload(session: requests.Session, url: str, data: bytes, name: str) -> requests.Response:
    return session.post(
        url + "/device/images/upload",
        headers={"X-Device-Key": DEVICE_KEY},
        files={"image": (name, data, "image/jpeg")},
        timeout=30,
    )


def test_concurrent_uploads_while_listing(tmp_path, auth_headers):
    settings = make_settings(tmp_path, **device_key_settings())
    server = LiveServer(create_app(settings))
    unique = {
        t: [image_bytes(seed=1000 + t * PER_THREAD + i) for i in range(PER_THREAD)]
        for t in range(THREADS)
    }
    shared = [image_bytes(seed=5000 + i) for i in range(SHARED)]
    failures: list[str] = []
    answers: dict[str, set[int]] = {}
    lock = threading.Lock()
    start = threading.Barrier(THREADS + 1)
    done = threading.Event()

    def uploader(t: int) -> None:
        session = requests.Session()
        start.wait()
        for i, data in enumerate(unique[t] + shared):
            try:
                resp = upload(session, server.url, data, f"t{t}-{i}.jpg")
            except requests.RequestException as exc:
                failures.append(f"upload: {exc!r}")
                continue
            if resp.status_code not in (200, 201):
                failures.append(f"upload {resp.status_code}: {resp.text[:200]}")
                continue
            with lock:
                answers.setdefault(hashlib.sha256(data).hexdigest(), set()).add(
                    resp.json()["data"]["image_id"]
                )

    def reader() -> None:
        session = requests.Session()
        start.wait()
        reads = 0
        while not done.is_set() or reads == 0:
            resp = session.get(
                server.url + "/data/images?limit=100&include_annotations=true",
                headers=auth_headers(),
                timeout=30,
            )
            reads += 1
            if resp.status_code != 200:
                failures.append(f"list {resp.status_code}: {resp.text[:200]}")

    threads = [threading.Thread(target=uploader, args=(t,)) for t in range(THREADS)]
    listing = threading.Thread(target=reader)
    try:
        for thread in threads + [listing]:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        done.set()
        listing.join(timeout=30)
    finally:
        server.close()
    assert failures == []
    expected = {hashlib.sha256(d).hexdigest() for d in shared}
    for datas in unique.values():
        expected |= {hashlib.sha256(d).hexdigest() for d in datas}
    assert set(answers) == expected
    # Every thread that sent the same bytes was told the same image id.
    assert all(len(ids) == 1 for ids in answers.values())
    with database.connection_context():
        stored = [row.sha256 for row in Image.select(Image.sha256)]
    assert sorted(stored) == sorted(expected)  # each exactly once
    assert catalog_counts()[0] == THREADS * PER_THREAD + SHARED
    files = list((settings.images_dir / "raw-data").iterdir())
    assert len(files) == len(expected)
    assert list((settings.images_dir / ".incoming").iterdir()) == []
