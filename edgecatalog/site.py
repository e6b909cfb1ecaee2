"""The site gateway's side of the device protocol (``[site] enabled``): what a device's sync
worker sends under ``/api``, applied to this catalog. No Flask.

A device speaks to a gateway exactly as to the cloud (the upload, ``GET /device/self``, the
image update, annotation creation), with its own device key, and learns from
``GET /device/self`` (``data.gateway``) that it may also mirror what the cloud has no route
for: its annotation edits and deletions, as the image's whole annotation set
(``mirror_annotations``), and every change with the time it was made on the device, so that
``edit_clock``'s later-edit-wins rule can decide between the device and the gateway's own
reviewers.

Idempotency keys are remembered in the database (``IdempotencyRecord``), per caller, for
``[site] idempotency_hours``: the same key again gets the first answer again, also after a
restart of the gateway; the same key on another route is refused (422).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import edit_clock
from .annotation_edits import insert_row, state_of, top_with_room
from .catalog import (
    DEFAULT_LIMITS,
    AnnotationLimits,
    NewAnnotation,
    annotation_columns,
    queue_change,
)
from .db import write_tx
from .errors import NotFound, NotOwnImage, ValidationError
from .models import Annotation, Device, IdempotencyRecord, Image
from .timeutil import now_us
from .version import __version__

# What a device may mirror beyond the cloud's routes: GET /device/self lists them, and the
# device's worker sends only what it finds here.
MIRRORS = ("patch_image", "create_annotation", "update_annotation", "delete_annotation")
MAX_KEY_CHARS = 255
# POST /api/data/annotations: an annotation in the upload's form, on an image.
ANNOTATION_FIELDS = (
    "image_id",
    "class_value",
    "type",
    "geometry",
    "confidence",
    "source",
    "z_order",
)


def describe(device_id: str, name: str) -> dict[str, Any]:
    """``GET /api/device/self``: the cloud's answer (the device as the site knows it), plus
    ``gateway``, which a cloud never sends."""
    return {
        "device_id": device_id,
        "endpoint_id": device_id,
        "status": "approved",
        "name": name,
        "gateway": {"version": __version__, "mirrors": list(MIRRORS)},
    }


def device_label(device_id: str) -> str:
    row = Device.get_or_none(Device.device_id == device_id)
    return (row.name or row.device_id) if row is not None else device_id


# -- idempotency ---------------------------------------------------------------------------


def check_key(key: str) -> str:
    if len(key) > MAX_KEY_CHARS or any(not (32 < ord(c) < 127) for c in key):
        raise ValidationError(
            "Idempotency-Key",
            f"Idempotency-Key must be at most {MAX_KEY_CHARS} printable ASCII characters",
        )
    return key


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict[str, Any]


def replay(scope: str, key: str, request: str) -> Replay | None:
    """The answer already given to ``key`` by ``scope``, or None. ValidationError (422-class)
    when the key was first used on another route."""
    row = IdempotencyRecord.get_or_none(
        (IdempotencyRecord.scope == scope) & (IdempotencyRecord.key == key)
    )
    if row is None:
        return None
    if row.request != request:
        raise ValidationError(
            "Idempotency-Key",
            f"this Idempotency-Key was first used for {row.request}, not {request}",
        )
    return Replay(row.status, json.loads(row.body))


def remember(scope: str, key: str, request: str, status: int, body: dict[str, Any]) -> None:
    """Keep the answer given to ``key``; a key already kept keeps its first answer."""
    with write_tx():
        IdempotencyRecord.insert(
            scope=scope,
            key=key,
            request=request,
            status=status,
            body=json.dumps(body, separators=(",", ":")),
            created_at=now_us(),
        ).on_conflict_ignore().execute()


PRUNE_EVERY_SECONDS = 600.0
_pruned_at = [-PRUNE_EVERY_SECONDS]  # monotonic time of this process's last pruning


def forget_expired(hours: float) -> int:
    """Drop the answers older than ``hours``, at most once per PRUNE_EVERY_SECONDS per process
    (called after each remembered answer); returns how many went."""
    now = time.monotonic()
    if now - _pruned_at[0] < PRUNE_EVERY_SECONDS:
        return 0
    _pruned_at[0] = now
    return forget_before(now_us() - int(hours * 3600 * 1_000_000))


def forget_before(before_us: int) -> int:
    """Drop the answers kept since before ``before_us``; returns how many."""
    with write_tx():
        return IdempotencyRecord.delete().where(IdempotencyRecord.created_at < before_us).execute()


# -- a device's own images -----------------------------------------------------------------


def owned_image(image_id: int, device_id: str | None) -> Image:
    """The image, which must be ``device_id``'s when a device asks (None: a bearer token)."""
    image = (
        Image.select(Image, Device.device_id.alias("owner"))
        .join(Device, on=(Image.device == Device.id))
        .where(Image.id == image_id)
        .objects()
        .first()
    )
    if image is None:
        raise NotFound(f"image {image_id} does not exist", "id")
    if device_id is not None and image.owner != device_id:
        raise NotOwnImage(
            f"image {image_id} was not captured by device {device_id!r}; a device key "
            "changes only its own device's images",
            "id",
        )
    return image


def _key(columns: dict[str, Any]) -> tuple:
    return tuple(
        columns[k] for k in ("class_value", "type", "geometry", "confidence", "source", "z_order")
    )


@dataclass(frozen=True)
class MirrorResult:
    applied: bool  # False: the gateway's annotations were edited later and stay
    added: int = 0
    removed: int = 0


def mirror_annotations(
    image_id: int,
    device_id: str | None,
    annotations: Sequence[NewAnnotation],
    edited_at: int,
) -> MirrorResult:
    """Make the image's annotations ``annotations`` (the device's whole set, validated as an
    upload's), as of ``edited_at`` on the device. Annotations already here unchanged stay
    (their ids too); the others are deleted or added, each queued upstream like an edit made
    here. Nothing changes when the image's annotations were edited here at or after
    ``edited_at`` (``edit_clock``)."""
    origin = edit_clock.device_origin(device_id) if device_id else edit_clock.LOCAL
    now = now_us()
    with write_tx():
        image = owned_image(image_id, device_id)
        if edit_clock.superseded(image_id, [edit_clock.ANNOTATIONS], edited_at):
            return MirrorResult(False)
        wanted = [annotation_columns(a, image.width, image.height) for a in annotations]
        want = Counter(_key(c) for c in wanted)
        removed = 0
        for row in Annotation.select().where(Annotation.image == image_id).order_by(Annotation.id):
            key = _key(
                {
                    k: getattr(row, k)
                    for k in ("class_value", "type", "geometry", "confidence", "source", "z_order")
                }
            )
            if want[key] > 0:
                want[key] -= 1  # kept as it is
                continue
            previous = state_of(row, image)
            row.delete_instance()
            queue_change(
                image, "delete_annotation", {"annotation_id": row.id, "previous": previous}, now
            )
            removed += 1
        added = 0
        for columns in wanted:
            key = _key(columns)
            if want[key] <= 0:
                continue
            want[key] -= 1
            row = Annotation.create(image=image_id, created_at=now, updated_at=now, **columns)
            queue_change(
                image,
                "create_annotation",
                {"annotation_id": row.id, "annotation": state_of(row, image)},
                now,
            )
            added += 1
        edit_clock.record(image_id, [edit_clock.ANNOTATIONS], edited_at, origin)
        if added or removed:
            Image.update(updated_at=now).where(Image.id == image_id).execute()
    return MirrorResult(True, added, removed)


def add_annotation(
    image_id: int,
    device_id: str | None,
    ann: NewAnnotation,
    max_annotations: int,
    limits: AnnotationLimits = DEFAULT_LIMITS,
) -> int:
    """``POST /api/data/annotations``: one annotation added to the image as sent (a device's
    late inference, or its reviewer's box); returns its id."""
    origin = edit_clock.device_origin(device_id) if device_id else edit_clock.LOCAL
    now = now_us()
    with write_tx():
        image = owned_image(image_id, device_id)
        top_with_room(image_id, max_annotations)
        columns = annotation_columns(ann, image.width, image.height)
        return insert_row(image, columns, limits, now, origin)
