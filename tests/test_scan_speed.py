"""The fast folder-scan path keeps every guarantee of the slow one: the grouped counts and FTS
rows of a bulk chunk equal a recount from the rows (and the per-row path's result), the gate
of migration 0006 is never left set, the shortcuts (JPEG header walk, plain annotation check,
annotation tuples) agree with the code they shortcut, and the worker-process pool gives the
same catalog and leaves no process behind when its scan is killed."""

from __future__ import annotations

import io
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import imagesize
import pytest
from capture_helpers import unique_jpeg
from conftest import make_settings, seed_image
from count_checks import assert_counts_match_rows
from PIL import Image as PILImage

from edgecatalog import create_app, db
from edgecatalog.catalog import NewAnnotation, NewImage, annotation_columns, validate_annotation
from edgecatalog.db import write_tx
from edgecatalog.errors import ValidationError
from edgecatalog.ingest import bulk, counts
from edgecatalog.ingest.imagecheck import jpeg_fast_size, structure_problem
from edgecatalog.ingest.indexer import FolderIndexer
from edgecatalog.ingest.metadata import plainly_valid
from edgecatalog.ingest.probe import CaptureOptions
from edgecatalog.ingest.scan import index_files, scan_folder
from edgecatalog.models import database

CLASSES = ("person", "car", "dog")


def _folder(path, n: int, first: int = 0) -> None:
    """n captures: even ones with a JSON sidecar (two devices), odd ones with YOLO lines."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for i in range(first, first + n):
        (path / f"cap_{i:04d}.jpg").write_bytes(unique_jpeg(i, side=16))
        rng = random.Random(i)
        boxes = [
            (
                rng.randrange(3),
                0.2 + rng.random() * 0.5,
                0.2 + rng.random() * 0.5,
                0.1,
                0.1 + rng.random() * 0.2,
            )
            for _ in range(i % 4)
        ]
        if i % 2 == 0:
            doc = {
                "device_id": ("cam-a", "cam-b")[i % 4 // 2],
                "model_id": "m",
                "annotations": [
                    {
                        "class_value": CLASSES[c],
                        "type": "bbox",
                        "geometry": [x, y, w, h],
                        "confidence": 0.5,
                    }
                    for c, x, y, w, h in boxes
                ],
            }
            (path / f"cap_{i:04d}.json").write_text(json.dumps(doc))
        else:
            (path / f"cap_{i:04d}.txt").write_text(
                "".join(f"{c} {x} {y} {w} {h}\n" for c, x, y, w, h in boxes)
            )


def _counts_equal_a_recount() -> None:
    q = lambda sql: database.execute_sql(sql).fetchall()
    assert q("SELECT count(*) FROM ingest_bulk") == [(0,)]
    assert_counts_match_rows()
    # The FTS index against its content table, and one search answered from it.
    database.execute_sql("INSERT INTO image_fts(image_fts) VALUES ('integrity-check')")
    assert q("SELECT count(*) FROM image_fts WHERE image_fts MATCH 'cap'") == q(
        "SELECT count(*) FROM image WHERE filename LIKE '%cap%'"
    )


def _catalog_rows() -> dict[str, list]:
    """What a scan wrote, without ids or clocks, keyed by file name."""
    q = lambda sql: sorted(database.execute_sql(sql).fetchall())
    return {
        "images": q(
            "SELECT i.filename, i.storage_key, i.sha256, i.width, i.height, d.device_id, "
            "i.model_id, i.byte_size, b.image_count, b.stage FROM image i "
            "JOIN device d ON d.id = i.device_id JOIN batch b ON b.id = i.batch_id"
        ),
        "annotations": q(
            "SELECT i.filename, a.class_value, a.type, a.geometry, a.x_center, "
            "a.y_center, a.width, a.height, a.confidence, a.source, a.z_order "
            "FROM annotation a JOIN image i ON i.id = a.image_id"
        ),
        "outbox": q(
            "SELECT i.filename, o.kind, o.idempotency_key, o.state FROM outbox o "
            "JOIN image i ON i.id = o.image_id"
        ),
        "files": q(
            "SELECT c.path, c.kind, i.filename FROM capture_file c "
            "JOIN image i ON i.id = c.image_id"
        ),
    }


def _scan(settings, folder):
    with database.connection_context():
        options = CaptureOptions.from_settings(settings)
        return scan_folder(FolderIndexer(options, folder), recursive=False)


@pytest.fixture
def fresh(tmp_path):
    def make(name: str, **overrides):
        settings = make_settings(
            tmp_path / name, capture__settle_seconds=0.0, batches__max_images=37, **overrides
        )
        create_app(settings)
        return settings

    yield make
    if not database.is_closed():
        database.close()


def test_bulk_scan_counts_equal_a_recount_and_the_per_row_path(tmp_path, fresh, monkeypatch):
    folder = tmp_path / "captures"
    _folder(folder, 90)
    bulk_settings = fresh("bulk")
    seed_image(
        bulk_settings,
        filename="cap_seeded.jpg",
        device_id="cam-a",
        seed=3,
        annotations=(NewAnnotation("dog", "bbox", (0.5, 0.5, 0.2, 0.2)),),
    )
    gated: list[bool] = []

    def spy() -> bool:
        gated.append(counts.gate_ready())
        return gated[-1]

    monkeypatch.setattr(bulk, "gate_ready", spy)
    report = _scan(bulk_settings, folder)
    assert (report.indexed, report.rejected) == (90, 0)
    assert gated and all(gated)  # the grouped path ran
    _counts_equal_a_recount()
    with_bulk = _catalog_rows()
    seed_image(
        bulk_settings,
        filename="cap_after.jpg",
        device_id="cam-b",
        seed=4,
        annotations=(NewAnnotation("car", "bbox", (0.5, 0.5, 0.2, 0.2)),),
    )
    _counts_equal_a_recount()  # one image afterwards: the per-row triggers are on again
    database.close()

    monkeypatch.setattr(bulk, "BULK_MIN", 10**9)  # every image through the per-row triggers
    row_settings = fresh("rows")
    seed_image(
        row_settings,
        filename="cap_seeded.jpg",
        device_id="cam-a",
        seed=3,
        annotations=(NewAnnotation("dog", "bbox", (0.5, 0.5, 0.2, 0.2)),),
    )
    _scan(row_settings, folder)
    _counts_equal_a_recount()
    assert _catalog_rows() == {
        k: [r for r in v if "cap_after" not in str(r)] for k, v in with_bulk.items()
    }


def test_ungated_triggers_make_the_bulk_path_use_them(tmp_path, fresh):
    """A tool that re-created a count table's trigger without the gate (a benchmark loader,
    say): the bulk path sees it and lets the triggers count, instead of counting twice."""
    settings = fresh("ungated")
    database.connect(reuse_if_open=True)
    database.execute_sql("DROP TRIGGER image_facet_count_ai")
    database.execute_sql(
        "CREATE TRIGGER image_facet_count_ai AFTER INSERT ON image BEGIN INSERT INTO "
        "image_facet_count VALUES (new.batch_id, new.device_id, new.annotation_status, "
        "new.split, new.sync_state, 1) ON CONFLICT DO UPDATE SET n = n + 1; END"
    )
    assert not counts.gate_ready()
    folder = tmp_path / "captures"
    _folder(folder, 40)
    assert _scan(settings, folder).indexed == 40
    _counts_equal_a_recount()


def test_a_failed_chunk_leaves_no_gate_and_no_rows(fresh):
    fresh("fail")
    database.connect(reuse_if_open=True)
    news = [
        NewImage(
            filename=f"f{i}.jpg",
            storage_key=f"raw-data/f{i}.jpg",
            sha256=f"{i:064x}",
            byte_size=10,
            width=4,
            height=4,
            root="/nowhere",
            device_id="cam",
            annotations=(NewAnnotation("dog", "bbox", (0.5, 0.5, 0.1, 0.1)),),
        )
        for i in range(30)
    ]
    news[17] = NewImage(**{**news[17].__dict__, "filename": None})  # NOT NULL: fails mid-chunk
    with pytest.raises(sqlite3.IntegrityError), write_tx():
        bulk.add_images(news)
    assert database.execute_sql("SELECT count(*) FROM image").fetchone() == (0,)
    _counts_equal_a_recount()
    bulk.add_images(news[:17] + news[18:])  # the same chunk without the bad row goes in
    assert database.execute_sql("SELECT count(*) FROM image").fetchone() == (29,)
    _counts_equal_a_recount()


def _random_annotation(rng: random.Random) -> NewAnnotation:
    """A valid bbox, then (mostly) one field made odd: wrong types, NaN, bounds, lengths."""
    odd = [rng.random(), 0, 1, 1.0, 1.5, -0.1, math.nan, math.inf, True, "0.5", None]
    fields = {
        "class_value": "cat",
        "type": "bbox",
        "geometry": [rng.random() for _ in range(4)],
        "confidence": None,
        "z_order": 0,
    }
    change = rng.choice(
        [
            "none",
            "geometry",
            "length",
            "container",
            "class_value",
            "type",
            "confidence",
            "z_order",
            "polygon",
        ]
    )
    if change == "geometry":
        fields["geometry"][rng.randrange(4)] = rng.choice(odd)
    elif change == "length":
        fields["geometry"] = [rng.random() for _ in range(rng.choice([0, 3, 5, 6]))]
    elif change == "container":
        fields["geometry"] = rng.choice([tuple(fields["geometry"]), "x", None, {"a": 1}])
    elif change == "class_value":
        fields["class_value"] = rng.choice([" dog ", "", "  ", 5, None])
    elif change == "type":
        fields["type"] = rng.choice(["box", "", None, "polygon"])
    elif change == "confidence":
        fields["confidence"] = rng.choice(odd)
    elif change == "z_order":
        fields["z_order"] = rng.choice([3, True, 1.5, "1", -2])
    elif change == "polygon":
        fields.update(type="polygon", geometry=[rng.random() for _ in range(8)])
    return NewAnnotation(**fields)


def test_plainly_valid_never_accepts_what_validate_annotation_refuses():
    rng = random.Random(11)
    accepted = 0
    for _ in range(5000):
        ann = _random_annotation(rng)
        if plainly_valid(ann):
            accepted += 1
            validate_annotation(ann)  # must not raise
        else:
            try:
                validate_annotation(ann)
            except ValidationError:
                pass
    assert 1000 < accepted < 4000  # both answers were exercised


def test_annotation_values_equal_annotation_columns():
    rng = random.Random(5)
    keys = bulk.ANNOTATION_INSERT_FIELDS[1:11]
    for _ in range(3000):
        if rng.random() < 0.8:
            ann = NewAnnotation(
                " person ",
                "bbox",
                [rng.random() for _ in range(4)],
                rng.choice([None, rng.random(), 1]),
                rng.randrange(5),
                "model",
            )
        else:
            ann = NewAnnotation("car", "polygon", [rng.random() for _ in range(8)], None, 0)
        width, height = rng.randrange(1, 5000), rng.randrange(1, 5000)
        cols = annotation_columns(ann, width, height)
        assert bulk.annotation_values(ann, width, height) == tuple(cols[k] for k in keys)


def _slow_size(data: bytes) -> tuple[tuple[int, int], str | None]:
    return imagesize.get(io.BytesIO(data)), structure_problem(io.BytesIO(data), "JPEG", len(data))


def test_jpeg_fast_size_agrees_with_imagesize_and_the_structure_check():
    rng = random.Random(2)
    samples = [unique_jpeg(i, side=rng.choice([8, 16, 40])) for i in range(40)]
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotated: imagesize swaps width and height
    buf = io.BytesIO()
    PILImage.new("RGB", (30, 20)).save(buf, format="JPEG", exif=exif.tobytes())
    samples.append(buf.getvalue())
    for i in range(400):  # damaged copies: truncated, or a byte changed in the header
        data = bytearray(rng.choice(samples))
        if rng.random() < 0.5:
            del data[rng.randrange(2, min(len(data), 700)) :]
        else:
            data[rng.randrange(2, min(len(data), 400))] = rng.randrange(256)
        samples.append(bytes(data))
    fast_answers = 0
    for data in samples:
        fast = jpeg_fast_size(data)
        if fast is not None:
            fast_answers += 1
            assert _slow_size(data) == (fast, None)
    assert fast_answers >= 40  # the whole ones, at least, take the shortcut
    assert jpeg_fast_size(samples[40]) is None  # EXIF: left to imagesize
    assert imagesize.get(io.BytesIO(samples[40])) == (20, 30)


def _cli_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    env.update(
        EDGECATALOG_STORAGE_DATA_DIR=str(tmp_path / "data"),
        EDGECATALOG_AUTH_JWT_SECRET="t" * 40,
        EDGECATALOG_CAPTURE_SETTLE_SECONDS="0",
    )
    return env


PROCESS_SCAN = """
import json, sys
from edgecatalog.ingest import pool
used = []
enter = pool.ProbePool.__enter__
def spy(self):
    used.append(self.uses_processes)
    return enter(self)
pool.ProbePool.__enter__ = spy
from edgecatalog.cli import main
code = main(["scan", sys.argv[1]])
print(json.dumps(used))
sys.exit(code)
"""


def test_worker_processes_give_the_same_catalog_as_threads(tmp_path, fresh):
    folder = tmp_path / "captures"
    _folder(folder, 300)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 40)
    (folder / "cap_0003.txt").write_text("9 0.5 0.5 0.1 0.1\n")  # class index out of range
    env = dict(_cli_env(tmp_path / "procs"), EDGECATALOG_BATCHES_MAX_IMAGES="37")
    done = subprocess.run(
        [sys.executable, "-c", PROCESS_SCAN, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True]
    assert done.stdout.startswith("indexed 300, duplicates 0, rejected 2 in ")
    db.init_database(tmp_path / "procs" / "data" / "catalog.db")
    with database.connection_context():
        _counts_equal_a_recount()
        by_processes = _catalog_rows()
        rejected = database.execute_sql("SELECT path FROM rejected_file").fetchall()
    assert sorted(os.path.basename(p) for (p,) in rejected) == ["broken.jpg", "cap_0003.txt"]
    settings = fresh("threads")  # in this process: threads (fewer than PROCESS_MIN files)
    names = sorted(folder.glob("*"))
    for part in range(0, len(names), 200):  # passes of 200 paths, as the watcher takes them
        with database.connection_context():
            index_files(
                FolderIndexer(CaptureOptions.from_settings(settings), folder),
                names[part : part + 200],
            )
    _scan(settings, folder)
    database.connect(reuse_if_open=True)
    by_threads = _catalog_rows()
    assert by_threads == by_processes


def _children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def _kill_once_started(argv: list[str], env: dict[str, str], find, wanted: int) -> set[int]:
    """Start ``argv``, SIGKILL it once ``find(pid)`` gives ``wanted`` processes, and return
    them after checking every one of them is gone (or a zombie) within 10 s."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        found: set[int] = set()
        while len(found) < wanted and proc.poll() is None:
            assert time.monotonic() < deadline
            found = find(proc.pid)
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and len(found) >= wanted
    deadline, alive = time.monotonic() + 10, found
    while alive:
        alive = {pid for pid in found if os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"}
        assert time.monotonic() < deadline, f"outlived the scan: {_commands(alive)}"
        time.sleep(0.05)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to find processes")
def test_killed_scan_leaves_no_worker_processes(tmp_path):
    folder = tmp_path / "captures"
    _folder(folder, 2000)
    workers = _kill_once_started(
        [sys.executable, "-m", "edgecatalog", "scan", str(folder)],
        _cli_env(tmp_path),
        _children_of,
        2,
    )
    assert len(workers) == 2


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.parametrize("noticed", [False, True], ids=["while-probing", "before-handing-out"])
def test_a_dead_worker_is_an_error_not_a_hang(tmp_path, noticed):
    """A probe worker killed from outside (the OOM killer, say): the scan stops with one
    line on stderr and a non-zero exit instead of waiting for ever; a rerun completes.
    Whether the pool notices the death while a group is out or before the next is handed
    out, the error is the same."""
    folder = tmp_path / "captures"
    _folder(folder, 400)
    wait = (
        (
            "    import time\n"
            "    deadline = time.monotonic() + 20\n"
            "    while not self._procs._broken and time.monotonic() < deadline:\n"
            "        time.sleep(0.01)\n"
            "    assert self._procs._broken\n"
        )
        if noticed
        else ""
    )
    script = PROCESS_SCAN.replace(
        "    used.append(self.uses_processes)\n    return enter(self)",
        "    used.append(self.uses_processes)\n"
        "    entered = enter(self)\n"
        "    import os, signal\n"
        "    os.kill(next(iter(self._procs._processes)), signal.SIGKILL)\n"
        + wait
        + "    return entered",
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        env=_cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "probe worker process died" in done.stderr
    assert "Traceback" not in done.stderr  # the migrations' log lines, then one error line
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith("a probe worker process died; run the scan again")
    )
    again = subprocess.run(
        [sys.executable, "-m", "edgecatalog", "scan", str(folder)],
        env=_cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("indexed ")


SERVICE_LIKE_SCAN = """
import json, sys, threading
from edgecatalog.ingest import pool
used = []
enter = pool.ProbePool.__enter__
def spy(self):
    entered = enter(self)
    used.append((self.method, self.uses_processes))
    print(json.dumps(used), flush=True)
    return entered
pool.ProbePool.__enter__ = spy
stop = threading.Event()
threading.Thread(target=stop.wait, daemon=True).start()  # a thread, as in the service
from edgecatalog.cli import main
code = main(["scan", sys.argv[1]])
stop.set()
sys.exit(code)
"""


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        children = _children_of(todo.pop())
        todo += list(children - found)
        found |= children
    return found


def test_a_process_with_threads_probes_in_forkserver_workers(tmp_path):
    """Inside the service (other threads alive) workers come from a fork server, never a
    fork of the threaded process; the catalog is the same as the single-threaded scan's."""
    folder = tmp_path / "captures"
    _folder(folder, 300)
    script = SERVICE_LIKE_SCAN.replace("used = []", "used = []\npool.FORKSERVER_MIN = 256")
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        env=_cli_env(tmp_path / "served"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[0]) == [["forkserver", True]]
    assert "indexed 300, duplicates 0, rejected 0" in done.stdout
    plain = subprocess.run(
        [sys.executable, "-m", "edgecatalog", "scan", str(folder)],
        env=_cli_env(tmp_path / "plain"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert plain.returncode == 0, plain.stderr[-2000:]
    rows = []
    for name in ("served", "plain"):
        db.init_database(tmp_path / name / "data" / "catalog.db")
        with database.connection_context():
            _counts_equal_a_recount()
            rows.append(_catalog_rows())
    assert rows[0] == rows[1]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to find processes")
def test_killed_threaded_scan_leaves_no_forkserver_or_worker(tmp_path):
    folder = tmp_path / "captures"
    _folder(folder, 2000)
    # The fork server and two workers (and the resource tracker, when it has started).
    _kill_once_started(
        [sys.executable, "-c", SERVICE_LIKE_SCAN, str(folder)], _cli_env(tmp_path), _descendants, 3
    )


def _commands(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                out.append(f"{pid} {_state(pid)} {fh.read().replace(bytes(1), b' ')[:120]!r}")
        except OSError:
            pass
    return out


def test_workers_that_cannot_start_fall_back_to_threads(tmp_path, fresh, monkeypatch, caplog):
    from edgecatalog.ingest import pool

    def refuse(*args, **kwargs):
        raise OSError(38, "Function not implemented: sem_open")

    monkeypatch.setattr(pool, "ProcessPoolExecutor", refuse)
    monkeypatch.setattr(pool, "PROCESS_MIN", 1)
    settings = fresh("fallback")
    folder = tmp_path / "captures"
    _folder(folder, 40)
    report = _scan(settings, folder)
    assert (report.indexed, report.rejected) == (40, 0)
    assert "using threads" in caplog.text
    database.connect(reuse_if_open=True)
    _counts_equal_a_recount()


def test_a_routine_pass_in_a_process_with_threads_keeps_to_threads(tmp_path, fresh):
    """A fork server stays up once started: only a backlog of FORKSERVER_MIN files starts it."""
    from edgecatalog.ingest import pool

    options = CaptureOptions.from_settings(fresh("routine"))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert pool.ProbePool(options, 2, pool.FORKSERVER_MIN - 1).method is None
        assert pool.ProbePool(options, 2, pool.FORKSERVER_MIN).method == "forkserver"
    finally:
        stop.set()
        other.join()
    assert pool.ProbePool(options, 2, pool.PROCESS_MIN - 1).method is None
