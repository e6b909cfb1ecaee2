"""Crash safety of uploads: the real ``edgecatalog serve`` is SIGKILLed while threads upload,
then restarted. Every upload that was answered 201 must be there with its file and its
annotations; no file may lack a row and no row may lack its file. Plus the start-up
reconciliation on its own, with files left exactly as an interrupted ingest leaves them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import requests
from conftest import make_settings, seed_image
from serve_process import ServeProcess, free_port, write_config
from upload_helpers import DEVICE_KEY, PLAIN_DEVICE_KEY, unique_jpeg

from edgecatalog import create_app
from edgecatalog.ingest import store
from edgecatalog.models import database

UPLOADERS = 3
ROUNDS = 3
KEYS = (PLAIN_DEVICE_KEY, DEVICE_KEY)  # a key is one device: cam0's and cam1's


def metadata_for(seed: int) -> dict:
    count = seed % 4
    return {
        "device_id": f"cam{seed % 2}",
        "annotations": [
            {
                "class_value": f"c{k}",
                "type": "bbox",
                "geometry": [0.5, 0.5, 0.1 + k / 10, 0.1],
                "confidence": 0.5,
            }
            for k in range(count)
        ],
    }


def start(tmp_path: Path, data_dir: Path, round_no: int) -> ServeProcess:
    port = free_port()
    config = write_config(
        tmp_path / f"config{round_no}.toml",
        data_dir,
        port,
        auth={"device_keys": [f"cam{n}={k}" for n, k in enumerate(KEYS)]},
    )
    proc = ServeProcess(config, port)
    proc.wait_ready()
    return proc


def upload_until_dead(url: str, seeds: list[int], acked: dict[int, dict], lock) -> None:
    session = requests.Session()
    for seed in seeds:
        data = unique_jpeg(seed, 150_000)
        try:
            resp = session.post(
                url + "/device/images/upload",
                headers={"X-Device-Key": KEYS[seed % 2]},
                files={
                    "image": (f"s{seed}.jpg", data, "image/jpeg"),
                    "metadata": (None, json.dumps(metadata_for(seed))),
                },
                timeout=20,
            )
        except requests.RequestException:
            return  # the server is gone: this upload was never acknowledged
        if resp.status_code == 201:
            with lock:
                acked[seed] = {**resp.json()["data"], "sha256": hashlib.sha256(data).hexdigest()}


def check_consistent(data_dir: Path, acked: dict[int, dict]) -> int:
    """The invariants, read straight from the database file and the disk. Returns the row count."""
    images = data_dir / "images"
    db = sqlite3.connect(f"file:{data_dir / 'catalog.db'}?mode=ro", uri=True)
    try:
        rows = {r[0]: r[1:] for r in db.execute("SELECT id, storage_key, sha256 FROM image")}
        counts = dict(db.execute("SELECT image_id, COUNT(*) FROM annotation GROUP BY image_id"))
    finally:
        db.close()
    for seed, got in acked.items():
        assert got["image_id"] in rows, f"acknowledged upload {seed} lost"
        path, sha = rows[got["image_id"]]
        assert (path, sha) == (got["storage_key"], got["sha256"])
        assert counts.get(got["image_id"], 0) == len(metadata_for(seed)["annotations"])
    for path, sha in rows.values():  # no row without its (complete) file
        assert hashlib.sha256((images / path).read_bytes()).hexdigest() == sha
    on_disk = {f"raw-data/{p.name}" for p in (images / "raw-data").iterdir()}
    assert on_disk == {path for path, _ in rows.values()}  # no file without a row
    assert list((images / ".incoming").iterdir()) == []
    return len(rows)


def orphans(data_dir: Path) -> int:
    images = data_dir / "images"
    db = sqlite3.connect(f"file:{data_dir / 'catalog.db'}?mode=ro", uri=True)
    try:
        known = {r[0] for r in db.execute("SELECT storage_key FROM image")}
    finally:
        db.close()
    files = [f"raw-data/{p.name}" for p in (images / "raw-data").iterdir()]
    return sum(1 for f in files if f not in known) + len(list((images / ".incoming").iterdir()))


def test_sigkill_during_uploads_loses_nothing_and_leaves_no_orphan(tmp_path):
    data_dir = tmp_path / "data"
    rng = random.Random(20261128)
    acked: dict[int, dict] = {}
    lock = threading.Lock()
    next_seed, left_behind = 0, 0
    for round_no in range(ROUNDS):
        proc = start(tmp_path, data_dir, round_no)
        try:
            seeds = [
                list(range(next_seed + t, next_seed + 400, UPLOADERS)) for t in range(UPLOADERS)
            ]
            next_seed += 400
            threads = [
                threading.Thread(target=upload_until_dead, args=(proc.url, s, acked, lock))
                for s in seeds
            ]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.4, 1.2))
            proc.terminate(signal.SIGKILL)
            proc.proc.wait(timeout=10)
            for thread in threads:
                thread.join(timeout=30)
        finally:
            proc.close()
        left_behind += orphans(data_dir)
        restarted = start(tmp_path, data_dir, 100 + round_no)  # start-up reconciles
        try:
            rows = check_consistent(data_dir, acked)
            assert rows >= len(acked)
            # The restarted service takes uploads again, and sees retried bytes as duplicates.
            if acked:
                seed = next(iter(acked))
                resp = requests.post(
                    restarted.url + "/device/images/upload",
                    headers={"X-Device-Key": KEYS[seed % 2]},
                    files={"image": ("again.jpg", unique_jpeg(seed, 150_000))},
                    timeout=20,
                )
                assert resp.status_code == 200
                assert resp.json()["data"]["image_id"] == acked[seed]["image_id"]
        finally:
            restarted.terminate(signal.SIGKILL)
            restarted.proc.wait(timeout=10)
            restarted.close()
    assert len(acked) > 0
    print(
        f"acknowledged {len(acked)} uploads over {ROUNDS} kills; "
        f"{left_behind} orphan file(s) were left by the kills and reconciled"
    )


def test_reconcile_removes_what_an_interrupted_ingest_leaves(tmp_path):
    settings = make_settings(tmp_path)
    create_app(settings).extensions["edgecatalog.ingest_lock"].release()  # schema only
    with database.connection_context():
        kept = seed_image(settings, seed=1)
    images = settings.images_dir
    orphan = images / "raw-data" / "0000_orphan.jpg"  # renamed, row never committed
    orphan.write_bytes(b"\xff\xd8\xff partial")
    partial = images / ".incoming" / "abc.part"  # still being received
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"\xff\xd8")
    elsewhere = images / "operator-notes.txt"  # not ours: never touched
    elsewhere.write_text("keep me")
    database.close()
    app = create_app(settings)
    assert not orphan.exists() and not partial.exists()
    assert (images / kept.storage_key).exists() and elsewhere.exists()
    app.extensions["edgecatalog.ingest_lock"].release()


def test_reconcile_spares_young_orphans_while_another_process_ingests(tmp_path):
    settings = make_settings(tmp_path)
    create_app(settings).extensions["edgecatalog.ingest_lock"].release()
    images = settings.images_dir
    young = images / "raw-data" / "0001_young.jpg"
    old = images / "raw-data" / "0002_old.jpg"
    old.parent.mkdir(exist_ok=True)
    for path in (young, old):
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    # Another process (here: another open file description) is mid-ingest.
    other = os.open(images / store.LOCK_FILE, os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_SH)
    try:
        app = create_app(settings)
    finally:
        os.close(other)
    assert young.exists() and not old.exists()
    app.extensions["edgecatalog.ingest_lock"].release()


def test_known_paths_is_exact_for_listed_paths():
    paths = [f"raw-data/{i:05d}_frame.jpg" for i in range(2000)]
    known = store.KnownPaths(paths[::2])
    assert all(p in known for p in paths[::2])
    assert sum(p in known for p in paths[1::2]) == 0


def test_declared_length_over_the_limit_is_refused_by_the_real_server(tmp_path):
    """At the socket: headers only, a Content-Length past the limit; the answer is a 413
    before a single body byte is sent."""
    import socket

    proc = start(tmp_path, tmp_path / "data", 0)
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
            sock.sendall(
                (
                    f"POST /device/images/upload HTTP/1.1\r\nHost: localhost\r\n"
                    f"X-Device-Key: {PLAIN_DEVICE_KEY}\r\n"
                    f"Content-Type: multipart/form-data; boundary=b\r\n"
                    f"Content-Length: {60 * 1024 * 1024}\r\n\r\n"
                ).encode()
            )
            head = sock.recv(4096).split(b"\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 413")
    finally:
        proc.terminate(signal.SIGKILL)
        proc.proc.wait(timeout=10)
        proc.close()
