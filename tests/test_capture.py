"""The capture watcher as it runs inside ``serve``: real inotify events on a real folder, a real
SQLite file, files written slowly, renamed temporaries, corrupt files, and move mode."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from capture_helpers import file_of, image_by_sha, rejected_paths, sha, unique_jpeg, wait_for
from conftest import LiveServer, make_settings
from serve_process import free_port

from edgecatalog import background, create_app
from edgecatalog.config import ConfigError
from edgecatalog.ingest.capture import CaptureService
from edgecatalog.models import CaptureFile, Image, database

SETTLE = 0.4


@pytest.fixture
def watch(tmp_path):
    """Start a capture service on a fresh watch dir; returns a function taking settings."""
    started: list[CaptureService] = []

    def start(mode: str = "index", interval: float = 60.0, **overrides):
        folder = tmp_path / "captures"
        folder.mkdir(exist_ok=True)
        settings = make_settings(
            tmp_path,
            capture__watch_dirs=[str(folder)],
            capture__settle_seconds=SETTLE,
            capture__mode=mode,
            capture__scan_interval_seconds=interval,
            **overrides,
        )
        create_app(settings)
        service = CaptureService(settings)
        service.start()
        started.append(service)
        return folder, settings, service

    yield start
    for service in started:
        service.stop(5)
    if not database.is_closed():
        database.close()


def test_slow_writer_is_indexed_once_complete(watch):
    folder, _, _ = watch()
    data = unique_jpeg(1, side=96)
    target = folder / "slow.jpg"
    with open(target, "wb") as fh:
        for i in range(0, len(data), len(data) // 4 + 1):
            fh.write(data[i : i + len(data) // 4 + 1])
            fh.flush()
            time.sleep(SETTLE / 3)  # each pause shorter than the settle time
            assert Image.select().count() == 0  # never taken while being written
    image = wait_for(lambda: image_by_sha(sha(data)))
    assert image.byte_size == len(data) and file_of(image).read_bytes() == data
    time.sleep(SETTLE * 2)
    assert Image.select().count() == 1 and rejected_paths() == {}


def test_temporaries_and_dotfiles_are_ignored_until_renamed(watch):
    folder, _, _ = watch()
    data = unique_jpeg(2)
    (folder / "frame.jpg.tmp").write_bytes(data)
    (folder / ".hidden.jpg").write_bytes(unique_jpeg(3))
    (folder / "frame.part").write_bytes(unique_jpeg(4))
    time.sleep(SETTLE * 3)
    assert Image.select().count() == 0
    os.rename(folder / "frame.jpg.tmp", folder / "frame.jpg")
    image = wait_for(lambda: image_by_sha(sha(data)))
    assert image.filename == "frame.jpg"
    assert Image.select().count() == 1


def test_corrupt_file_is_rejected_and_the_watcher_goes_on(watch):
    folder, _, _ = watch()
    bad = folder / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    wait_for(lambda: str(Path(os.path.realpath(bad))) in rejected_paths())
    good = unique_jpeg(5)
    (folder / "good.jpg").write_bytes(good)
    wait_for(lambda: image_by_sha(sha(good)))
    # The rejected file is retried once it changes, and its record goes away.
    fixed = unique_jpeg(6)
    bad.write_bytes(fixed)
    wait_for(lambda: image_by_sha(sha(fixed)))
    wait_for(lambda: rejected_paths() == {})


def test_rejected_records_of_deleted_files_are_forgotten(watch):
    folder, _, service = watch(interval=1.0)
    bad, kept = folder / "bad.jpg", folder / "kept.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    kept.write_bytes(b"\xff\xd8\xff\xe0 also truncated")
    wanted = {os.path.realpath(bad), os.path.realpath(kept)}
    wait_for(lambda: set(rejected_paths()) == wanted)
    bad.unlink()
    passes = service.passes
    wait_for(lambda: service.passes >= passes + 2)  # a whole pass after the delete
    assert set(rejected_paths()) == {os.path.realpath(kept)}


def test_same_bytes_twice_are_one_image(watch):
    folder, _, _ = watch()
    data = unique_jpeg(7)
    (folder / "one.jpg").write_bytes(data)
    wait_for(lambda: image_by_sha(sha(data)))
    (folder / "two.jpg").write_bytes(data)
    wait_for(lambda: CaptureFile.get_or_none(CaptureFile.path == "two.jpg"))
    assert Image.select().count() == 1
    assert CaptureFile.get(CaptureFile.path == "two.jpg").kind == "duplicate"


def test_files_present_before_start_and_in_new_subfolders(tmp_path, watch):
    folder = tmp_path / "captures"
    (folder / "early").mkdir(parents=True)
    early = unique_jpeg(8)
    (folder / "early" / "e.jpg").write_bytes(early)
    old = time.time() - 60
    os.utime(folder / "early" / "e.jpg", (old, old))
    watch()
    wait_for(lambda: image_by_sha(sha(early)))  # the start-up reconciliation found it
    late = unique_jpeg(9)
    (folder / "new" / "deep").mkdir(parents=True)
    (folder / "new" / "deep" / "l.jpg").write_bytes(late)
    image = wait_for(lambda: image_by_sha(sha(late)))
    assert image.storage_key == "new/deep/l.jpg"


def test_reconciliation_finds_what_events_missed(watch):
    folder, _, running = watch(interval=1.0)
    running._observer.stop()  # from now on no inotify event arrives: only the periodic pass
    running._observer.join(5)
    passes = running.passes
    data = unique_jpeg(10)
    (folder / "x.jpg").write_bytes(data)
    image = wait_for(lambda: image_by_sha(sha(data)), timeout=15)
    assert running.passes > passes and image.storage_key == "x.jpg"


def test_move_mode_moves_and_serves(watch, auth_headers):
    folder, settings, _ = watch(mode="move")
    data = unique_jpeg(11)
    (folder / "m.jpg").write_bytes(data)
    image = wait_for(lambda: image_by_sha(sha(data)))
    wait_for(lambda: not (folder / "m.jpg").exists())
    stored = file_of(image)
    assert stored.parent == settings.images_dir / "raw-data" and stored.read_bytes() == data
    server = LiveServer(create_app(settings))
    try:
        resp = server.get(f"/files/{image.id}", headers=auth_headers())
        assert resp.status_code == 200 and resp.content == data
    finally:
        server.close()


def test_move_interrupted_after_commit_is_finished(watch):
    folder, _, _ = watch(mode="move", interval=1.0)
    data = unique_jpeg(12)
    original = folder / "crash.jpg"
    original.write_bytes(data)
    wait_for(lambda: image_by_sha(sha(data)))
    wait_for(lambda: not original.exists())
    row = CaptureFile.get(CaptureFile.path == "crash.jpg")
    assert row.kind == "moved"
    # As if the process died between the commit and the unlink: the original is back,
    # exactly as it was taken. The next pass finishes the move instead of indexing again.
    original.write_bytes(data)
    os.utime(original, ns=(row.mtime_ns, row.mtime_ns))
    wait_for(lambda: not original.exists(), timeout=10)
    assert Image.select().count() == 1
    assert file_of(image_by_sha(sha(data))).read_bytes() == data


def test_missing_watch_dir_is_a_configuration_error(tmp_path):
    settings = make_settings(tmp_path, capture__watch_dirs=[str(tmp_path / "absent")])
    with pytest.raises(ConfigError, match="capture.watch_dirs.*absent"):
        background.build_services(settings)
    inside = make_settings(tmp_path, capture__watch_dirs=[str(tmp_path / "data")])
    (tmp_path / "data" / "images").mkdir(parents=True)
    with pytest.raises(ConfigError, match="overlaps"):
        background.build_services(inside)


def test_serve_with_a_missing_watch_dir_exits_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    env.update(
        EDGECATALOG_STORAGE_DATA_DIR=str(tmp_path / "data"),
        EDGECATALOG_AUTH_JWT_SECRET="t" * 40,
        EDGECATALOG_SERVER_PORT=str(free_port()),
        EDGECATALOG_CAPTURE_WATCH_DIRS=str(tmp_path / "absent"),
        EDGECATALOG_LOGGING_LEVEL="ERROR",
    )
    done = subprocess.run(
        [sys.executable, "-m", "edgecatalog", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "capture.watch_dirs" in done.stderr and "Traceback" not in done.stderr
