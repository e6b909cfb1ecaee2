"""Upstream faults switched on and off at random during a long sync: the real worker loop
against the emulator while a chaos thread flips between refused connections (offline), 500,
429, slow answers past the timeout, answers dropped after the upload was stored, and 401.

Afterwards (faults off, then manual passes, which is how a 401 stop is resumed by design):
every image is upstream exactly once with its annotations and its local changes, and at no
point did the worker send a request within the backoff floor (1 s) of a failed one. Timings
come from the emulator's log, not from the worker.
"""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest
from capture_helpers import unique_jpeg
from conftest import seed_image
from reliability import record
from sync_helpers import all_synced, box, drain, open_db, run_loop_until, sync_settings
from upstream_emulator import UpstreamEmulator

from edgecatalog import catalog
from edgecatalog.models import Image, Outbox, database
from edgecatalog.sync.worker import SyncWorker

KINDS = ("500", "429", "slow", "drop", "401")
BACKOFF_FLOOR = 1.0  # throttle.backoff_delay's base: the least wait after a failure
OK = (200, 201, 409)


def chaos(
    emu: UpstreamEmulator, stop: threading.Event, rng: random.Random, counts: dict[str, int]
) -> None:
    offline = False
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.2 and not offline:
            emu.go_offline()
            offline = True
            counts["offline"] += 1
        else:
            if offline:
                emu.go_online()
                offline = False
            if roll < 0.75:
                kinds = tuple(rng.sample(KINDS, rng.randint(1, 3)))
                emu.random_faults(rng.uniform(0.4, 0.9), kinds, seed=rng.randint(0, 10**6))
                counts["switched_on"] += 1
            else:
                emu.random_faults(0, (), seed=0)
                counts["switched_off"] += 1
        stop.wait(rng.uniform(0.2, 1.0))
    if offline:
        emu.go_online()


class Editor:
    """Local edits that keep coming while the link flaps (a PATCH queued per synced image)."""

    def __init__(self, images: list, rng: random.Random) -> None:
        self.images, self.rng, self.changed = images, rng, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with database.connection_context():
            while not self.stop.wait(0.3):
                image = self.rng.choice(self.images)
                split = self.rng.choice(["train", "val", "test"])
                catalog.update_image(image.id, {"split": split})
                self.changed[image.id] = split

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def drain_until_synced(worker: SyncWorker) -> list[str]:
    """Manual passes (as 'sync --once'): they ignore the backoff and resume after a 401 stop.
    A pass can still stop early (a last slow answer timing out, say): go again."""
    stops: list[str] = []
    for _ in range(20):  # bounded
        reports = drain(worker, max_passes=2000)
        stops += [r.stopped for r in reports if r.stopped]
        if all_synced():
            break
        time.sleep(1.1)
    assert all_synced(), stops
    return stops


def check_exactly_once(emu: UpstreamEmulator, local: list, changed: dict[int, str]) -> None:
    assert not Outbox.select().where(Outbox.state == "pending").exists()
    with emu.lock:
        missing = [i.id for i in local if i.sha256 not in emu.images]
        assert not missing, [
            (
                i.id,
                i.sync_state,
                i.remote_id,
                [
                    (r.kind, r.state, r.attempts, r.last_status, r.last_error)
                    for r in Outbox.select().where(Outbox.image == i.id)
                ],
            )
            for i in Image.select().where(Image.id.in_(missing))
        ]
        assert sorted(emu.images) == sorted(i.sha256 for i in local)
        assert len(emu.by_id) == len(local)
        for image in Image.select():
            stored = emu.images[image.sha256]
            assert image.sync_state == "synced" and image.remote_id == str(stored.image_id)
            assert [a["class_value"] for a in stored.metadata["annotations"]] == ["a"]
            if image.id in changed:
                assert stored.fields.get("split") == changed[image.id], image.id


def failed(entry) -> bool:
    # The emulator acts on drop/slow for uploads only (other routes answer normally and just
    # log the label); a slow upload is a failure to the client (it times out).
    return entry.status not in OK or (
        entry.fault in ("drop", "slow") and entry.path.endswith("/upload")
    )


def backoff_violations(log: list, loop_end: float) -> list[tuple]:
    """Requests sent within the backoff floor of a failed one, in the loop's part of the log
    (the manual drain at the end ignores backoff by design)."""
    looped = [e for e in log if e.start < loop_end]
    return [
        (a.status, a.fault, round(b.start - a.start, 3))
        for a, b in itertools.pairwise(looped)
        if failed(a) and b.start - a.start < BACKOFF_FLOOR * 0.95
    ]


def run_chaos(tmp_path, images: int, seconds: float, seed: int, name: str) -> None:
    rng = random.Random(seed)
    emu = UpstreamEmulator(retry_after=1, slow_seconds=1.5)
    stop = threading.Event()
    counts = {"offline": 0, "switched_on": 0, "switched_off": 0}
    try:
        settings = sync_settings(
            tmp_path,
            emu,
            upstream__api_token=emu.api_token,
            upstream__timeout_seconds=1.0,
            upstream__max_backoff_seconds=2.0,
            upstream__batch_size=5,
            upstream__interval_seconds=0.05,
            upstream__max_attempts=10_000,
        )
        open_db(settings)
        # Noise JPEGs: distinct bytes for every i (conftest's jpeg_bytes repeats after 256).
        local = [
            seed_image(
                settings,
                filename=f"u{i}.jpg",
                data=unique_jpeg(i),
                width=32,
                height=32,
                annotations=(box("a", 0.5, 0.5, 0.1, 0.1),),
            )
            for i in range(images)
        ]
        assert len({i.sha256 for i in local}) == images
        worker = SyncWorker(settings)
        thread = threading.Thread(target=chaos, args=(emu, stop, rng, counts), daemon=True)
        thread.start()
        editor = Editor(local, rng)
        loop_start = time.monotonic()
        run_loop_until(settings, worker, lambda: False, timeout=seconds)
        editor.close()
        stop.set()
        thread.join(timeout=10)
        emu.random_faults(0, (), seed=0)
        emu.go_online()
        stops = drain_until_synced(worker)
        worker.close()
        check_exactly_once(emu, local, editor.changed)
        with emu.lock:
            log = sorted(emu.log, key=lambda e: e.start)
        too_soon = backoff_violations(log, loop_start + seconds)
        faults = sum(1 for e in log if failed(e)) + counts["offline"]
        record(
            name,
            runs=1,
            faults=faults,
            requests=len(log),
            errors=len(too_soon),
            lost=images - len(emu.images),
            images=images,
            seconds=seconds,
            toggles=counts,
            local_edits=len(editor.changed),
            manual_pass_stops=stops,
        )
        assert faults >= 3, counts  # the chaos really happened
        assert not too_soon, too_soon[:10]
    finally:
        stop.set()
        emu.close()
        if not database.is_closed():
            database.close()


def test_flapping_upstream_exactly_once_and_backoff(tmp_path):
    run_chaos(tmp_path, images=40, seconds=8.0, seed=3, name="upstream_chaos_8s")


@pytest.mark.slow
def test_flapping_upstream_long(tmp_path):
    run_chaos(tmp_path, images=300, seconds=90.0, seed=29, name="upstream_chaos_90s")
