"""Helpers shared by the sync and retention tests: settings pointing at the emulator, a
migrated database, and ways to run the real worker (one pass, a drain, or its loop)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import make_settings
from upstream_emulator import UpstreamEmulator

from edgecatalog import db
from edgecatalog.catalog import NewAnnotation
from edgecatalog.config import Settings
from edgecatalog.models import Image, Outbox, database
from edgecatalog.sync.service import run_forever
from edgecatalog.sync.worker import PassReport, SyncWorker


def sync_settings(tmp_path: Path, emulator: UpstreamEmulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "upstream__base_url": emulator.base_url,
        "upstream__device_key": emulator.device_key,
        "upstream__max_backoff_seconds": 1.0,
        "upstream__timeout_seconds": 2.0,
        "upstream__interval_seconds": 0.2,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


def open_db(settings: Settings) -> None:
    db.open_for(settings)
    db.migrate()


def drain(worker: SyncWorker, max_passes: int = 100) -> list[PassReport]:
    """Manual passes (as ``sync --once``) until nothing more is due or one is stopped."""
    reports = []
    for _ in range(max_passes):
        report = worker.run_pass(manual=True)
        reports.append(report)
        if report.stopped or not report.more:
            break
    return reports


def run_loop_until(
    settings: Settings, worker: SyncWorker, done: Callable[[], bool], timeout: float
) -> float:
    """Run the worker's real loop on a thread until ``done()`` or ``timeout``; seconds taken."""
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(settings, worker, stop), daemon=True)
    start = time.monotonic()
    thread.start()
    try:
        while time.monotonic() - start < timeout:
            with database.connection_context():
                if done():
                    break
            time.sleep(0.05)
    finally:
        stop.set()
        worker.stopping.set()
        thread.join(timeout=10)
        worker.stopping.clear()  # the worker can be used again by the test
    assert not thread.is_alive()
    return time.monotonic() - start


def all_synced() -> bool:
    return (
        not Outbox.select().where(Outbox.state == "pending").exists()
        and not Image.select().where(Image.sync_state == "pending").exists()
    )


def box(cls: str, xc: float, yc: float, w: float, h: float, conf: float = 0.9) -> NewAnnotation:
    return NewAnnotation(class_value=cls, type="bbox", geometry=(xc, yc, w, h), confidence=conf)


def polygon(cls: str, *points: float) -> NewAnnotation:
    return NewAnnotation(class_value=cls, type="polygon", geometry=points)
