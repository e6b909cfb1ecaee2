"""The outbox as a queue: which rows leave next, and every state change of a row and of its
image, each in its own short IMMEDIATE transaction.

Row states: ``pending`` (will be sent), ``waiting_token`` (a change to a synced image while no
``[upstream] api_token`` is configured), ``quarantined`` (rejected upstream, or out of
attempts; kept with the upstream message until ``sync --retry-quarantined``), ``unsupported``
(a change upstream documents no endpoint for: annotation updates and deletions, until a site
gateway that takes them is found upstream: ``release_unsupported``), ``skipped`` (an upload
the selection rules do not send) and ``deferred`` (an upload past its rule's quota, until the
next period): both in ``sync/selection.py``. A row that
reached upstream is deleted: the image row keeps the result (``sync_state``, remote ids).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from peewee import fn

from ..db import write_tx
from ..models import Annotation, Image, Outbox
from ..timeutil import now_us
from . import usage
from .client import Outcome
from .payload import annotation_to_upload, fields_after_upload

UPLOAD = "upload"


def mark_local_only() -> int:
    """No upstream is configured (no base_url): pending images become ``local_only``."""
    return _move_sync_state("pending", "local_only")


def release_local_only() -> int:
    """An upstream is configured again: ``local_only`` images become pending."""
    return _move_sync_state("local_only", "pending")


def _move_sync_state(src: str, dst: str) -> int:
    with write_tx():
        return Image.update(sync_state=dst).where(Image.sync_state == src).execute()


def promote_waiting(has_token: bool) -> None:
    """Changes wait for an API token; they become sendable as soon as one is configured."""
    with write_tx():
        if has_token:
            Outbox.update(state="pending").where(Outbox.state == "waiting_token").execute()
        else:
            Outbox.update(state="waiting_token").where(
                (Outbox.state == "pending") & (Outbox.kind != UPLOAD)
            ).execute()


def release_unsupported(kinds: Sequence[str]) -> int:
    """Upstream now takes ``kinds`` (a site gateway): rows parked as ``unsupported`` go back
    in the queue, oldest first as they were made."""
    with write_tx():
        return (
            Outbox.update(state="pending", updated_at=now_us())
            .where((Outbox.state == "unsupported") & Outbox.kind.in_(list(kinds)))
            .execute()
        )


def due_rows(order: str, limit: int, max_priority: int | None = None) -> list[Outbox]:
    """The next rows to send, as the selection rules decided them (``sync/selection.py``):
    priority 1 first; within a priority, oldest first, or with ``order = "newest"`` uploads
    newest first after the changes, which always go oldest first (their order matters).
    ``max_priority``: outside the sync windows, only rows of priority 1 to this go."""
    due = Outbox.select().where((Outbox.state == "pending") & (Outbox.priority >= 1))
    if max_priority is not None:
        due = due.where(Outbox.priority <= max_priority)
    if order == "oldest":
        return list(due.order_by(Outbox.priority, Outbox.id).limit(limit))
    changes = due.where(Outbox.kind != UPLOAD).order_by(Outbox.priority, Outbox.id).limit(limit)
    uploads = due.where(Outbox.kind == UPLOAD).order_by(Outbox.priority, Outbox.id.desc())
    rows = sorted([*changes, *uploads.limit(limit)], key=lambda row: row.priority)  # stable
    return rows[:limit]


CHANGE_KINDS = ("patch_image", "create_annotation", "update_annotation", "delete_annotation")


def has_changes() -> bool:
    """A change to an image upstream holds waits to be sent, or is parked (``outbox_kind``
    index: one seek, however many uploads are queued)."""
    return (
        Outbox.select(Outbox.id)
        .where(
            Outbox.kind.in_(CHANGE_KINDS)
            & Outbox.state.in_(["pending", "waiting_token", "unsupported"])
        )
        .exists()
    )


def has_pending() -> bool:
    return Outbox.select().where(Outbox.state == "pending").exists()


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def mark_sent(
    items: Sequence[tuple[Outbox, Outcome, Mapping[int, int]]], *, mirror_sets: bool = False
) -> None:
    """Rows upstream accepted, applied in one transaction: a few rows per commit cost little
    to redo (a resend is answered as the same upload or a duplicate) and save a commit each.
    Statements are per group, not per row, where they can be. An upload's item carries the
    annotations it sent (id -> updated_at); ``mirror_sets``: upstream takes an image's whole
    annotation set (a site gateway)."""
    if not items:
        return
    now = now_us()
    with write_tx():
        Outbox.delete().where(Outbox.id.in_([row.id for row, _, _ in items])).execute()
        uploads = [item for item in items if item[0].kind == UPLOAD]
        if not uploads:
            return
        ids = [row.image_id for row, _, _ in uploads]
        images = {
            img.id: img
            for img in Image.select(
                Image.id,
                Image.width,
                Image.height,
                Image.annotation_status,
                Image.split,
                Image.split_locked,
                Image.updated_at,
            ).where(Image.id.in_(ids))
        }
        current: dict[int, dict[int, int]] = {}
        for image_id, ann_id, updated_at in (
            Annotation.select(Annotation.image, Annotation.id, Annotation.updated_at)
            .where(Annotation.image.in_(ids))
            .tuples()
        ):
            current.setdefault(image_id, {})[ann_id] = updated_at
        usage.record_sent(
            (row.rule, row.byte_size) for row, _, _ in uploads if row.image_id in images
        )
        for row, outcome, sent in uploads:
            image = images.get(row.image_id)
            if image is not None:
                _apply_upload(
                    row, image, outcome, sent, current.get(image.id, {}), now, mirror_sets
                )


def _apply_upload(
    row: Outbox,
    image: Image,
    outcome: Outcome,
    sent: Mapping[int, int],
    current: Mapping[int, int],
    now: int,
    mirror_sets: bool,
) -> None:
    """The image is upstream: store its ids, and queue what the upload could not carry
    (fields set locally, annotations changed while it was in flight: added ones to the cloud,
    any change as the whole set to a gateway)."""
    changes = {"sync_state": "synced", "synced_at": now}
    # Not the cloud's storage key: nothing here reads it, and remote_id names the image there.
    for local, remote in (("remote_id", "image_id"), ("remote_batch_id", "batch_id")):
        if outcome.data.get(remote):
            changes[local] = outcome.data[remote]
    Image.update(**changes).where(Image.id == image.id).execute()
    # Keys derive from the upload's key, so replaying this transaction adds nothing twice.
    fields = fields_after_upload(image)
    if fields:
        Outbox.insert(
            image=image.id,
            kind="patch_image",
            payload=json.dumps(fields),
            idempotency_key=_key("after-upload", row.idempotency_key),
            created_at=now,
            updated_at=now,
        ).on_conflict_ignore().execute()
    late = sorted(set(current) - set(sent))
    if mirror_sets:
        # Added, edited or deleted since this upload was built; or changed at all since the
        # image was queued: the gateway may hold an earlier attempt's body (a lost answer,
        # then a duplicate or a replayed answer), so the set is sent to make sure.
        if current != dict(sent) or image.updated_at > row.created_at:
            Outbox.insert(
                image=image.id,
                kind="update_annotation",
                payload=json.dumps({"set": True}),
                idempotency_key=_key("after-upload-set", row.idempotency_key),
                created_at=now,
                updated_at=now,
            ).on_conflict_ignore().execute()
        return
    for ann in Annotation.select().where(Annotation.id.in_(late)) if late else ():
        body = dict(annotation_to_upload(ann, image.width, image.height), annotation_id=ann.id)
        Outbox.insert(
            image=image.id,
            kind="create_annotation",
            payload=json.dumps(body),
            idempotency_key=_key("late-annotation", row.idempotency_key, str(ann.id)),
            created_at=now,
            updated_at=now,
        ).on_conflict_ignore().execute()


def quarantine(row: Outbox, status: int | None, message: str) -> None:
    now = now_us()
    with write_tx():
        Outbox.update(
            state="quarantined", last_status=status, last_error=message[:2000], updated_at=now
        ).where(Outbox.id == row.id).execute()
        if row.kind == UPLOAD:
            Image.update(sync_state="quarantined").where(Image.id == row.image_id).execute()


def set_state(row: Outbox, state: str, message: str) -> None:
    with write_tx():
        Outbox.update(state=state, last_error=message[:2000], updated_at=now_us()).where(
            Outbox.id == row.id
        ).execute()


def record_failure(row: Outbox, status: int | None, message: str, max_attempts: int) -> bool:
    """Count one transient failure of the row; quarantine it at ``max_attempts``."""
    attempts = row.attempts + 1
    if attempts >= max_attempts:
        quarantine(row, status, f"gave up after {attempts} attempts: {message}")
        return True
    with write_tx():
        Outbox.update(
            attempts=attempts, last_status=status, last_error=message[:2000], updated_at=now_us()
        ).where(Outbox.id == row.id).execute()
    return False


def retry_quarantined() -> int:
    """Put every quarantined row back in the queue with fresh attempts; returns how many."""
    with write_tx():
        count = (
            Outbox.update(state="pending", attempts=0, updated_at=now_us())
            .where(Outbox.state == "quarantined")
            .execute()
        )
        uploads = Outbox.select(Outbox.image).where(
            (Outbox.kind == UPLOAD) & (Outbox.state == "pending")
        )
        Image.update(sync_state="pending").where(
            (Image.sync_state == "quarantined") & Image.id.in_(uploads)
        ).execute()
    return count


@dataclass(frozen=True)
class QueueCounts:
    pending: int
    pending_bytes: int
    oldest_pending_at: int | None
    waiting_token: int
    quarantined: int
    unsupported: int
    skipped: int = 0
    deferred: int = 0
    deferred_bytes: int = 0
    # priority -> (count, bytes) of pending rows; 0: changes, -1: not yet decided
    by_priority: dict[int, tuple[int, int]] = field(default_factory=dict)


def queue_counts() -> QueueCounts:
    rows = (
        Outbox.select(
            Outbox.state,
            Outbox.priority,
            fn.COUNT(Outbox.id),
            fn.SUM(Outbox.byte_size),
            fn.MIN(Outbox.created_at),
        )
        .group_by(Outbox.state, Outbox.priority)
        .tuples()
    )
    by_state: dict[str, list] = {}
    by_priority: dict[int, tuple[int, int]] = {}
    for state, priority, count, size, oldest in rows:
        tally = by_state.setdefault(state, [0, 0, None])
        tally[0] += count
        tally[1] += int(size or 0)
        tally[2] = oldest if tally[2] is None else min(tally[2], oldest)
        if state == "pending":
            by_priority[priority] = (count, int(size or 0))
    none = [0, 0, None]
    pending = by_state.get("pending", none)
    return QueueCounts(
        pending[0],
        pending[1],
        pending[2],
        by_state.get("waiting_token", none)[0],
        by_state.get("quarantined", none)[0],
        by_state.get("unsupported", none)[0],
        by_state.get("skipped", none)[0],
        by_state.get("deferred", none)[0],
        by_state.get("deferred", none)[1],
        dict(sorted(by_priority.items())),
    )
