"""Manual annotations: create, change and delete one annotation of an image. No Flask.

Geometry comes in normalized, as in upload metadata (bbox ``[x_center, y_center, width,
height]``, polygon ``[x1, y1, x2, y2, ...]``), and is stored through
``catalog.annotation_columns`` like every other annotation. Each write touches the image's
``updated_at`` and, when the image is already upstream, queues the change for the sync worker
in the same transaction (``catalog.queue_change``).

Outbox payloads (kinds ``create_annotation``, ``update_annotation``, ``delete_annotation``):
``{"annotation_id": <local id>, "annotation": <state after>, "previous": <state before>}``
with the side that does not exist left out; a state is ``{class_value, type, geometry
(normalized), confidence, source, z_order}``.

The caps of ``catalog.AnnotationLimits`` hold here as on every other path: a polygon's
vertices when it is validated, and the image's stored annotation bytes (``catalog.
stored_bytes``, exact, as the image's size is known) in the write transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from peewee import fn

from . import edit_clock
from .catalog import (
    DEFAULT_LIMITS,
    MANUAL_SOURCE,
    MAX_Z,
    AnnotationLimits,
    NewAnnotation,
    annotation_columns,
    queue_change,
    stored_bytes,
    too_many_bytes,
    validate_annotation,
)
from .db import write_tx
from .engines import current as engine
from .errors import Conflict, NotFound, ValidationError
from .models import Annotation, Image, database
from .timeutil import now_us

MANUAL = MANUAL_SOURCE
# The columns of one annotation as the API answers it (``serialize.ANNOTATION_FIELDS``).
ROW_COLUMNS = (
    Annotation.id,
    Annotation.image,
    Annotation.class_value,
    Annotation.type,
    Annotation.geometry,
    Annotation.x_center,
    Annotation.y_center,
    Annotation.width,
    Annotation.height,
    Annotation.confidence,
    Annotation.source,
    Annotation.z_order,
    Annotation.created_at,
    Annotation.updated_at,
)


class AnnotationChanges(TypedDict, total=False):
    """Fields of one annotation as a client gives them (a new one's, or a partial change),
    not yet checked: they are checked as the annotation they make (``validate_annotation``),
    merged with the stored one for a change."""

    class_value: str
    type: str
    geometry: Sequence[float]  # normalized
    z_order: int
    confidence: float | None


def _validated(ann: NewAnnotation, limits: AnnotationLimits) -> NewAnnotation:
    """``catalog.validate_annotation``, with errors naming the body field itself."""
    try:
        validate_annotation(ann, "body", limits)
    except ValidationError as exc:
        raise ValidationError(exc.param.removeprefix("body."), exc.message) from None
    return ann


def _annotation(
    given: AnnotationChanges, base: Mapping[str, Any], limits: AnnotationLimits
) -> NewAnnotation:
    merged: dict[str, Any] = {**base, **given}
    for name in ("class_value", "type"):
        if not isinstance(merged.get(name), str):
            raise ValidationError(name, f"{name} must be a string")
    # z_order, class_value length and the polygon cap: validate_annotation, as on every path.
    return _validated(
        NewAnnotation(
            class_value=merged["class_value"],
            type=merged["type"],
            geometry=merged["geometry"],
            confidence=merged.get("confidence"),
            z_order=merged.get("z_order", 0),
            source=merged.get("source", MANUAL),
        ),
        limits,
    )


@dataclass(frozen=True)
class ManualAnnotation:
    image_id: int
    annotation: NewAnnotation
    z_order_given: bool


def new_manual_annotation(
    image_id: int, fields: AnnotationChanges, limits: AnnotationLimits = DEFAULT_LIMITS
) -> ManualAnnotation:
    """A manual annotation of ``image_id`` made of ``fields`` (z_order 0 unless given), checked
    as every annotation is; ``create_annotation`` stores it."""
    return ManualAnnotation(
        image_id, _annotation(fields, {"z_order": 0, "source": MANUAL}, limits), "z_order" in fields
    )


def state_of(row: Annotation, image: Image) -> dict[str, Any]:
    """An annotation as an outbox payload carries it: normalized geometry, as uploaded."""
    if row.type == "bbox":
        geometry = [row.x_center, row.y_center, row.width, row.height]
    else:
        pixels = json.loads(row.geometry)
        geometry = [v / (image.width if i % 2 == 0 else image.height) for i, v in enumerate(pixels)]
    return {
        "class_value": row.class_value,
        "type": row.type,
        "geometry": geometry,
        "confidence": row.confidence,
        "source": row.source,
        "z_order": row.z_order,
    }


def _image(image_id: int, param: str) -> Image:
    image = Image.get_or_none(Image.id == image_id)
    if image is None:
        raise NotFound(f"image {image_id} does not exist", param)
    return image


def check_bytes(
    image_id: int,
    columns: Mapping[str, Any],
    limits: AnnotationLimits,
    replacing: int | None = None,
    param: str = "geometry",
) -> None:
    """Refuse ``columns`` when, with the image's other stored annotations (all but
    ``replacing``), they would take more than ``max_annotation_bytes``; the error names
    ``param``, the field that grew. In the caller's write transaction, so the sum cannot
    change before the row is written."""
    # The cap counts UTF-8 bytes, not characters.
    size = " + ".join(engine().byte_length(c) for c in ("geometry", "class_value", "source"))
    (others,) = database.execute_sql(
        f"SELECT coalesce(sum({size}), 0) FROM annotation WHERE image_id = ? AND id != ?",
        (image_id, -1 if replacing is None else replacing),
    ).fetchone()
    others = int(others)  # a sum is NUMERIC on PostgreSQL
    used = others + stored_bytes(columns["class_value"], columns["geometry"], columns["source"])
    if used > limits.max_annotation_bytes:
        raise ValidationError(
            param, too_many_bytes(limits, f"image {image_id}'s would take {used} with this one")
        )


def create_annotation(
    new: ManualAnnotation, *, max_annotations: int, limits: AnnotationLimits = DEFAULT_LIMITS
) -> int:
    """Insert a manual annotation (on top of the image's others unless a z_order is given);
    returns its id."""
    now = now_us()
    image_id, ann = new.image_id, new.annotation
    with write_tx():
        image = _image(image_id, "image_id")
        top = top_with_room(image_id, max_annotations)
        if not new.z_order_given:
            # Drawn above what is there: a new box the user just drew should not hide. At the
            # top of the range it shares the top place rather than leave the range.
            ann = NewAnnotation(
                ann.class_value,
                ann.type,
                ann.geometry,
                None,
                0 if top is None else min(top + 1, MAX_Z),
                MANUAL,
            )
        return insert_row(image, annotation_columns(ann, image.width, image.height), limits, now)


def top_with_room(image_id: int, max_annotations: int) -> int | None:
    """The highest z_order of the image's annotations (None: it has none); Conflict (409) when
    it already has ``max_annotations``."""
    count, top = (
        Annotation.select(fn.COUNT(Annotation.id), fn.MAX(Annotation.z_order))
        .where(Annotation.image == image_id)
        .scalar(as_tuple=True)
    )
    if count >= max_annotations:
        raise Conflict(
            f"image {image_id} already has {count} annotations, the most "
            "allowed ([ingest] max_annotations)",
            "image_id",
        )
    return top


def insert_row(
    image: Image,
    columns: Mapping[str, Any],
    limits: AnnotationLimits,
    now: int,
    origin: str = edit_clock.LOCAL,
) -> int:
    """Add one annotation (its stored ``columns``) to ``image`` in the caller's write
    transaction: held to the image's stored-byte cap with its others, the image's
    ``updated_at`` and edit clock moved, the change queued upstream. Returns its id."""
    check_bytes(image.id, columns, limits)
    row = Annotation.create(image=image.id, created_at=now, updated_at=now, **columns)
    Image.update(updated_at=now).where(Image.id == image.id).execute()
    edit_clock.record(image.id, [edit_clock.ANNOTATIONS], now, origin)
    queue_change(
        image,
        "create_annotation",
        {"annotation_id": row.id, "annotation": state_of(row, image)},
        now,
    )
    return row.id


def _existing(annotation_id: int) -> tuple[Annotation, Image]:
    row = Annotation.get_or_none(Annotation.id == annotation_id)
    if row is None:
        raise NotFound(f"annotation {annotation_id} does not exist", "id")
    return row, _image(row.image_id, "id")


def update_annotation(
    annotation_id: int, changes: AnnotationChanges, limits: AnnotationLimits = DEFAULT_LIMITS
) -> None:
    """Apply a partial change; the merged annotation is validated as a whole (a new ``type``
    needs a ``geometry`` of its shape). The source is kept; confidence only if not given."""
    now = now_us()
    with write_tx():
        row, image = _existing(annotation_id)
        before = state_of(row, image)
        ann = _annotation(changes, before, limits)
        columns = annotation_columns(ann, image.width, image.height)
        if "geometry" not in changes and "type" not in changes:
            # Keep the stored geometry exactly: recomputing it from the rounded pixel polygon
            # would drift the normalized columns on every rename.
            check_bytes(
                image.id,
                {**columns, "geometry": row.geometry},
                limits,
                replacing=annotation_id,
                param="class_value",
            )
            columns = {k: columns[k] for k in ("class_value", "z_order", "confidence")}
        else:
            check_bytes(image.id, columns, limits, replacing=annotation_id)
        if all(getattr(row, k) == v for k, v in columns.items()):
            return
        Annotation.update(updated_at=now, **columns).where(Annotation.id == annotation_id).execute()
        Image.update(updated_at=now).where(Image.id == image.id).execute()
        edit_clock.record(image.id, [edit_clock.ANNOTATIONS], now, edit_clock.LOCAL)
        after = state_of(Annotation.get_by_id(annotation_id), image)
        queue_change(
            image,
            "update_annotation",
            {"annotation_id": annotation_id, "annotation": after, "previous": before},
            now,
        )


def delete_annotation(annotation_id: int) -> None:
    now = now_us()
    with write_tx():
        row, image = _existing(annotation_id)
        previous = state_of(row, image)
        row.delete_instance()
        Image.update(updated_at=now).where(Image.id == image.id).execute()
        edit_clock.record(image.id, [edit_clock.ANNOTATIONS], now, edit_clock.LOCAL)
        queue_change(
            image, "delete_annotation", {"annotation_id": annotation_id, "previous": previous}, now
        )


def get_annotation_row(annotation_id: int) -> dict[str, Any]:
    row = Annotation.select(*ROW_COLUMNS).where(Annotation.id == annotation_id).dicts().first()
    if row is None:
        raise NotFound(f"annotation {annotation_id} does not exist", "id")
    return row
