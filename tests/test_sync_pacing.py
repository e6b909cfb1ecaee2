"""How often and how fast the worker talks to upstream: auth failures stop it, Retry-After
and the backoff space its requests, and the bandwidth cap holds over every 10 s window.
Timings are measured at the emulator, not taken from the worker."""

from __future__ import annotations

import itertools
import time

import pytest
from conftest import jpeg_bytes, seed_image
from sync_helpers import all_synced, open_db, run_loop_until, sync_settings
from upstream_emulator import UpstreamEmulator

from edgecatalog.models import Image, SyncStatus
from edgecatalog.sync.service import next_wait
from edgecatalog.sync.state import load_status, save_status
from edgecatalog.sync.throttle import BandwidthLimiter, backoff_delay, parse_retry_after
from edgecatalog.sync.worker import PassReport, SyncWorker


def _uploads(emulator):
    return [e for e in emulator.log if e.path.endswith("/upload")]


def test_401_stops_sending_until_the_key_changes_or_a_manual_run(tmp_path, emulator):
    wrong = sync_settings(tmp_path, emulator, upstream__device_key="adk_wrong")
    open_db(wrong)
    images = [seed_image(wrong, filename=f"a{i}.jpg", seed=i) for i in range(3)]
    worker = SyncWorker(wrong)
    run_loop_until(wrong, worker, lambda: False, timeout=1.5)  # ~7 intervals of 0.2 s
    assert len(_uploads(emulator)) == 1 and _uploads(emulator)[0].status == 401
    status = load_status()
    assert status.state == "auth_failed" and status.last_error_status == 401
    assert worker.run_pass().skipped == "auth_failed"
    assert worker.run_pass(manual=True).stopped == "auth_failed"  # by hand: tried once more
    assert len(_uploads(emulator)) == 2
    worker.close()
    fixed = sync_settings(tmp_path, emulator)  # a changed key is tried without a manual run
    worker = SyncWorker(fixed)
    run_loop_until(fixed, worker, all_synced, timeout=10)
    assert all(Image.get_by_id(i.id).sync_state == "synced" for i in images)
    assert len(emulator.images) == 3
    worker.close()


def test_429_retry_after_is_honoured(tmp_path):
    emu = UpstreamEmulator(retry_after=2)
    try:
        settings = sync_settings(tmp_path, emu)  # max_backoff 1 s: only Retry-After says 2
        open_db(settings)
        seed_image(settings, seed=1)
        emu.queue_faults("429")
        worker = SyncWorker(settings)
        run_loop_until(settings, worker, all_synced, timeout=10)
        sends = _uploads(emu)
        assert [e.status for e in sends] == [429, 201]
        assert sends[1].start - sends[0].end >= 2.0
        worker.close()
    finally:
        emu.close()


def test_backoff_never_sends_more_than_one_request_per_interval(tmp_path, emulator):
    settings = sync_settings(
        tmp_path, emulator, upstream__max_backoff_seconds=2.0, upstream__max_attempts=100
    )
    open_db(settings)
    seed_image(settings, seed=1)
    seed_image(settings, seed=2)
    emulator.random_faults(1.0, ("500",), seed=7)
    worker = SyncWorker(settings)
    run_loop_until(settings, worker, lambda: False, timeout=5.0)
    sends = _uploads(emulator)
    gaps = [b.start - a.end for a, b in itertools.pairwise(sends)]
    assert 2 <= len(sends) <= 6
    assert all(gap >= 0.95 for gap in gaps), gaps  # the backoff floor is one second
    assert load_status().state == "backoff"
    worker.close()


def test_a_backoff_recorded_before_the_clock_was_set_back_does_not_stall_the_sync(
    tmp_path, emulator
):
    """A device that booted with its clock an hour fast backs off, then NTP sets the clock
    back: the deadline on the old clock would hold the sync for the hour. A backoff recorded
    at the right time still holds."""
    settings = sync_settings(tmp_path, emulator)
    open_db(settings)
    seed_image(settings, seed=1)
    worker = SyncWorker(settings)
    hour = 3_600_000_000
    now = int(time.time() * 1e6)
    save_status(state="backoff", consecutive_failures=3, next_attempt_at=now + 30_000_000)
    assert worker.run_pass().skipped == "backoff"  # the clock did not move: it holds
    assert next_wait(settings, worker, PassReport(skipped="backoff")) > 25
    assert not emulator.log
    # The same backoff, written when the clock read an hour later than it does now.
    SyncStatus.update(updated_at=now + hour, next_attempt_at=now + hour + 1_000_000).execute()
    assert next_wait(settings, worker, PassReport(skipped="backoff")) == pytest.approx(0.01)
    report = worker.run_pass()
    assert not report.skipped and report.synced == 1
    assert [e.status for e in _uploads(emulator)] == [201]
    worker.close()


def test_bandwidth_cap_holds_over_every_10s_window(tmp_path, emulator):
    rate = 20_000
    settings = sync_settings(
        tmp_path, emulator, upstream__max_bytes_per_second=rate, upstream__batch_size=100
    )
    open_db(settings)
    for i in range(6):  # ~6 x 45 KB: more than one window's budget of 200 KB
        seed_image(settings, seed=i, data=jpeg_bytes(seed=i) + bytes(45_000))
    worker = SyncWorker(settings)
    taken = run_loop_until(settings, worker, all_synced, timeout=20)
    sends = [e for e in _uploads(emulator) if e.status == 201]
    total = sum(e.body_bytes for e in sends)
    assert len(sends) == 6 and total > 10 * rate
    # Whatever passes the window's budget has to wait for older bytes to leave the window.
    assert taken >= (total - 10 * rate) / rate - 0.5
    chunk = BandwidthLimiter(rate).chunk_size
    arrivals = emulator.received
    # Measured at the receiver, where reads lag the sender by a varying delay: a window 1 s
    # shorter than 10 s absorbs up to 1 s of that variation (plus one chunk in flight).
    for t, _ in arrivals:
        in_window = sum(n for u, n in arrivals if t - 9 < u <= t)
        assert in_window <= 10 * rate + chunk, (t, in_window)
    worker.close()


def test_backoff_delays_grow_with_full_jitter_and_respect_the_cap():
    import random

    rng = random.Random(1)
    for failures in range(1, 12):
        ceiling = min(300.0, 2 ** (failures - 1))
        delays = [backoff_delay(failures, 300.0, rng=rng) for _ in range(200)]
        assert all(min(1.0, ceiling) <= d <= ceiling for d in delays)
        if ceiling >= 8:
            assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed
    assert backoff_delay(1, 300.0, retry_after=42.0, rng=rng) == 42.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


def test_limiter_sleeps_exactly_until_the_window_allows():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limiter = BandwidthLimiter(100, clock=lambda: now[0], sleep=sleep)  # 1000 B per 10 s
    for _ in range(10):
        limiter.acquire(100)
    assert slept == []
    limiter.acquire(100)
    assert now[0] == pytest.approx(10.0)
