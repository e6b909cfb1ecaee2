"""Disk full, for real: the data folder on a small tmpfs mounted by the test (root only; skipped
with the reason otherwise, always unmounted). The service (``edgecatalog serve`` subprocess,
capture folder in move mode, so captures need room in the data folder too) is fed until the
disk is full: uploads get 507, the watcher pauses and leaves files where they are, reads keep
working, nothing stored is damaged, and ingestion resumes by itself once space is freed.

Two guards are exercised: the configured reserve (``retention.min_free_bytes``: 507 before
the disk is truly full, so SQLite keeps room for its WAL), and no reserve at all (the disk
really runs out: what the service answers then is recorded).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import requests
from capture_helpers import wait_for
from conftest import make_settings
from reliability import LoggedServe, record
from serve_process import free_port, write_config
from upload_helpers import CONTENT_TYPE, unique_jpeg, upload_body

from edgecatalog.auth import Authenticator

MiB = 1024 * 1024


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def start(tmp_path: Path, data: Path, watch: Path, **retention) -> LoggedServe:
    port = free_port()
    config = write_config(
        tmp_path / "serve.toml",
        data,
        port,
        logging={"level": "INFO"},
        capture={
            "watch_dirs": [str(watch)],
            "mode": "move",
            "settle_seconds": 0.1,
            "scan_interval_seconds": 1.0,
        },
        retention=retention,
    )
    proc = LoggedServe(config, port, tmp_path / "serve.log")
    proc.wait_ready(timeout=30)
    return proc


def upload(proc: LoggedServe, headers: dict[str, str], seed: int) -> tuple[int, dict, bytes]:
    data = unique_jpeg(seed, 200_000)
    resp = requests.post(
        f"{proc.url}/device/images/upload",
        timeout=30,
        data=upload_body(
            data,
            {
                "annotations": [
                    {"class_value": "x", "type": "bbox", "geometry": [0.5, 0.5, 0.1, 0.1]}
                ]
            },
            f"f{seed}.jpg",
        ),
        headers={**headers, "Content-Type": CONTENT_TYPE},
    )
    try:
        body = resp.json()
    except ValueError:
        body = {"raw": resp.text[:200]}
    return resp.status_code, body, data


def check_stored(data: Path, acked: dict[str, int]) -> None:
    with sqlite3.connect(f"file:{data / 'catalog.db'}?mode=ro", uri=True, timeout=30) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(conn.execute("SELECT sha256, storage_key FROM image"))
    for sha in acked:
        assert sha in rows, "an acknowledged image is gone"
        assert hashlib.sha256((data / "images" / rows[sha]).read_bytes()).hexdigest() == sha


def test_disk_full_507_pause_and_resume(tmp_path, tmpfs):
    data, watch = tmpfs / "data", tmp_path / "watch"
    watch.mkdir()
    filler = tmpfs / "filler.bin"  # what "freeing space" will delete
    filler.write_bytes(b"\0" * (5 * MiB))
    headers = {
        "Authorization": "Bearer "
        + Authenticator(make_settings(tmp_path)).issue_token("w", "write")
    }
    proc = start(tmp_path, data, watch, min_free_bytes=1 * MiB, max_disk_percent=100.0)
    acked: dict[str, int] = {}
    statuses: list[int] = []
    try:
        for seed in range(100):  # bounded: 12 MiB holds far fewer than 100 x 200 kB
            status, body, raw = upload(proc, headers, seed)
            statuses.append(status)
            if status == 201:
                acked[hashlib.sha256(raw).hexdigest()] = body["data"]["image_id"]
            else:
                break
        assert statuses[-1] == 507, (statuses[-5:], body)
        assert body["error"]["code"] and body["error"]["message"]
        assert len(acked) >= 5
        # The watcher pauses: captures stay where they are while the disk is full.
        names = []
        for i in range(5):
            # Larger than the room left above the reserve, so none of them fits.
            (watch / f"cap{i}.jpg").write_bytes(unique_jpeg(5000 + i, 400_000))
            names.append(f"cap{i}.jpg")
        wait_for(lambda: "capture paused" in proc.log_text(), timeout=15)
        assert sorted(p.name for p in watch.iterdir()) == names
        # Reads keep working, with every stored byte intact.
        listed = requests.get(f"{proc.url}/data/images?limit=100", headers=headers, timeout=10)
        assert listed.status_code == 200 and listed.json()["meta"]["total"] == len(acked)
        for sha, image_id in list(acked.items())[:5]:
            got = requests.get(f"{proc.url}/files/{image_id}", headers=headers, timeout=10)
            assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == sha
        patch = requests.patch(
            f"{proc.url}/data/images/{next(iter(acked.values()))}",
            json={"split": "val"},
            headers=headers,
            timeout=10,
        )
        assert patch.status_code == 200, patch.text  # the reserve left room for the WAL
        check_stored(data, acked)
        # Free space: ingestion resumes by itself.
        filler.unlink()
        wait_for(lambda: not list(watch.iterdir()), timeout=30)
        status, body, raw = upload(proc, headers, 1000)
        assert status == 201, body
        acked[hashlib.sha256(raw).hexdigest()] = body["data"]["image_id"]
        check_stored(data, acked)
        record(
            "disk_full_reserve",
            runs=1,
            faults=1,
            requests=len(statuses) + 9,
            errors=0,
            lost=0,
            uploads_before_507=len(statuses) - 1,
            captures_resumed=len(names),
        )
    finally:
        proc.close()


def test_disk_truly_full_without_reserve(tmp_path, tmpfs):
    """No reserve: the disk really runs out (ENOSPC mid-write, or SQLite's "database or disk
    is full"). Whatever the answer, it must not be a 2xx for data that was not kept, nothing
    stored may be damaged, and the service must come back when space is freed."""
    data, watch = tmpfs / "data", tmp_path / "watch"
    watch.mkdir()
    headers = {
        "Authorization": "Bearer "
        + Authenticator(make_settings(tmp_path)).issue_token("w", "write")
    }
    proc = start(tmp_path, data, watch, min_free_bytes=0, max_disk_percent=100.0)
    acked: dict[str, int] = {}
    statuses: list[int] = []
    try:
        for seed in range(200):
            status, body, raw = upload(proc, headers, 10_000 + seed)
            statuses.append(status)
            if status == 201:
                acked[hashlib.sha256(raw).hexdigest()] = body["data"]["image_id"]
            elif len(statuses) >= 2 and statuses[-2] != 201:
                break  # two failures in a row: full
        failures = [s for s in statuses if s != 201]
        assert failures, "the disk never filled"
        first_failure = failures[0]
        assert proc.proc.poll() is None, "the service died when the disk filled"
        check_stored(data, acked)
        listed = requests.get(f"{proc.url}/data/images?limit=1", headers=headers, timeout=10)
        assert listed.status_code == 200
        # Now take the last bytes too (as another program on the box might): SQLite cannot
        # grow its WAL, and a write must be a clean 507, not a 500 and not damage.
        hog = tmpfs / "hog.bin"
        with open(hog, "wb") as fh:
            try:
                for _ in range(64):  # bounded: the tmpfs is 12 MiB
                    fh.write(b"\0" * (256 * 1024))
                    fh.flush()
            except OSError:
                pass
        image_id = next(iter(acked.values()))
        patches = []
        for split in ("val", "test", "train"):
            resp = requests.patch(
                f"{proc.url}/data/images/{image_id}",
                json={"split": split},
                headers=headers,
                timeout=10,
            )
            patches.append(resp.status_code)
        assert all(s in (200, 507) for s in patches), patches
        assert proc.proc.poll() is None
        check_stored(data, acked)
        assert (
            requests.get(f"{proc.url}/data/images?limit=1", headers=headers, timeout=10).status_code
            == 200
        )
        hog.unlink()
        resp = requests.patch(
            f"{proc.url}/data/images/{image_id}", json={"split": "val"}, headers=headers, timeout=10
        )
        assert resp.status_code == 200, resp.text
        # Make room without touching catalogued data: grow the tmpfs, as adding a disk would.
        subprocess.run(["mount", "-o", "remount,size=24m", str(tmpfs)], check=True)
        status, body, raw = upload(proc, headers, 99_999)
        assert status == 201, body
        acked[hashlib.sha256(raw).hexdigest()] = body["data"]["image_id"]
        check_stored(data, acked)
        record(
            "disk_full_no_reserve",
            runs=1,
            faults=1,
            requests=len(statuses) + 2,
            errors=sum(s >= 500 and s != 507 for s in statuses),
            lost=0,
            first_failure_status=first_failure,
            statuses_after_full=failures[:5],
            acked=len(acked),
            patch_statuses_when_full=patches,
        )
        assert first_failure == 507, f"a full disk answered {first_failure}, not 507"
    finally:
        proc.close()


@pytest.mark.parametrize(
    "raised",
    [
        OSError(28, "No space left on device"),
        sqlite3.OperationalError("database or disk is full"),
    ],
    ids=["ENOSPC", "SQLITE_FULL"],
)
def test_a_full_disk_anywhere_in_a_request_is_a_507(tmp_path, raised):
    """The mapping the tmpfs tests reach only when the disk fills at the wrong moment, made
    deterministic: a view that hits a full disk (wrapped, as peewee wraps sqlite3's error)
    answers 507 with the envelope, not a 500."""
    import peewee

    from edgecatalog import create_app
    from edgecatalog.models import database

    app = create_app(make_settings(tmp_path))

    def full_disk():
        try:
            raise raised
        except Exception as exc:
            raise peewee.OperationalError(str(exc)) from exc

    app.add_url_rule("/test-only/full-disk", "full_disk", full_disk)
    try:
        resp = app.test_client().get("/test-only/full-disk")
        assert resp.status_code == 507
        body = resp.get_json()
        assert body["error"]["code"] == "INSUFFICIENT_STORAGE"
        assert body["error"]["details"] == "disk" and "full" in body["error"]["message"]
    finally:
        database.close()
