"""The sync worker: one pass over the outbox, and what each upstream answer does to the queue
and the shared state. The loop around the passes and the ``serve`` background services live
in ``sync/service.py``.

A pass takes the engine's job lock (``pass_lock``: ``<data_dir>/sync.lock`` on SQLite, a
session advisory lock on PostgreSQL) so that ``serve``'s workers and a separate ``edgecatalog
sync`` never send the same row at once; a killed process drops the lock with it. Every state
change is its own short transaction, committed after the upstream answer: a crash in between
leaves the row pending, and its resend carries the same Idempotency-Key, which upstream
answers as the same upload or as a duplicate, so it is applied exactly once.

Upstream is the cloud or a site gateway (``GET /device/self`` says which): a gateway also
takes changes by device key, with the time they were made, and annotation edits and deletions
as the image's whole set (``mirrors``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..catalog import PATCHABLE  # the image fields a patch_image change may carry
from ..config import ConfigError, Settings
from ..db import write_tx
from ..engines import current as engine
from ..models import Annotation, Image, Outbox, database
from ..timeutil import format_ts, now_us
from . import outbox, selection
from .client import Outcome, UpstreamClient, load_credentials
from .payload import (
    LocalFileProblem,
    annotation_body,
    load_annotations,
    load_images,
    mirror_set,
    upload_request,
)
from .state import backoff_left_us, load_status, save_status
from .throttle import backoff_delay

log = logging.getLogger("edgecatalog.sync")
MARK_EVERY_SECONDS = 1.0  # accepted rows wait at most this long for their commit
GATEWAY_RECHECK_SECONDS = 600.0  # how often GET /device/self is asked what upstream is
ANNOTATION_KINDS = ("create_annotation", "update_annotation", "delete_annotation")


class SyncBusy(Exception):
    """Another process holds the sync lock."""


@contextlib.contextmanager
def pass_lock(settings: Settings, wait: float) -> Iterator[None]:
    """One sync pass at a time among every process on this catalog (``engine.job_lock``: a
    file lock in ``data_dir`` on SQLite, an advisory lock of the pass's own session on
    PostgreSQL, which a process that dies lets go with its session)."""
    with engine().job_lock(database, "sync", settings.data_dir, wait) as got:
        if not got:
            raise SyncBusy("another sync pass is running (serve or edgecatalog sync)")
        yield


@dataclass
class PassReport:
    sent: int = 0
    synced: int = 0
    quarantined: int = 0
    stopped: str = ""  # why the pass ended early: auth_failed, backoff, offline, busy
    skipped: str = ""  # why nothing was tried
    more: bool = False  # a full batch went out: more may be due right away


class _Accepted:
    """Rows upstream accepted, applied in one transaction per group: at the end of a pass,
    before a failure is recorded, or once the oldest has waited MARK_EVERY_SECONDS."""

    def __init__(self, mirror_sets: bool = False) -> None:
        self.items: list[tuple[Outbox, Outcome, dict[int, int]]] = []
        self.since = 0.0
        self.mirror_sets = mirror_sets  # upstream takes whole annotation sets (a gateway)

    def add(self, row: Outbox, outcome: Outcome, sent_annotations: dict[int, int]) -> None:
        if not self.items:
            self.since = time.monotonic()  # a wall-clock jump must not hold rows back
        self.items.append((row, outcome, sent_annotations))
        if time.monotonic() - self.since > MARK_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        outbox.mark_sent(self.items, mirror_sets=self.mirror_sets)
        self.items = []


class SyncWorker:
    def __init__(
        self,
        settings: Settings,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.credentials = load_credentials(settings)
        if not self.credentials.device_key:
            raise ConfigError("upstream.device_key: required to sync (or upstream.device_key_file)")
        self.fingerprint = self.credentials.fingerprint(settings["upstream.base_url"])
        self.client = UpstreamClient(settings, self.credentials)
        self.rng = rng or random.Random()
        self.stopping = threading.Event()
        # What upstream lets this device mirror (a site gateway; () for the cloud), asked of
        # GET /device/self at most every GATEWAY_RECHECK_SECONDS; None until an answer came.
        self.mirrors: tuple[str, ...] | None = None
        self._mirrors_asked = -GATEWAY_RECHECK_SECONDS
        # What goes, in which order, and when; ``clock``: wall time, which tests move.
        self.selector = selection.Selector(settings, clock)

    def close(self) -> None:
        self.client.close()

    # -- one pass --------------------------------------------------------------------------
    def run_pass(self, manual: bool = False, lock_wait: float = 0.0) -> PassReport:
        """Send up to batch_size rows. ``manual`` (``sync --once``) ignores backoff and a
        previous auth failure."""
        try:
            with pass_lock(self.settings, lock_wait), database.connection_context():
                # This connection only records what upstream already holds. A commit lost to a
                # power cut is redone by resending (same Idempotency-Key, or a duplicate), so
                # it need not wait for fsync; the database stays consistent either way.
                engine().relax_durability(database)
                return self._pass(manual)
        except SyncBusy:
            if manual:
                raise
            return PassReport(skipped="busy")

    def _gate(self, manual: bool) -> str:
        status = load_status()
        if manual:
            return ""
        if status.state == "auth_failed" and status.auth_fingerprint == self.fingerprint:
            return "auth_failed"
        if backoff_left_us(status, now_us()) > 0:
            return "backoff"
        return ""

    def _pass(self, manual: bool) -> PassReport:
        report = PassReport(skipped=self._gate(manual))
        if report.skipped:
            return report
        outbox.release_local_only()
        # Upstream is asked what it is once there is something to send (how an upload's
        # acknowledgement is applied depends on it), then again every GATEWAY_RECHECK_SECONDS
        # while changes wait. A gateway takes the device key for changes: no API token.
        unknown = self.mirrors is None and outbox.has_pending()
        gateway = self._gateway() if unknown or outbox.has_changes() else bool(self.mirrors)
        outbox.promote_waiting(bool(self.credentials.api_token) or gateway)
        max_priority, quotas = self.selector.prepare()
        rows = outbox.due_rows(
            self.settings["upstream.order"], self.settings["upstream.batch_size"], max_priority
        )
        if rows:
            save_status(state="syncing")
        accepted = _Accepted("update_annotation" in (self.mirrors or ()))
        if not self._send_rows(rows, accepted, report, quotas):
            return report
        done = {
            "state": "idle",
            "consecutive_failures": 0,
            "next_attempt_at": now_us() + int(self.settings["upstream.interval_seconds"] * 1e6),
        }
        if report.synced:
            done["last_success_at"] = now_us()
        with write_tx():  # the status never shows rows gone but the pass still running
            accepted.flush()
            save_status(**done)
        # A full batch, or an upload that queued its follow-up changes: more is due now.
        report.more = len(rows) == self.settings["upstream.batch_size"] or (
            report.synced > 0 and outbox.has_pending()
        )
        return report

    def reselect(self) -> selection.DecideReport:
        """Decide again every upload not yet sent (``sync --reselect``), under the pass lock."""
        with pass_lock(self.settings, 0.0), database.connection_context():
            outbox.release_local_only()
            return self.selector.reselect()

    def _gateway(self) -> bool:
        """Whether upstream is a site gateway, asked again every GATEWAY_RECHECK_SECONDS. When
        one is found, changes parked as ``unsupported`` that it takes go back in the queue."""
        if time.monotonic() - self._mirrors_asked >= GATEWAY_RECHECK_SECONDS:
            found = self.client.gateway_mirrors()
            if found is not None:  # no answer: asked again next pass
                self._mirrors_asked = time.monotonic()
                if found and found != self.mirrors:
                    log.info("upstream is a site gateway; it takes %s", ", ".join(found))
                    outbox.release_unsupported(found)
                self.mirrors = found
        return bool(self.mirrors)

    def _send_rows(
        self,
        rows: list[Outbox],
        accepted: _Accepted,
        report: PassReport,
        quotas: selection.Quotas,
    ) -> bool:
        """Send each row and apply its answer; False when a failure ended the pass."""
        images = load_images([row.image_id for row in rows])
        annotations = load_annotations([r.image_id for r in rows if r.kind == outbox.UPLOAD])
        for row in rows:
            if self.stopping.is_set():
                break
            if row.kind == outbox.UPLOAD and not quotas.allows(row.rule, row.byte_size):
                # Past a quota: this rule's uploads wait for the next period; others go on.
                quotas.hold(row.rule)
                selection.defer([row.rule])
                continue
            try:
                outcome, sent_annotations = self._send(
                    row, images.get(row.image_id), annotations.get(row.image_id, [])
                )
            except Exception as exc:  # one row's local fault must not stop all
                # Not upstream's answer: the row could not even be prepared here (a file that
                # cannot be read, a stored value this version cannot read back). Left to fail
                # the pass, it would fail every pass and hold back every row behind it.
                log.exception("cannot send %s of image %s", row.kind, row.image_id)
                outcome, sent_annotations = (
                    Outcome("local", None, f"{exc.__class__.__name__}: {exc}"),
                    {},
                )
            report.sent += 1
            if outcome.kind in ("ok", "duplicate"):
                if row.kind == outbox.UPLOAD:
                    quotas.spend(row.rule, row.byte_size)
                accepted.add(row, outcome, sent_annotations)
                report.synced += 1
                continue
            had_success = bool(report.synced)
            accepted.flush()
            if had_success:
                save_status(last_success_at=now_us())
            if not self._failed(row, outcome, report):
                return False
        return True

    def _send(
        self, row: Outbox, image: Image | None, annotations: list[Annotation]
    ) -> tuple[Outcome, dict[int, int]]:
        """The answer, and the annotations an upload carried (id -> updated_at)."""
        if image is None:
            return Outcome("ok", None, "image deleted locally"), {}
        try:
            if row.kind == outbox.UPLOAD:
                request = upload_request(row, image, annotations)
                return self.client.upload(request), {a.id: a.updated_at for a in annotations}
        except LocalFileProblem as exc:
            return Outcome("reject", None, str(exc)), {}
        mirrors = self.mirrors or ()
        if row.kind not in ("patch_image", "create_annotation") and row.kind not in mirrors:
            return Outcome(
                "unsupported", None, f"upstream documents no endpoint for {row.kind}"
            ), {}
        if not image.remote_id:
            return Outcome("reject", None, "upstream did not give this image an id"), {}
        # When the change was made here: the row's time, or the image's last change if that
        # is earlier (the fields an upload could not carry are queued when it is acknowledged).
        edited_at = format_ts(min(row.created_at, image.updated_at))
        if row.kind == "patch_image":
            fields = {k: v for k, v in json.loads(row.payload).items() if k in PATCHABLE}
            if not fields:  # e.g. model_id: kept locally, upstream's PATCH has no such field
                return Outcome("ok", None, "nothing upstream can take"), {}
            if "patch_image" in mirrors:  # a gateway: with the edit's time, by device key
                fields["edited_at"] = edited_at
                return self.client.patch_image(
                    image.remote_id, fields, row.idempotency_key, device=True
                ), {}
            return self.client.patch_image(image.remote_id, fields, row.idempotency_key), {}
        if row.kind in ANNOTATION_KINDS and row.kind in mirrors:
            # A gateway takes the image's whole set as of now: whatever happened to each
            # annotation since, the set sent last is the device's.
            body = {"annotations": mirror_set(image), "edited_at": edited_at}
            return self.client.put_annotations(image.remote_id, body, row.idempotency_key), {}
        body = annotation_body(row, image)
        if body is None:
            return Outcome("ok", None, "annotation deleted locally"), {}
        return self.client.create_annotation(body, row.idempotency_key), {}

    def _failed(self, row: Outbox, outcome: Outcome, report: PassReport) -> bool:
        """Apply a failed answer; True when the pass may go on with the next row."""
        now = now_us()
        error = {
            "last_error_at": now,
            "last_error_status": outcome.status,
            "last_error_message": outcome.message[:2000],
        }
        if outcome.kind == "unsupported":
            # Kept, visibly, for when upstream documents an endpoint; never blocks the queue.
            outbox.set_state(row, "unsupported", outcome.message)
            return True
        if outcome.kind == "local":
            # Counted against the row, so a lasting fault ends in quarantine with its message;
            # it says nothing about the link, so the rows behind it go on.
            if outbox.record_failure(
                row, None, outcome.message, self.settings["upstream.max_attempts"]
            ):
                report.quarantined += 1
            save_status(**error)
            return True
        if outcome.kind == "reject":
            log.warning("quarantined %s of image %s: %s", row.kind, row.image_id, outcome.message)
            outbox.quarantine(row, outcome.status, outcome.message)
            report.quarantined += 1
            save_status(**error)
            return True
        if outcome.kind == "auth":
            log.error(
                "upstream refused the credentials (HTTP %s); sync stops until the "
                "configuration changes or 'edgecatalog sync --once' is run",
                outcome.status,
            )
            save_status(
                state="auth_failed",
                auth_fingerprint=self.fingerprint,
                next_attempt_at=None,
                **error,
            )
            report.stopped = "auth_failed"
            return False
        # Transient. A refused connection says nothing about the row (the link is down), and
        # neither does 429 (the server is busy) or 507 (a site gateway out of room, which
        # asks its devices to keep their queues): only the others count towards quarantine.
        counts = outcome.kind == "transient" and outcome.status not in (429, 507)
        if counts and outbox.record_failure(
            row, outcome.status, outcome.message, self.settings["upstream.max_attempts"]
        ):
            report.quarantined += 1
        failures = load_status().consecutive_failures + 1
        delay = backoff_delay(
            failures, self.settings["upstream.max_backoff_seconds"], outcome.retry_after, self.rng
        )
        state = "offline" if outcome.kind == "offline" else "backoff"
        log.info("sync %s after %s; next attempt in %.1f s", state, outcome.message, delay)
        save_status(
            state=state,
            consecutive_failures=failures,
            next_attempt_at=now + int(delay * 1e6),
            **error,
        )
        report.stopped = state
        return False
