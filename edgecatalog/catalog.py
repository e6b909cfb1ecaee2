"""The image rules, and the changes made to images once they exist. No Flask.

Rules: what a new image and its annotations are (``NewImage``, ``NewAnnotation``), the checks
an annotation meets on every path (``validate_annotation``, and ``plainly_valid``, its fast
path for the common bbox), the text no stored label may carry (``unsafe_text``), how an
annotation is stored (``annotation_values``: the one place its columns are computed), the
device, collecting batch and root of a new image, and its outbox key. Writing new images is
``ingest.bulk``'s, which builds on this module (this module never imports it). Changes:
``update_image`` (typed ``ImageChanges``) and ``queue_change``, in one short IMMEDIATE
transaction each.

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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict, cast

from . import edit_clock
from .config import defaults as setting_defaults
from .db import write_tx
from .errors import Conflict, NotFound, ValidationError
from .models import (
    ANNOTATION_TYPES,
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
        return cls(
            max_images=int(settings["batches.max_images"]),
            window_us=round(float(settings["batches.window_minutes"]) * 60_000_000),
        )


# Annotation sources with a meaning of their own (any other short text names a model):
# "model", an inference (what an upload's annotation is unless it says otherwise); "manual",
# a person drew or checked it (the API's edits); "import", it came from a labelled dataset
# (``edgecatalog import``). The last two are reviewed labels: a device key may claim neither,
# a late sidecar replaces neither, and an export gives neither a score.
MODEL_SOURCE = "model"
MANUAL_SOURCE = "manual"
IMPORT_SOURCE = "import"
REVIEWED_SOURCES = (MANUAL_SOURCE, IMPORT_SOURCE)


@dataclass(frozen=True)
class NewAnnotation:
    class_value: str
    type: str
    geometry: Sequence[float]  # normalized, see module docstring
    confidence: float | None = None
    z_order: int = 0
    source: str = MODEL_SOURCE


@dataclass(frozen=True)
class NewImage:
    filename: str
    storage_key: str
    sha256: str
    byte_size: int
    width: int
    height: int
    root: str  # absolute folder the file lives under; storage_key is relative to it
    device_id: str
    captured_at: int | None = None
    model_id: str = ""
    model_version: str = ""
    source: str = ""
    crc32: int | None = None  # of the bytes, when they were read in (else NULL)
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
        return cls(
            max_polygon_points=int(settings["ingest.max_polygon_points"]),
            max_annotation_bytes=int(settings["ingest.max_annotation_bytes"]),
        )


DEFAULT_LIMITS = AnnotationLimits()


# Characters no stored label or name may carry: C0/C1 controls, DEL, line and paragraph
# separators (they break lines in logs and UIs) and lone surrogates (not UTF-8: SQLite cannot
# store them, and a JSON body can spell them as \ud800).
_UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def unsafe_text(text: str, allow: str = "") -> bool:
    """True when ``text`` holds a character of ``_UNSAFE_TEXT`` other than those in ``allow``
    (a free-text field may allow "\\n\\t")."""
    if not allow:
        return _UNSAFE_TEXT.search(text) is not None
    return any(c not in allow for c in _UNSAFE_TEXT.findall(text))


def check_z_order(value: Any, param: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(param, "z_order must be an integer")
    if not -MAX_Z <= value <= MAX_Z:
        raise ValidationError(param, f"z_order must be between -{MAX_Z} and {MAX_Z}")


def validate_annotation(
    ann: NewAnnotation, where: str = "annotations", limits: AnnotationLimits = DEFAULT_LIMITS
) -> None:
    if not isinstance(ann.class_value, str) or not ann.class_value.strip():
        raise ValidationError(f"{where}.class_value", "class_value must be a non-empty string")
    if len(ann.class_value) > MAX_CLASS_CHARS:
        raise ValidationError(
            f"{where}.class_value", f"class_value must be at most {MAX_CLASS_CHARS} characters"
        )
    if unsafe_text(ann.class_value):
        raise ValidationError(
            f"{where}.class_value",
            "class_value must not contain control characters or unpaired surrogates",
        )
    if ann.type not in ANNOTATION_TYPES:
        raise ValidationError(f"{where}.type", f"type must be one of {', '.join(ANNOTATION_TYPES)}")
    geom = ann.geometry
    if not isinstance(geom, (list, tuple)):
        raise ValidationError(f"{where}.geometry", "geometry must be a list of numbers")
    # The length is checked before any value is looked at: a million-point polygon is refused
    # by its length, not after a million checks.
    if ann.type == "polygon" and len(geom) > 2 * limits.max_polygon_points:
        raise ValidationError(
            f"{where}.geometry",
            f"a polygon may have at most {limits.max_polygon_points} points "
            f"([ingest] max_polygon_points), got {len(geom) // 2}",
        )
    if ann.type == "bbox" and len(geom) != 4:
        raise ValidationError(
            f"{where}.geometry", "a bbox geometry is [x_center, y_center, width, height]"
        )
    if ann.type == "polygon" and (len(geom) < 6 or len(geom) % 2):
        raise ValidationError(
            f"{where}.geometry", "a polygon geometry is [x1, y1, x2, y2, ...] with 3 or more points"
        )
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in geom
    ):
        raise ValidationError(f"{where}.geometry", "geometry must be a list of numbers")
    if any(v < 0 or v > 1 for v in geom):
        raise ValidationError(f"{where}.geometry", "geometry values must be normalized to 0..1")
    # NaN fails both comparisons, so ``not 0 <= c <= 1`` refuses it with the infinities.
    if ann.confidence is not None and (
        isinstance(ann.confidence, bool)
        or not isinstance(ann.confidence, (int, float))
        or not 0 <= ann.confidence <= 1
    ):
        raise ValidationError(f"{where}.confidence", "confidence must be a number in 0..1")
    check_z_order(ann.z_order, f"{where}.z_order")
    if (
        not isinstance(ann.source, str)
        or len(ann.source) > MAX_SOURCE_CHARS
        or unsafe_text(ann.source)
    ):
        raise ValidationError(
            f"{where}.source",
            f"source must be a string of at most {MAX_SOURCE_CHARS} printable characters",
        )


def plainly_valid(ann: NewAnnotation) -> bool:
    """True only for a bbox annotation ``validate_annotation`` accepts, checked in a fraction
    of its time (a folder scan validates thousands a second). False says nothing: then
    ``validate_annotation`` decides, and names what is wrong."""
    geom, conf, z, label, source = (
        ann.geometry,
        ann.confidence,
        ann.z_order,
        ann.class_value,
        ann.source,
    )
    if ann.type != "bbox" or type(geom) not in (list, tuple) or len(geom) != 4:
        return False
    for v in geom:  # exact types: bool (an int) and NaN/inf (not in 0..1) go the slow way
        if (type(v) is not float and type(v) is not int) or not 0 <= v <= 1:
            return False
    # Every bound of validate_annotation is here too, or this path would skip it. isprintable
    # is False for every character unsafe_text refuses (and for a few it allows: those go the
    # slow way, which accepts them).
    return (
        (conf is None or (type(conf) in (float, int) and 0 <= conf <= 1))
        and type(z) is int
        and -MAX_Z <= z <= MAX_Z
        and type(label) is str
        and len(label) <= MAX_CLASS_CHARS
        and label.isprintable()
        and label.strip() != ""
        and type(source) is str
        and len(source) <= MAX_SOURCE_CHARS
        and source.isprintable()
    )


def check_annotation(
    ann: NewAnnotation, where: str = "annotations", limits: AnnotationLimits = DEFAULT_LIMITS
) -> None:
    """``validate_annotation``, through ``plainly_valid`` first: the same verdict, sooner."""
    if not plainly_valid(ann):
        validate_annotation(ann, where, limits)


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
    return (
        len(ann.geometry) * (COORDINATE_DIGITS + 1)
        + 1
        + _utf8_len(ann.class_value)
        + _utf8_len(ann.source)
    )


def too_many_bytes(limits: AnnotationLimits, taken: str) -> str:
    """The message of the ValidationError for annotations over the byte cap; ``taken`` says
    how much they take."""
    return (
        f"the annotations of one image may take at most {limits.max_annotation_bytes} bytes "
        f"as stored ([ingest] max_annotation_bytes: geometry JSON, class_value and source); "
        f"{taken}"
    )


# The stored columns of an annotation, in the order ``annotation_values`` gives them.
ANNOTATION_COLUMNS = (
    "class_value",
    "type",
    "geometry",
    "x_center",
    "y_center",
    "width",
    "height",
    "confidence",
    "source",
    "z_order",
)


def annotation_values(ann: NewAnnotation, width: int, height: int) -> tuple[Any, ...]:
    """The stored columns (``ANNOTATION_COLUMNS``) of one valid annotation, for an image of
    width x height pixels: geometry as integer pixels, its box normalized. A tuple, and a
    bbox without json.dumps: the bulk writer stores 3+ per image at disk speed."""
    confidence = None if ann.confidence is None else float(ann.confidence)
    if ann.type == "bbox":
        xc, yc, w, h = (float(v) for v in ann.geometry)
        x0, y0 = min(max(xc - w / 2, 0.0), 1.0), min(max(yc - h / 2, 0.0), 1.0)
        x1, y1 = min(max(xc + w / 2, 0.0), 1.0), min(max(yc + h / 2, 0.0), 1.0)
        geometry = (
            f"[{round(x0 * width)},{round(y0 * height)},{round(x1 * width)},{round(y1 * height)}]"
        )
        return (
            ann.class_value.strip(),
            "bbox",
            geometry,
            xc,
            yc,
            w,
            h,
            confidence,
            ann.source,
            ann.z_order,
        )
    g = [float(v) for v in ann.geometry]
    xs, ys = g[0::2], g[1::2]
    xc, yc = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    w, h = max(xs) - min(xs), max(ys) - min(ys)
    pixels = [round(v * (width if i % 2 == 0 else height)) for i, v in enumerate(g)]
    return (
        ann.class_value.strip(),
        ann.type,
        json.dumps(pixels, separators=(",", ":")),
        xc,
        yc,
        w,
        h,
        confidence,
        ann.source,
        ann.z_order,
    )


def annotation_columns(ann: NewAnnotation, width: int, height: int) -> dict[str, Any]:
    """``annotation_values`` by column name, for the ORM writes of single annotations."""
    return dict(zip(ANNOTATION_COLUMNS, annotation_values(ann, width, height)))


def ensure_device(device_id: str, now: int) -> Device:
    # Plain SQL for the common case (the device exists): this runs for every image ingested,
    # and building the ORM query costs more than SQLite answering it.
    row = database.execute_sql("SELECT id FROM device WHERE device_id = ?", (device_id,)).fetchone()
    if row is not None:
        return Device(id=row[0], device_id=device_id)
    return Device.create(device_id=device_id, name=device_id, created_at=now)


class OpenBatch(NamedTuple):
    """A device's collecting batch as the writer needs it: its id and how many images it has."""

    id: int
    image_count: int


def collecting_batch(device: Device, now: int, policy: BatchPolicy) -> OpenBatch:
    """The device's open batch, closing it first when it is full or its window has passed.

    Plain SQL, as in ``ensure_device``: every upload's transaction runs this under the write
    lock, and the ORM query cost ~0.3 ms of CPU where SQLite answers in ~20 us."""
    row = database.execute_sql(
        "SELECT id, image_count, opened_at FROM batch WHERE device_id = ? AND stage = ? "
        "ORDER BY id DESC LIMIT 1",
        (device.id, "collecting"),
    ).fetchone()
    # A clock set back (now < opened_at) keeps the batch open rather than closing it early.
    if row is not None and (row[1] >= policy.max_images or now - row[2] >= policy.window_us):
        database.execute_sql(
            "UPDATE batch SET stage = ?, closed_at = ?, updated_at = ? WHERE id = ?",
            ("complete", now, now, row[0]),
        )
        row = None
    if row is None:
        batch = _new_batch(device, f"{device.device_id} {format_ts(now)}", now)
        return OpenBatch(batch.id, batch.image_count)
    return OpenBatch(row[0], row[1])


def closed_batch(device_id: str, name: str, project_id: int | None, now: int) -> Batch:
    """A batch of its own for images that arrive together rather than from a camera (an
    import): complete from the start, so the device's collecting batch is left as it is."""
    return _new_batch(ensure_device(device_id, now), name, now, project_id, closed=True)


def _new_batch(
    device: Device, name: str, now: int, project_id: int | None = None, *, closed: bool = False
) -> Batch:
    return Batch.create(
        name=name,
        device=device,
        project=project_id,
        stage="complete" if closed else "collecting",
        image_count=0,
        opened_at=now,
        closed_at=now if closed else None,
        created_at=now,
        updated_at=now,
    )


def file_root(path: str) -> FileRoot:
    row = database.execute_sql("SELECT id FROM file_root WHERE path = ?", (path,)).fetchone()
    if row is not None:  # the common case, in plain SQL as in ensure_device
        return FileRoot(id=row[0], path=path)
    root, _ = FileRoot.get_or_create(path=path)
    return root


def idempotency_key(device_id: str, sha256: str) -> str:
    """Fixed when the image is queued: the same bytes from the same device are one upload."""
    return hashlib.sha256(f"{device_id}\n{sha256}".encode()).hexdigest()


# The image fields upstream's PATCH takes: queued for it, and mirrored between catalogs.
PATCHABLE = ("annotation_status", "split", "split_locked")
# What this catalog's API may change (PATCH /data/images): those, and the fields only this
# catalog keeps (``pinned``: retention's, never sent upstream).
EDITABLE = (*PATCHABLE, "pinned")


class ImageChanges(TypedDict, total=False):
    """A partial update of an image: only the fields given (``EDITABLE``), checked values."""

    annotation_status: str  # one of models.ANNOTATION_STATUSES
    split: str  # one of models.SPLITS
    split_locked: bool
    pinned: bool


def update_image(
    image_id: int,
    changes: ImageChanges,
    *,
    edited_at: int | None = None,
    origin: str = edit_clock.LOCAL,
) -> set[str]:
    """Apply a partial update. The split of a locked image changes only if the same request
    unlocks it.

    A change of this catalog's own API (``origin`` LOCAL) applies whole, or not at all (409 on
    a locked split). A device's mirrored change (``origin`` ``edit_clock.device_origin``, made
    at ``edited_at`` on the device) applies field by field under ``edit_clock``'s rule: a field
    changed here at or after ``edited_at`` keeps its value, and so does the split of an image
    locked here. Returns the fields that kept their value for those reasons."""
    now = now_us()
    mirrored = origin != edit_clock.LOCAL
    with write_tx():
        image = Image.get_or_none(Image.id == image_id)
        if image is None:
            raise NotFound(f"image {image_id} does not exist", "id")
        kept: set[str] = set()
        if mirrored:
            kept = edit_clock.superseded(image_id, changes, edited_at or now)
            changes = cast(ImageChanges, {k: v for k, v in changes.items() if k not in kept})
        locked_after = changes.get("split_locked", image.split_locked)
        if (
            "split" in changes
            and changes["split"] != image.split
            and image.split_locked
            and locked_after
        ):
            if mirrored:  # locked here: the device's split does not move it
                kept.add("split")
                changes = cast(ImageChanges, {k: v for k, v in changes.items() if k != "split"})
            else:
                raise Conflict(
                    f"image {image_id} has a locked split; unlock it in the same request "
                    "(split_locked: false) to change it",
                    "split",
                )
        if not any(getattr(image, k) != v for k, v in changes.items()):
            return kept
        Image.update(updated_at=now, **changes).where(Image.id == image_id).execute()
        upstream = {k: v for k, v in changes.items() if k in PATCHABLE}
        if upstream:  # a pin alone is this catalog's business
            edit_clock.record(
                image_id, upstream, edited_at if mirrored and edited_at else now, origin
            )
            queue_change(image, "patch_image", upstream, now)
    return kept


def queue_change(image: Image, kind: str, payload: dict[str, Any], now: int) -> None:
    """Queue a local change of an image already synced upstream, in the caller's transaction."""
    if image.sync_state != "synced":
        return  # not yet upstream: its upload will carry the current state
    key = hashlib.sha256(
        f"{kind}\n{image.id}\n{now}\n{json.dumps(payload, sort_keys=True)}".encode()
    ).hexdigest()
    Outbox.create(
        image=image,
        kind=kind,
        idempotency_key=key,
        payload=json.dumps(payload),
        created_at=now,
        updated_at=now,
    )
