"""What ``edgecatalog sync`` and ``edgecatalog status`` do, apart from reading argv.

``sync`` runs the worker loop until SIGTERM/SIGINT; ``sync --once`` drains the queue by hand
(passes until nothing is due or a failure stops it; backoff and a previous auth failure are
ignored) and exits 1 when upstream could not take everything; ``--retry-quarantined`` first
puts quarantined items back in the queue (alone, it does only that); ``--reselect`` decides
again, by the current ``[upstream] select`` rules, every upload not yet sent (alone, likewise).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import TextIO

from .. import db
from ..config import ConfigError, Settings
from ..models import database
from .client import load_credentials
from .outbox import queue_counts, retry_quarantined
from .service import _after_pass, run_forever
from .state import format_report, status_report
from .worker import SyncBusy, SyncWorker

MAX_ONCE_PASSES = 100_000  # a bound on --once, far above any real queue / batch_size


class SyncCommandError(Exception):
    """The sync command cannot run with this configuration or state; one line for stderr."""


def _open(settings: Settings) -> None:
    db.open_for(settings)
    db.migrate()


def run_sync(
    settings: Settings, once: bool, retry: bool, reselect: bool = False, out: TextIO = sys.stdout
) -> int:
    _open(settings)
    if retry:
        with database.connection_context():
            print(f"requeued {retry_quarantined()} quarantined item(s)", file=out)
        if not once and not reselect:
            return 0
    if not settings["upstream.base_url"]:
        raise SyncCommandError("upstream.base_url is not set: there is nowhere to sync to")
    worker = SyncWorker(settings)
    try:
        if reselect:
            try:
                decided = worker.reselect()
            except SyncBusy as exc:
                raise SyncCommandError(str(exc)) from None
            print(f"reselected: {decided.selected} to send, {decided.skipped} skipped", file=out)
            if not once:
                return 0
        return _drain(settings, worker, out) if once else _loop(settings, worker)
    finally:
        worker.close()


def _drain(settings: Settings, worker: SyncWorker, out: TextIO) -> int:
    synced = quarantined = 0
    stopped = ""
    for _ in range(MAX_ONCE_PASSES):
        try:
            report = worker.run_pass(
                manual=True, lock_wait=settings["upstream.timeout_seconds"] * 2 + 10
            )
        except SyncBusy as exc:
            raise SyncCommandError(str(exc)) from None
        _after_pass(settings, report)
        synced, quarantined = synced + report.synced, quarantined + report.quarantined
        stopped = report.stopped
        if stopped or not report.more:
            break
    with database.connection_context():
        left = queue_counts().pending
    line = f"synced {synced}, quarantined {quarantined}, {left} pending"
    if stopped:
        print(f"edgecatalog: sync stopped ({stopped}): {line}", file=sys.stderr)
        return 1
    print(line, file=out)
    return 0


def _loop(settings: Settings, worker: SyncWorker) -> int:
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()
        worker.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_forever(settings, worker, stop)
    return 0


def print_status(settings: Settings, as_json: bool, out: TextIO = sys.stdout) -> int:
    _open(settings)
    try:
        fingerprint = load_credentials(settings).fingerprint(settings["upstream.base_url"])
    except ConfigError:
        fingerprint = None
    with database.connection_context():
        report = status_report(settings, fingerprint)
    print(json.dumps(report, indent=2) if as_json else format_report(report), file=out)
    return 0
