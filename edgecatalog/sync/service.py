"""The sync worker's loop, and the background services ``serve`` runs for sync: the worker
when ``[upstream] enabled``, or the marker that keeps new images ``local_only`` while no
upstream is configured.
"""

from __future__ import annotations

import logging
import threading

from ..config import Settings
from ..models import database
from ..timeutil import now_us
from . import outbox
from .state import backoff_left_us, load_status
from .worker import PassReport, SyncWorker

log = logging.getLogger("edgecatalog.sync")


def _after_pass(settings: Settings, report: PassReport) -> None:
    if report.synced:
        from .. import retention  # synced files just became evictable

        try:
            retention.evict_if_needed(settings)
        except Exception:
            log.exception("eviction after a sync pass failed")


def next_wait(settings: Settings, worker: SyncWorker, report: PassReport) -> float:
    """Seconds until the next pass: none after a full batch, the backoff after a failure."""
    if report.more and not report.stopped and not report.skipped:
        return 0.0
    interval = settings["upstream.interval_seconds"]
    if report.stopped in ("offline", "backoff") or report.skipped == "backoff":
        with database.connection_context():
            left = backoff_left_us(load_status(), now_us())
        return max(0.01, min(left / 1e6, settings["upstream.max_backoff_seconds"] + 3600))
    return interval


def run_forever(settings: Settings, worker: SyncWorker, stop: threading.Event) -> None:
    """Passes until ``stop`` is set; an unexpected error is logged and the loop goes on."""
    while not stop.is_set():
        try:
            report = worker.run_pass()
            _after_pass(settings, report)
            wait = next_wait(settings, worker, report)
        except Exception:
            log.exception("sync pass failed")
            wait = settings["upstream.interval_seconds"]
        stop.wait(wait)


class SyncService:
    """The worker on its own thread inside ``serve``."""

    name = "sync"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker = SyncWorker(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=run_forever,
            name="edgecatalog-sync",
            args=(self.settings, self.worker, self._stop),
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self.worker.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.worker.close()


class LocalOnlyMarker:
    """No upstream configured: images waiting in the queue are shown as ``local_only``."""

    name = "sync-local-only"

    def __init__(self, settings: Settings) -> None:
        self.interval = settings["upstream.interval_seconds"]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with database.connection_context():
                    outbox.mark_local_only()
            except Exception:
                log.exception("marking local_only images failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="edgecatalog-local-only", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def build_sync_services(settings: Settings) -> list:
    if settings["upstream.enabled"]:
        return [SyncService(settings)]
    if not settings["upstream.base_url"]:
        return [LocalOnlyMarker(settings)]
    return []
