"""Crash consistency of the whole service: ``edgecatalog serve`` (uploads over HTTP, a capture
folder in move mode, PATCH edits and the sync worker against the upstream emulator, all at
once) SIGKILLed at random moments and restarted, again and again.

After every restart, read straight from the SQLite file with stdlib sqlite3 (not our models):
``PRAGMA integrity_check`` is ok; every upload that got a 2xx is there with its file (bytes of
the right SHA-256) and all its annotations; every acknowledged PATCH is kept (or overtaken by
a later attempt); no file under images/ lacks a row and no row lacks its file. A read-only
bystander holds the database open throughout. At the end every row's file holds the row's
bytes, and every image, uploaded or captured, is upstream exactly once.

10 kills in the normal run, 50 under ``-m slow``. A stall of the sync fails with what the service
was doing (its threads' stacks, its queue and its log).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from capture_helpers import unique_jpeg as capture_jpeg
from capture_helpers import wait_for
from conftest import make_settings
from reliability import LoggedServe, record
from serve_process import free_port, write_config
from upload_helpers import CONTENT_TYPE, unique_jpeg, upload_body
from upstream_emulator import UpstreamEmulator

from edgecatalog.auth import Authenticator


@dataclass
class Ledger:
    """What the clients were told: the promises the service has to keep."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    uploads: dict[str, tuple[int, int]] = field(default_factory=dict)  # sha -> (id, n anns)
    dropped: dict[str, str] = field(default_factory=dict)  # sha -> name put in the watch dir
    patches: dict[int, list[tuple[str, bool]]] = field(default_factory=dict)  # attempts
    requests: int = 0
    refused: int = 0  # connection refused/reset while the service was down: expected
    server_errors: list[str] = field(default_factory=list)


class Drivers:
    """Client threads that keep working across kills; ``pause()`` waits until all are idle."""

    def __init__(
        self, url: str, headers: dict[str, str], watch: Path, ledger: Ledger, seed: int
    ) -> None:
        self.url, self.headers, self.watch, self.ledger = url, headers, watch, ledger
        self.stop, self.running = threading.Event(), threading.Event()
        self.idle = [threading.Event() for _ in range(4)]
        self.seed = seed
        self.threads = [
            threading.Thread(target=fn, args=(i,), daemon=True)
            for i, fn in enumerate((self.uploader, self.uploader, self.patcher, self.dropper))
        ]
        for t in self.threads:
            t.start()

    def resume(self) -> None:
        self.running.set()

    def pause(self) -> None:
        self.running.clear()
        for ev in self.idle:
            assert ev.wait(timeout=60), "a client thread did not go idle"

    def close(self) -> None:
        self.stop.set()
        self.running.set()
        for t in self.threads:
            t.join(timeout=60)

    def _loop(self, slot: int, step) -> None:
        rng = random.Random(self.seed * 10 + slot)
        n = 0
        while not self.stop.is_set():
            self.idle[slot].set()
            if not self.running.wait(timeout=0.2):
                continue
            self.idle[slot].clear()
            if self.stop.is_set():
                break
            n += 1
            try:
                step(rng, slot, n)
            except requests.RequestException:
                # Refused, reset or cut off mid-answer by the kill: expected, not acknowledged.
                with self.ledger.lock:
                    self.ledger.refused += 1
                time.sleep(0.05)
            except Exception as exc:  # noqa: BLE001 - kept for the test to fail on, not lost
                with self.ledger.lock:
                    self.ledger.server_errors.append(f"client thread: {exc!r}")
        self.idle[slot].set()

    def _answer(self, resp: requests.Response) -> None:
        with self.ledger.lock:
            self.ledger.requests += 1
            if resp.status_code >= 500:
                self.ledger.server_errors.append(f"{resp.status_code} {resp.text[:200]}")

    def uploader(self, slot: int) -> None:
        def step(rng: random.Random, slot: int, n: int) -> None:
            data = unique_jpeg(self.seed * 10_000_000 + slot * 1_000_000 + n, 30_000)
            anns = [
                {"class_value": f"c{k}", "type": "bbox", "geometry": [0.5, 0.5, 0.1, 0.1]}
                for k in range(rng.randint(0, 4))
            ]
            resp = requests.post(
                f"{self.url}/device/images/upload",
                timeout=10,
                data=upload_body(data, {"annotations": anns}, f"u{slot}-{n}.jpg"),
                headers={**self.headers, "Content-Type": CONTENT_TYPE},
            )
            self._answer(resp)
            if resp.status_code in (200, 201):
                with self.ledger.lock:
                    self.ledger.uploads[hashlib.sha256(data).hexdigest()] = (
                        resp.json()["data"]["image_id"],
                        len(anns),
                    )

        self._loop(slot, step)

    def patcher(self, slot: int) -> None:
        def step(rng: random.Random, slot: int, n: int) -> None:
            with self.ledger.lock:
                ids = sorted(i for i, _ in self.ledger.uploads.values())
            if not ids:
                time.sleep(0.05)
                return
            image_id, split = rng.choice(ids), rng.choice(["train", "val", "test", "none"])
            with self.ledger.lock:
                attempts = self.ledger.patches.setdefault(image_id, [])
                attempts.append((split, False))
                index = len(attempts) - 1
            resp = requests.patch(
                f"{self.url}/data/images/{image_id}",
                json={"split": split},
                headers=self.headers,
                timeout=10,
            )
            self._answer(resp)
            if resp.status_code == 200:
                with self.ledger.lock:
                    attempts[index] = (split, True)

        self._loop(slot, step)

    def dropper(self, slot: int) -> None:
        def step(rng: random.Random, slot: int, n: int) -> None:
            data = capture_jpeg(self.seed * 1_000_000 + n, 24)
            name = f"cap-{n:05d}.jpg"
            tmp = self.watch / f".{name}.part"  # dotfiles are ignored until renamed
            tmp.write_bytes(data)
            os.replace(tmp, self.watch / name)
            with self.ledger.lock:
                self.ledger.dropped[hashlib.sha256(data).hexdigest()] = name
            time.sleep(rng.uniform(0.02, 0.1))

        self._loop(slot, step)


@contextlib.contextmanager
def read_db(data: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection, closed on leaving (``with sqlite3.connect()`` alone only ends a
    transaction; the connection would stay open until the garbage collector runs)."""
    with contextlib.closing(
        sqlite3.connect(f"file:{data / 'catalog.db'}?mode=ro", uri=True, timeout=30)
    ) as conn:
        yield conn


def check_after_restart(data: Path, ledger: Ledger, check_files: bool) -> dict[str, int]:
    """The promises, read from the SQLite file and the disk. Returns counts."""
    with read_db(data) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {
            sha: (i, key, split)
            for i, sha, key, split in conn.execute(
                "SELECT id, sha256, storage_key, split FROM image"
            )
        }
        anns = dict(conn.execute("SELECT image_id, COUNT(*) FROM annotation GROUP BY image_id"))
        images_root = os.path.realpath(data / "images")
        in_images = {
            p
            for p, root in conn.execute(
                "SELECT i.storage_key, f.path FROM image i JOIN file_root f ON i.root_id = f.id"
            )
            if os.path.realpath(root) == images_root
        }
    with ledger.lock:
        uploads = dict(ledger.uploads)
        patches = {k: list(v) for k, v in ledger.patches.items()}
    images = data / "images"
    for sha, (image_id, n_anns) in uploads.items():
        assert sha in rows, f"acknowledged upload {image_id} lost"
        row_id, key, _ = rows[sha]
        assert row_id == image_id and anns.get(image_id, 0) == n_anns, (image_id, n_anns)
        path = images / key
        assert path.is_file(), f"file of acknowledged upload {image_id} missing"
        if check_files:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    by_id = {i: split for i, _, split in rows.values()}
    for image_id, attempts in patches.items():
        acked = [k for k, (_, ok) in enumerate(attempts) if ok]
        if acked:
            allowed = {s for s, _ in attempts[acked[-1] :]}
            assert by_id.get(image_id) in allowed, (image_id, by_id.get(image_id), attempts)
    on_disk = {f"raw-data/{p.name}" for p in (images / "raw-data").glob("*") if p.is_file()}
    orphans = sorted(on_disk - in_images)
    assert not orphans, f"orphaned files: {orphans[:5]}"
    lost = sorted(in_images - on_disk)  # acknowledged or not: a row never loses its file
    assert not lost, f"rows whose file is gone: {lost[:5]}"
    return {"rows": len(rows), "acked_uploads": len(uploads)}


def crash_config(tmp_path: Path, emu: UpstreamEmulator, data: Path, watch: Path, port: int) -> Path:
    return write_config(
        tmp_path / "serve.toml",
        data,
        port,
        server={"shutdown_timeout": 1.0},
        device={"id": "crash-box"},
        capture={
            "watch_dirs": [str(watch)],
            "mode": "move",
            "settle_seconds": 0.1,
            "scan_interval_seconds": 1.0,
        },
        upstream={
            "enabled": True,
            "base_url": emu.base_url,
            "device_key": emu.device_key,
            "api_token": "tok_test",
            "interval_seconds": 0.1,
            "batch_size": 20,
            "max_backoff_seconds": 1.0,
            "timeout_seconds": 2.0,
            "max_attempts": 1000,
        },
        retention={"min_free_bytes": 0, "max_disk_percent": 100.0},
        logging={"level": "INFO"},
    )  # the log tail explains a stall


def local_shas(data: Path) -> set[str]:
    with read_db(data) as conn:
        return {r[0] for r in conn.execute("SELECT sha256 FROM image")}


def mismatched_files(data: Path) -> list[str]:
    """Rows whose file is missing or holds other bytes than the row's SHA-256 (uploaded and
    captured images alike)."""
    with read_db(data) as conn:
        rows = conn.execute(
            "SELECT f.path, i.storage_key, i.sha256 FROM image i JOIN file_root f ON i.root_id = f.id"
        ).fetchall()
    bad = []
    for root, rel, sha in rows:
        path = Path(root) / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            bad.append(rel)
    return bad


def queued(data: Path) -> int:
    with read_db(data) as conn:
        return conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]


def watch_drained(watch: Path) -> bool:
    return not any(p.suffix == ".jpg" for p in watch.iterdir())


def sync_diagnosis(data: Path, proc: LoggedServe, emu: UpstreamEmulator) -> str:
    """What a stalled sync looks like from outside: is the service alive, what upstream last
    saw, the queue, the status row, and (after SIGUSR1) every thread's stack in its log."""
    alive = proc.proc.poll() is None
    if alive:
        proc.terminate(signal.SIGUSR1)  # faulthandler writes the stacks to the log
        time.sleep(1.0)
    with emu.lock:
        recent = [(e.method, e.path[-30:], e.status, e.fault) for e in emu.log[-5:]]
        idle = time.monotonic() - emu.log[-1].end if emu.log else None
    with read_db(data) as conn:
        queue = conn.execute(
            "SELECT state, kind, COUNT(*), MAX(attempts) FROM outbox GROUP BY 1, 2"
        ).fetchall()
        status = conn.execute("SELECT * FROM sync_status").fetchall()
    text = proc.log_text()
    dump = text[text.find("Thread 0x") :] if alive and "Thread 0x" in text else ""
    ours = [block for block in dump.split("\n\n") if "edgecatalog" in block]  # our threads
    lines = [line for line in text.splitlines() if line[:1].isdigit()][
        -15:
    ]  # log records start with their date
    return (
        f"service alive: {alive} (exit {proc.proc.returncode}); upstream idle for {idle} s,"
        f" last requests {recent}; queue {queue}; status {status}; log tail:\n"
        + "\n".join(lines)
        + "\nstacks:\n"
        + "\n\n".join(ours)
    )


def wait_all_upstream(data: Path, emu: UpstreamEmulator, proc: LoggedServe) -> None:
    """Thousands of images in the slow variant: wait while the sync makes progress (images
    arrive upstream or the queue shrinks: changes to synced images share it); fail on a stall
    of 60 s (and after 900 s in all)."""
    last, stalled_since, deadline = None, time.monotonic(), time.monotonic() + 900
    while True:
        local = local_shas(data)
        with emu.lock:
            upstream = set(emu.images)
        if local == upstream:
            return
        progress = (len(upstream), queued(data))
        if progress != last:
            last, stalled_since = progress, time.monotonic()
        if time.monotonic() - stalled_since >= 60 or time.monotonic() >= deadline:
            pytest.fail(
                f"sync stalled at {len(upstream)} of {len(local)} images "
                f"({len(upstream - local)} upstream only, {progress[1]} queued): "
                + sync_diagnosis(data, proc, emu)
            )
        time.sleep(0.5)


def kill_loop(
    config: Path,
    port: int,
    log: Path,
    drivers: Drivers,
    data: Path,
    watch: Path,
    kills: int,
    rng: random.Random,
    stack: contextlib.ExitStack,
) -> None:
    for run in range(kills):
        proc = LoggedServe(config, port, log)
        try:
            proc.wait_ready(timeout=30)
            if run == 0:
                # A bystander holds the database open from now on, as `edgecatalog status`,
                # a backup or Datasette may: no restart is then the first to open it, and a
                # transaction the kill cut off mid-commit stays undecided until a write.
                bystander = stack.enter_context(read_db(data))
                bystander.execute("SELECT COUNT(*) FROM image").fetchone()
            # Clients are paused; once the watcher has taken what the last run left (in move
            # mode it removes an original only after its row is committed), nothing is in
            # flight and the catalog must be clean and complete.
            wait_for(lambda: watch_drained(watch), timeout=60)
            check_after_restart(data, drivers.ledger, check_files=(run % 5 == 0))
            drivers.resume()
            time.sleep(rng.uniform(0.3, 1.5))
            proc.kill(signal.SIGKILL)
            drivers.pause()
        finally:
            proc.close()


def crash_runs(tmp_path: Path, kills: int, seed: int, name: str) -> None:
    emu = UpstreamEmulator(latency=0.005)
    emu.random_faults(0.05, ("500", "drop"), seed=seed)
    data, watch = tmp_path / "data", tmp_path / "watch"
    watch.mkdir()
    port = free_port()
    config = crash_config(tmp_path, emu, data, watch, port)
    headers = {
        "Authorization": "Bearer "
        + Authenticator(make_settings(tmp_path)).issue_token("crash", "write")
    }
    ledger = Ledger()
    drivers = Drivers(f"http://127.0.0.1:{port}", headers, watch, ledger, seed)
    proc = None
    stack = contextlib.ExitStack()
    try:
        kill_loop(
            config,
            port,
            tmp_path / "serve.log",
            drivers,
            data,
            watch,
            kills,
            random.Random(seed),
            stack,
        )
        # Last start: let capture and sync finish, then everything must be upstream once.
        proc = LoggedServe(config, port, tmp_path / "serve.log")
        proc.wait_ready(timeout=30)
        emu.random_faults(0, (), seed=0)
        wait_for(lambda: watch_drained(watch), timeout=60)
        counts = check_after_restart(data, ledger, check_files=True)
        assert not mismatched_files(data)
        wait_all_upstream(data, emu, proc)
        local = local_shas(data)
        with emu.lock:
            upstream_ids = [s.image_id for s in emu.images.values()]
            assert len(emu.by_id) == len(emu.images) == len(local)  # exactly once
            assert len(set(upstream_ids)) == len(upstream_ids)
            faults = sum(1 for e in emu.log if e.status is None or e.status >= 500)
        with ledger.lock:
            captured, uploaded = set(ledger.dropped), set(ledger.uploads)
            errors = list(ledger.server_errors)
        record(
            name,
            runs=kills,
            faults=kills + faults,
            requests=ledger.requests,
            errors=len(errors),
            lost=len((captured | uploaded) - local),
            sigkills=kills,
            upstream_faults=faults,
            images=len(local),
            acked_uploads=counts["acked_uploads"],
            captured=len(captured),
            patches=sum(len(v) for v in ledger.patches.values()),
            refused_while_down=ledger.refused,
        )
        assert captured <= local, f"{len(captured - local)} captured files never indexed"
        assert uploaded <= local
        assert not errors, errors[:5]
    finally:
        stack.close()
        drivers.close()
        if proc is not None:
            proc.close()
        emu.close()


def test_sigkill_the_whole_service_10_times(tmp_path):
    crash_runs(tmp_path, kills=10, seed=5, name="crash_sigkill_10")


@pytest.mark.slow
def test_sigkill_the_whole_service_50_times(tmp_path):
    crash_runs(tmp_path, kills=50, seed=17, name="crash_sigkill_50")
