"""Writes to the catalog: devices, the collecting batch, new images with their annotations
and outbox row, and image updates. No Flask; every write is one short IMMEDIATE transaction.

Geometry arrives normalized (0..1) as upstream's upload metadata carries it and is stored both
ways the contract shows it: ``x_center, y_center, width, height`` normalized, and ``geometry``
as integer pixels (``[x_min, y_min, x_max, y_max]`` for a bbox, the flat point list for a
polygon).

The annotation rules every path shares live here: ``validate_annotation`` (one annotation,
including its bounded integers and the polygon vertex cap) and the stored-size measure of
``[ingest] max_annotation_bytes`` (``stored_bytes``, exact, and ``stored_size_bound``, for
code that does not know the image's size yet). The caps a configuration sets travel as one
``AnnotationLimits``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import params
from .config import defaults as setting_defaults
from .db import write_tx
from .errors import Conflict, NotFound, ValidationError
from .models import (
    ANNOTATION_STATUSES,
    ANNOTATION_TYPES,
    SPLITS,
    Batch,
    Device,
    FileRoot,
    Image,
    Outbox,
    database,
)
from .timeutil import format_ts, now_us


@dataclass(frozen=True)
class BatchPolicy:
    max_images: int = 1000
    window_us: int = 30 * 60 * 1_000_000

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> BatchPolicy:
        """``[batches] max_images`` and ``window_minutes`` of a configuration."""
        return cls(max_images=int(settings["batches.max_images"]),
                   window_us=round(float(settings["batches.window_minutes"]) * 60_000_000))


@dataclass(frozen=True)
class NewAnnotation:
    class_value: str
    type: str
    geometry: Sequence[float]  # normalized, see module docstring
    confidence: float | None = None
    z_order: int = 0
    source: str = "model"


@dataclass(frozen=True)
class NewImage:
    filename: str
    storage_key: str
    sha256: str
    byte_size: int
    width: int
    height: int
    root: str  # absolute folder the file lives under
    path: str  # relative to root
    device_id: str
    captured_at: int | None = None
    model_id: str = ""
    model_version: str = ""
    source: str = ""
    annotations: Sequence[NewAnnotation] = field(default_factory=tuple)


_DEFAULTS = setting_defaults()
MAX_CLASS_CHARS = 256
MAX_SOURCE_CHARS = 64
# z_order is a stacking position: +-(2**31 - 1) is far more room than any drawing needs, fits
# every integer column upstream may use, and keeps 2**64 (a 500 from SQLite) out. One range
# for uploads, sidecars and manual edits.
MAX_Z = 2**31 - 1
# Stored pixel coordinates are at most 65535 (the largest side ``ingest.store`` accepts):
# 5 digits. What a geometry can take as stored JSON follows from its length alone.
COORDINATE_DIGITS = 5


@dataclass(frozen=True)
class AnnotationLimits:
    """The ``[ingest]`` size caps an annotation meets on every path into the catalog.

    One small object rather than settings: the validators are plain functions used by code
    without a configuration (a probe worker, a test), so each path passes what it was
    configured with, and the defaults are the settings' own defaults.
    """

    max_polygon_points: int = _DEFAULTS["ingest.max_polygon_points"]
    max_annotation_bytes: int = _DEFAULTS["ingest.max_annotation_bytes"]

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AnnotationLimits:
        return cls(max_polygon_points=int(settings["ingest.max_polygon_points"]),
                   max_annotation_bytes=int(settings["ingest.max_annotation_bytes"]))


DEFAULT_LIMITS = AnnotationLimits()


def check_z_order(value: Any, param: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(param, "z_order must be an integer")
    if not -MAX_Z <= value <= MAX_Z:
        raise ValidationError(param, f"z_order must be between -{MAX_Z} and {MAX_Z}")


def validate_annotation(ann: NewAnnotation, where: str = "annotations",
                        limits: AnnotationLimits = DEFAULT_LIMITS) -> None:
    if not isinstance(ann.class_value, str) or not ann.class_value.strip():
        raise ValidationError(f"{where}.class_value", "class_value must be a non-empty string")
    if len(ann.class_value) > MAX_CLASS_CHARS:
        raise ValidationError(f"{where}.class_value",
                              f"class_value must be at most {MAX_CLASS_CHARS} characters")
    if params.unsafe_text(ann.class_value):
        raise ValidationError(f"{where}.class_value", "class_value must not contain control "
                                                      "characters or unpaired surrogates")
    if ann.type not in ANNOTATION_TYPES:
        raise ValidationError(f"{where}.type", f"type must be one of {', '.join(ANNOTATION_TYPES)}")
    geom = ann.geometry
    if not isinstance(geom, (list, tuple)):
        raise ValidationError(f"{where}.geometry", "geometry must be a list of numbers")
    # The length is checked before any value is looked at: a million-point polygon is refused
    # by its length, not after a million checks.
    if ann.type == "polygon" and len(geom) > 2 * limits.max_polygon_points:
        raise ValidationError(f"{where}.geometry",
                              f"a polygon may have at most {limits.max_polygon_points} points "
                              f"([ingest] max_polygon_points), got {len(geom) // 2}")
    if ann.type == "bbox" and len(geom) != 4:
        raise ValidationError(f"{where}.geometry",
                              "a bbox geometry is [x_center, y_center, width, height]")
    if ann.type == "polygon" and (len(geom) < 6 or len(geom) % 2):
        raise ValidationError(f"{where}.geometry",
                              "a polygon geometry is [x1, y1, x2, y2, ...] with 3 or more points")
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in geom
    ):
        raise ValidationError(f"{where}.geometry", "geometry must be a list of numbers")
    if any(v < 0 or v > 1 for v in geom):
        raise ValidationError(f"{where}.geometry", "geometry values must be normalized to 0..1")
    # NaN fails both comparisons, so ``not 0 <= c <= 1`` refuses it with the infinities.
    if ann.confidence is not None and (
        isinstance(ann.confidence, bool) or not isinstance(ann.confidence, (int, float))
        or not 0 <= ann.confidence <= 1
    ):
        raise ValidationError(f"{where}.confidence", "confidence must be a number in 0..1")
    check_z_order(ann.z_order, f"{where}.z_order")
    if not isinstance(ann.source, str) or len(ann.source) > MAX_SOURCE_CHARS \
            or params.unsafe_text(ann.source):
        raise ValidationError(f"{where}.source", f"source must be a string of at most "
                                                 f"{MAX_SOURCE_CHARS} printable characters")


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def stored_bytes(class_value: str, geometry: str, source: str) -> int:
    """What one stored annotation counts against ``[ingest] max_annotation_bytes``: the UTF-8
    bytes of its geometry JSON and its class_value and source text, the columns whose size a
    sender controls (the other columns are fixed-width numbers)."""
    return len(geometry) + _utf8_len(class_value) + _utf8_len(source)


def stored_size_bound(ann: NewAnnotation) -> int:
    """``stored_bytes`` of a valid ``ann`` in an image of any size, or more: each coordinate
    counted at its widest (``COORDINATE_DIGITS`` and a comma), so a check against it needs no
    serializing and holds before the image's width and height are known."""
    return (len(ann.geometry) * (COORDINATE_DIGITS + 1) + 1 + _utf8_len(ann.class_value)
            + _utf8_len(ann.source))


def too_many_bytes(limits: AnnotationLimits, taken: str) -> str:
    """The message of the ValidationError for annotations over the byte cap; ``taken`` says
    how much they take."""
    return (f"the annotations of one image may take at most {limits.max_annotation_bytes} bytes "
            f"as stored ([ingest] max_annotation_bytes: geometry JSON, class_value and source); "
            f"{taken}")


def annotation_columns(ann: NewAnnotation, width: int, height: int) -> dict[str, Any]:
    """The stored columns of one annotation, for an image of width x height pixels."""
    g = [float(v) for v in ann.geometry]
    if ann.type == "bbox":
        xc, yc, w, h = g
        box = [xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2]
        clamped = [min(max(v, 0.0), 1.0) for v in box]
        pixels = [round(clamped[0] * width), round(clamped[1] * height),
                  round(clamped[2] * width), round(clamped[3] * height)]
    else:
        xs, ys = g[0::2], g[1::2]
        xc, yc = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
        w, h = max(xs) - min(xs), max(ys) - min(ys)
        pixels = [round(v * (width if i % 2 == 0 else height)) for i, v in enumerate(g)]
    return {
        "class_value": ann.class_value.strip(),
        "type": ann.type,
        "geometry": json.dumps(pixels, separators=(",", ":")),
        "x_center": xc, "y_center": yc, "width": w, "height": h,
        "confidence": None if ann.confidence is None else float(ann.confidence),
        "source": ann.source,
        "z_order": ann.z_order,
    }


def ensure_device(device_id: str, now: int) -> Device:
    # Plain SQL for the common case (the device exists): this runs for every image ingested,
    # and building the ORM query costs more than SQLite answering it.
    row = database.execute_sql("SELECT id FROM device WHERE device_id = ?", (device_id,)).fetchone()
    if row is not None:
        return Device(id=row[0], device_id=device_id)
    return Device.create(device_id=device_id, name=device_id, created_at=now)


def collecting_batch(device: Device, now: int, policy: BatchPolicy) -> Batch:
    """The device's open batch, closing it first when it is full or its window has passed."""
    batch = (Batch.select().where((Batch.device == device) & (Batch.stage == "collecting"))
             .order_by(Batch.id.desc()).first())
    # A clock set back (now < opened_at) keeps the batch open rather than closing it early.
    if batch is not None and (
        batch.image_count >= policy.max_images or now - batch.opened_at >= policy.window_us
    ):
        batch.stage, batch.closed_at, batch.updated_at = "complete", now, now
        batch.save()
        batch = None
    if batch is None:
        batch = Batch.create(name=f"{device.device_id} {format_ts(now)}", device=device,
                             stage="collecting", image_count=0, opened_at=now,
                             created_at=now, updated_at=now)
    return batch


def file_root(path: str) -> FileRoot:
    row = database.execute_sql("SELECT id FROM file_root WHERE path = ?", (path,)).fetchone()
    if row is not None:  # the common case, in plain SQL as in ensure_device
        return FileRoot(id=row[0], path=path)
    root, _ = FileRoot.get_or_create(path=path)
    return root


def idempotency_key(device_id: str, sha256: str) -> str:
    """Fixed when the image is queued: the same bytes from the same device are one upload."""
    return hashlib.sha256(f"{device_id}\n{sha256}".encode()).hexdigest()


def add_image(new: NewImage, policy: BatchPolicy = BatchPolicy()) -> tuple[Image, bool]:
    """Insert an image, its annotations and its outbox row in one transaction.

    Returns (image, created); the same bytes already in the catalog return the existing image.
    One implementation of the rules serves one image and many: ``ingest.bulk.add_images``.
    """
    from .ingest.bulk import add_images  # local: ingest builds on this module

    [(image_id, created)] = add_images([new], policy)
    return Image.get_by_id(image_id), created


PATCHABLE = ("annotation_status", "split", "split_locked")


def parse_image_patch(body: Mapping[str, Any]) -> dict[str, Any]:
    params.patch_body(body, PATCHABLE)
    changes: dict[str, Any] = {}
    if "annotation_status" in body:
        changes["annotation_status"] = params.body_choice(body, "annotation_status",
                                                          ANNOTATION_STATUSES)
    if "split" in body:
        changes["split"] = params.body_choice(body, "split", SPLITS)
    if "split_locked" in body:
        changes["split_locked"] = params.body_bool(body, "split_locked")
    return changes


def update_image(image_id: int, changes: Mapping[str, Any]) -> None:
    """Apply a partial update. The split of a locked image changes only if the same request
    unlocks it."""
    now = now_us()
    with write_tx():
        image = Image.get_or_none(Image.id == image_id)
        if image is None:
            raise NotFound(f"image {image_id} does not exist", "id")
        locked_after = changes.get("split_locked", image.split_locked)
        if "split" in changes and changes["split"] != image.split and image.split_locked \
                and locked_after:
            raise Conflict(f"image {image_id} has a locked split; unlock it in the same request "
                           "(split_locked: false) to change it", "split")
        if not any(getattr(image, k) != v for k, v in changes.items()):
            return
        Image.update(updated_at=now, **changes).where(Image.id == image_id).execute()
        queue_change(image, "patch_image", dict(changes), now)


def queue_change(image: Image, kind: str, payload: dict[str, Any], now: int) -> None:
    """Queue a local change of an image already synced upstream, in the caller's transaction."""
    if image.sync_state != "synced":
        return  # not yet upstream: its upload will carry the current state
    key = hashlib.sha256(f"{kind}\n{image.id}\n{now}\n{json.dumps(payload, sort_keys=True)}"
                         .encode()).hexdigest()
    Outbox.create(image=image, kind=kind, idempotency_key=key, payload=json.dumps(payload),
                  created_at=now, updated_at=now)


def touch_images(image_ids: Iterable[int], now: int) -> None:
    Image.update(updated_at=now).where(Image.id.in_(list(image_ids))).execute()
