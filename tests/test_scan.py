"""Indexing an existing folder: ``edgecatalog scan`` in process and as a real subprocess,
index and move modes, duplicates, rejected files, and a scan while a live server answers."""

from __future__ import annotations

import gc
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from capture_helpers import (
    annotations_of,
    file_of,
    image_by_sha,
    json_sidecar,
    rejected_paths,
    sha,
    unique_jpeg,
)
from conftest import LiveServer, assert_crcs_are_the_files, jpeg_bytes, make_settings

from edgecatalog import create_app, db
from edgecatalog.ingest.commands import ScanRefused, run_scan
from edgecatalog.models import Annotation, Image, Outbox, database

SUMMARY = re.compile(r"^indexed (\d+), duplicates (\d+), rejected (\d+) in (\d+\.\d+) s$")


@pytest.fixture
def scan_settings(tmp_path):
    settings = make_settings(tmp_path, capture__settle_seconds=0.0)
    create_app(settings)
    yield settings
    if not database.is_closed():
        database.close()


def scan(settings, folder: Path, recursive: bool = False, mode: str | None = None):
    out, err = io.StringIO(), io.StringIO()
    report = run_scan(settings, folder, recursive=recursive, mode=mode, out=out, err=err)
    return report, out.getvalue(), err.getvalue()


def test_scan_indexes_images_with_sidecars_once(scan_settings, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    blobs = {f"f{i}.jpg": jpeg_bytes(seed=i) for i in range(4)}
    for name, data in blobs.items():
        (folder / name).write_bytes(data)
    json_sidecar(folder / "f0.json", ("cat", [0.5, 0.5, 0.2, 0.4]), model_id="yolo")
    (folder / "classes.txt").write_text("person\ndog\n")
    (folder / "f1.txt").write_text("1 0.25 0.75 0.1 0.2 0.9\n0 0.5 0.5 0.5 0.5\n")
    (folder / "notes.csv").write_text("not ours")

    report, out, _ = scan(scan_settings, folder)
    assert (report.indexed, report.duplicates, report.rejected) == (4, 0, 0)
    assert SUMMARY.match(out.strip())
    f0 = image_by_sha(sha(blobs["f0.jpg"]))
    f1 = image_by_sha(sha(blobs["f1.jpg"]))
    assert annotations_of(f0.id) == [("cat", 0.5, 0.5, 0.2, 0.4)]
    assert f0.model_id == "yolo"
    assert annotations_of(f1.id) == [("dog", 0.25, 0.75, 0.1, 0.2), ("person", 0.5, 0.5, 0.5, 0.5)]
    # Indexed in place: the file is where it was, under the scanned folder as root.
    assert file_of(f0) == Path(os.path.realpath(folder / "f0.jpg"))
    assert Outbox.select().where(Outbox.kind == "upload").count() == 4
    assert assert_crcs_are_the_files() == 4  # counted as they were read, for exports

    again, out, _ = scan(scan_settings, folder)
    assert (again.indexed, again.duplicates, again.rejected) == (0, 0, 0)
    assert Image.select().count() == 4


def test_duplicates_and_corrupt_files(scan_settings, tmp_path):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    data = jpeg_bytes(seed=7)
    (folder / "a.jpg").write_bytes(data)
    (folder / "sub" / "copy.jpg").write_bytes(data)  # same bytes, another name
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 40)  # JPEG magic, no header
    (folder / "text.png").write_bytes(b"hello, not a png")
    png_head = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + (64).to_bytes(4, "big")
    png_head += (48).to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    (folder / "headonly.png").write_bytes(png_head + b"\x00" * 64)  # a header, then garbage
    (folder / "good.png").write_bytes(jpeg_bytes(seed=8))  # the bytes decide, not the name
    whole = jpeg_bytes(seed=10)
    (folder / "cut.jpg").write_bytes(whole[:-16])  # header whole, the end of its data cut
    (folder / "trailer.jpg").write_bytes(whole + b"appended by a camera")  # after EOI: fine

    report, _, _ = scan(scan_settings, folder, recursive=True)
    assert (report.indexed, report.duplicates, report.rejected) == (3, 1, 4)
    assert Image.select().where(Image.sha256 == sha(data)).count() == 1
    reasons = rejected_paths()
    assert set(reasons) == {
        os.path.realpath(folder / name)
        for name in ("broken.jpg", "text.png", "headonly.png", "cut.jpg")
    }
    assert "not a supported image" in reasons[os.path.realpath(folder / "text.png")]
    assert "end-of-image" in reasons[os.path.realpath(folder / "cut.jpg")]

    # Unchanged rejected files are not retried; a fixed one is, and loses its record.
    again, _, _ = scan(scan_settings, folder, recursive=True)
    assert (again.indexed, again.rejected) == (0, 0)
    fixed = jpeg_bytes(seed=9)
    (folder / "text.png").write_bytes(fixed)
    third, _, _ = scan(scan_settings, folder, recursive=True)
    assert (third.indexed, third.rejected) == (1, 0)
    assert image_by_sha(sha(fixed)) is not None
    assert os.path.realpath(folder / "text.png") not in rejected_paths()


def test_non_recursive_scan_leaves_subfolders(scan_settings, tmp_path):
    folder = tmp_path / "top"
    (folder / "deeper").mkdir(parents=True)
    (folder / "x.jpg").write_bytes(jpeg_bytes(seed=1))
    (folder / "deeper" / "y.jpg").write_bytes(jpeg_bytes(seed=2))
    assert scan(scan_settings, folder)[0].indexed == 1
    assert scan(scan_settings, folder, recursive=True)[0].indexed == 1


def test_unsettled_files_are_left_for_later(tmp_path):
    settings = make_settings(tmp_path, capture__settle_seconds=30.0)
    create_app(settings)
    folder = tmp_path / "fresh"
    folder.mkdir()
    (folder / "new.jpg").write_bytes(jpeg_bytes(seed=3))
    report, _, err = scan(settings, folder)
    assert report.indexed == 0 and len(report.changing) == 1
    assert "changed in the last 30 s" in err
    old = folder / "new.jpg"
    os.utime(old, (old.stat().st_atime - 60, old.stat().st_mtime - 60))
    assert scan(settings, folder)[0].indexed == 1
    database.close()


def test_files_dated_ahead_of_the_clock_are_not_left_waiting(tmp_path):
    """A copy that kept a fast camera clock's mtime, or our clock set back since: the file
    was not written just now, and waiting for the clock to reach its mtime could take hours.
    A file dated a moment ahead (within the settle time) still waits."""
    settings = make_settings(tmp_path, capture__settle_seconds=30.0)
    create_app(settings)
    folder = tmp_path / "ahead"
    folder.mkdir()
    for name, ahead, seed in (("hours.jpg", 2 * 3600, 4), ("moment.jpg", 5, 5)):
        path = folder / name
        path.write_bytes(jpeg_bytes(seed=seed))
        os.utime(path, (time.time() + ahead, time.time() + ahead))
    report, _, _ = scan(settings, folder)
    assert report.indexed == 1 and [p.name for p in report.changing] == ["moment.jpg"]
    assert [i.storage_key for i in Image.select()] == ["hours.jpg"]
    database.close()


def test_move_mode_moves_into_images_and_serves(scan_settings, tmp_path, auth_headers):
    folder = tmp_path / "inbox"
    folder.mkdir()
    data = jpeg_bytes(seed=11)
    (folder / "m.jpg").write_bytes(data)
    json_sidecar(folder / "m.json", ("car", [0.5, 0.5, 0.1, 0.1]))
    dup = jpeg_bytes(seed=12)
    (folder / "d1.jpg").write_bytes(dup)
    (folder / "d2.jpg").write_bytes(dup)

    report, _, _ = scan(scan_settings, folder, mode="move")
    assert (report.indexed, report.duplicates) == (2, 1)
    image = image_by_sha(sha(data))
    stored = file_of(image)
    assert stored.read_bytes() == data
    assert stored.parent == scan_settings.images_dir / "raw-data"
    assert image.storage_key.startswith("raw-data/")
    assert not (folder / "m.jpg").exists()  # moved
    assert (folder / "m.json").exists()  # sidecars stay; their content is in the catalog
    # Of two identical files one is moved, the other (a duplicate) is left where it was.
    assert sorted(p.name for p in folder.glob("d*.jpg")) in (["d1.jpg"], ["d2.jpg"])
    assert annotations_of(image.id) == [("car", 0.5, 0.5, 0.1, 0.1)]
    app = create_app(scan_settings)
    server = LiveServer(app)
    try:
        resp = server.get(f"/files/{image.id}", headers=auth_headers())
        assert resp.status_code == 200 and resp.content == data
    finally:
        server.close()


def test_scanned_folder_is_served_by_files(scan_settings, tmp_path, auth_headers):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    data = jpeg_bytes(seed=21)
    (folder / "e.jpg").write_bytes(data)
    scan(scan_settings, folder)
    image = image_by_sha(sha(data))
    server = LiveServer(create_app(scan_settings))
    try:
        resp = server.get(f"/files/{image.id}", headers=auth_headers())
        assert resp.status_code == 200 and resp.content == data
    finally:
        server.close()


def test_scan_refuses_missing_folder_and_data_folder(scan_settings, tmp_path):
    with pytest.raises(ScanRefused):
        scan(scan_settings, tmp_path / "nope")
    with pytest.raises(ScanRefused):
        scan(scan_settings, scan_settings.images_dir)


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    full_env.update(
        {
            "EDGECATALOG_STORAGE_DATA_DIR": str(tmp_path / "data"),
            "EDGECATALOG_AUTH_JWT_SECRET": "t" * 40,
            "EDGECATALOG_CAPTURE_SETTLE_SECONDS": "0",
        },
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_scan_summary_and_rejected_listing(tmp_path):
    folder = tmp_path / "cli"
    folder.mkdir()
    for i in range(3):
        (folder / f"c{i}.jpg").write_bytes(jpeg_bytes(seed=30 + i))
    (folder / "c0-copy.jpg").write_bytes(jpeg_bytes(seed=30))
    (folder / "junk.jpg").write_bytes(b"garbage")
    done = _cli(["scan", str(folder)], tmp_path)
    assert done.returncode == 0, done.stderr
    match = SUMMARY.match(done.stdout.strip())
    assert match and match.groups()[:3] == ("3", "1", "1")
    assert "Traceback" not in done.stderr and "\r" not in done.stderr  # no bar off a terminal

    listing = _cli(["rejected"], tmp_path)
    assert listing.returncode == 0
    assert str(Path(os.path.realpath(folder)) / "junk.jpg") in listing.stdout
    assert "not a supported image" in listing.stdout
    assert "rejected" in _cli(["--help"], tmp_path).stdout


def test_cli_scan_of_a_missing_folder_is_one_line(tmp_path):
    done = _cli(["scan", str(tmp_path / "missing")], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not an existing folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_scan_while_server_answers(tmp_path, auth_headers):
    settings = make_settings(tmp_path)
    server = LiveServer(create_app(settings))
    folder = tmp_path / "bulk"
    folder.mkdir()
    n = 300
    for i in range(n):
        (folder / f"b{i:04d}.jpg").write_bytes(unique_jpeg(i))
    failures: list[str] = []
    seen: list[list[int]] = [[], []]
    stop = threading.Event()

    def reader(totals: list[int]) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                resp = session.get(
                    server.url + "/data/images?limit=5", headers=auth_headers(), timeout=10
                )
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")
                else:
                    totals.append(resp.json()["meta"]["total"])

    threads = [threading.Thread(target=reader, args=(totals,)) for totals in seen]
    for t in threads:
        t.start()
    try:
        done = _cli(["scan", str(folder)], tmp_path)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        server.close()
    assert done.returncode == 0, done.stderr
    assert SUMMARY.match(done.stdout.strip()).group(1) == str(n)
    assert failures == []
    for totals in seen:  # each reader saw the catalog only grow, and saw it answer
        assert totals and totals == sorted(totals)
    assert Image.select().count() == n
    assert Annotation.select().count() == 0
    database.close()


def test_move_scan_killed_midway_then_rerun_loses_nothing(tmp_path):
    settings = make_settings(tmp_path)
    db.open_for(settings)  # not create_app: an app holds the ingest lock until collected
    db.migrate()
    folder = tmp_path / "kill"
    folder.mkdir()
    n = 1500
    digests = set()
    for i in range(n):
        data = unique_jpeg(5000 + i, side=16)
        digests.add(sha(data))
        (folder / f"k{i:05d}.jpg").write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    env.update(
        EDGECATALOG_STORAGE_DATA_DIR=str(tmp_path / "data"),
        EDGECATALOG_AUTH_JWT_SECRET="t" * 40,
        EDGECATALOG_CAPTURE_SETTLE_SECONDS="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecatalog", "scan", str(folder), "--mode", "move"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while Image.select().count() == 0 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # it died mid-way, not after finishing
    assert 0 < Image.select().count() < n
    database.close()
    done = _cli(["scan", str(folder), "--mode", "move"], tmp_path)
    assert done.returncode == 0, done.stderr
    gc.collect()  # apps of earlier tests in this process must not hold the ingest lock
    create_app(settings)  # start-up reconciliation removes links a killed scan left behind
    assert {s for (s,) in Image.select(Image.sha256).tuples()} == digests
    assert Image.select().count() == n
    assert list(folder.iterdir()) == []  # every original moved, none left half-done
    stored = {
        p.relative_to(settings.images_dir).as_posix()
        for p in (settings.images_dir / "raw-data").iterdir()
    }
    assert stored == {p for (p,) in Image.select(Image.storage_key).tuples()}  # no orphan, no gap
    for image in Image.select().limit(20):
        assert sha(file_of(image).read_bytes()) == image.sha256
    database.close()


def test_ingest_benchmark_still_runs():
    """A tiny run of benchmarks/ingest.py, so the harness does not rot between real runs."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "ingest.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    done = subprocess.run(
        [sys.executable, str(script), "--n", "12", "--kb", "5", "--repeats", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for label in (
        "floor (read + sha256, warm cache)",
        "scan (index mode)",
        "HTTP upload (4 threads)",
    ):
        assert re.search(re.escape(label) + r"\s+\d+ images/s", done.stdout), done.stdout
