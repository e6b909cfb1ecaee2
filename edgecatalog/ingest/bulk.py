"""Indexing many images in one transaction: ``add_images``, the bulk form of
``catalog.add_image`` used by the capture folder and ``scan`` (and, with one image, by uploads).

Same rows and rules as ``add_image`` (image, annotations, outbox ``upload`` row; the device's
collecting batch, completed when full; same bytes = the existing image), but the per-image
work is plain tuples through ``executemany`` instead of ORM queries: building peewee queries
costs more than SQLite executing them, and a folder of small images must index at disk speed.
A chunk of ``BULK_MIN`` or more new images also switches the list's count and FTS triggers
off for its own rows and applies their work grouped (``counts``), which removes most of the
SQLite time per image. Batches, devices and roots come from ``catalog``'s own helpers so the
batch rules live in one place.

Whatever validated them (``validated``: the caller did; ``annotation_rows``: a probe worker
converted them), an image's annotations are checked once more as they are about to be stored
(``check_stored``): z_order in range, polygon vertices and stored bytes within the
``catalog.AnnotationLimits``. It is the last gate before SQLite, so no fast path or caller
that skipped a rule can write past the caps (or hand SQLite an integer it rejects with a 500).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Any

from peewee import Model

from ..catalog import (
    DEFAULT_LIMITS,
    MAX_Z,
    AnnotationLimits,
    BatchPolicy,
    NewAnnotation,
    NewImage,
    annotation_columns,
    check_z_order,
    collecting_batch,
    ensure_device,
    file_root,
    idempotency_key,
    stored_bytes,
    too_many_bytes,
    validate_annotation,
)
from ..db import write_tx
from ..errors import ValidationError
from ..models import Annotation, Batch, Image, Outbox, database
from ..timeutil import now_us
from .counts import gate_ready, gated_chunk

BULK_MIN = 16  # fewer new images: the per-row triggers cost less than the grouped statements
MAX_ROWID = 2**63 - 1


@dataclass(frozen=True)
class RowShape:
    """An INSERT whose first columns are ``names`` (given per row) and whose other columns
    take their model defaults, appended as one constant tuple: a row is ``values + tail``."""

    sql: str
    tail: tuple[Any, ...]


@cache
def row_shape(model: type[Model], names: tuple[str, ...]) -> RowShape:
    fields = [f for f in model._meta.sorted_fields if f is not model._meta.primary_key]
    by_name = {f.name: f for f in fields}
    rest = [f for f in fields if f.name not in names]
    if any(callable(f.default) for f in rest):  # a per-row default cannot be a constant tail
        raise TypeError(f"{model.__name__}: give a value for every field with a callable default")
    columns = ", ".join(f'"{f.column_name}"' for f in [by_name[n] for n in names] + rest)
    marks = ", ".join("?" for _ in fields)
    return RowShape(f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES ({marks})',
                    tuple(f.default for f in rest))


IMAGE_FIELDS = ("filename", "storage_key", "width", "height", "device", "batch", "created_at",
                "updated_at", "captured_at", "sha256", "byte_size", "root", "path", "model_id",
                "model_version", "source")
ANNOTATION_FIELDS = ("image", "class_value", "type", "geometry", "x_center", "y_center",
                     "width", "height", "confidence", "source", "z_order", "created_at",
                     "updated_at")
OUTBOX_FIELDS = ("image", "kind", "payload", "byte_size", "idempotency_key", "created_at",
                 "updated_at")
_COLUMN_KEYS = ANNOTATION_FIELDS[1:11]  # what annotation_columns returns, in row order


def annotation_values(ann: NewAnnotation, width: int, height: int) -> tuple[Any, ...]:
    """``catalog.annotation_columns`` as a tuple in ``ANNOTATION_FIELDS[1:11]`` order; a bbox
    is computed here directly (no dict, no json.dumps: the common case, 3+ per image)."""
    if ann.type != "bbox":
        cols = annotation_columns(ann, width, height)
        return tuple(cols[k] for k in _COLUMN_KEYS)
    xc, yc, w, h = (float(v) for v in ann.geometry)
    # The same arithmetic as annotation_columns, so the stored pixels are identical.
    x0, y0 = min(max(xc - w / 2, 0.0), 1.0), min(max(yc - h / 2, 0.0), 1.0)
    x1, y1 = min(max(xc + w / 2, 0.0), 1.0), min(max(yc + h / 2, 0.0), 1.0)
    geometry = (f"[{round(x0 * width)},{round(y0 * height)},"
                f"{round(x1 * width)},{round(y1 * height)}]")
    confidence = None if ann.confidence is None else float(ann.confidence)
    return (ann.class_value.strip(), "bbox", geometry, xc, yc, w, h, confidence, ann.source,
            ann.z_order)


def check_stored(rows: Sequence[tuple], limits: AnnotationLimits = DEFAULT_LIMITS) -> None:
    """Refuse an image's annotations, as ``annotation_values`` tuples about to be stored, that
    break a cap: z_order out of range, a polygon over ``max_polygon_points``, or more than
    ``max_annotation_bytes`` (``catalog.stored_bytes``, measured on the stored text itself)."""
    used = 0
    for i, row in enumerate(rows):
        z_order = row[9]
        if type(z_order) is not int or not -MAX_Z <= z_order <= MAX_Z:
            check_z_order(z_order, f"annotations[{i}].z_order")
        geometry = row[2]
        # A stored polygon is a flat JSON list of integers: its commas count its values.
        if row[1] != "bbox" and geometry.count(",") + 1 > 2 * limits.max_polygon_points:
            raise ValidationError(f"annotations[{i}].geometry",
                                  f"a polygon may have at most {limits.max_polygon_points} points "
                                  "([ingest] max_polygon_points)")
        used += stored_bytes(row[0], geometry, row[8])
    if used > limits.max_annotation_bytes:
        raise ValidationError("annotations", too_many_bytes(limits, f"these take {used}"))


def existing_images(shas: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    unique = sorted(set(shas))
    for i in range(0, len(unique), 500):
        chunk = unique[i:i + 500]
        marks = ", ".join("?" * len(chunk))
        found.update(database.execute_sql(
            f"SELECT sha256, id FROM image WHERE sha256 IN ({marks})", chunk).fetchall())
    return found


def _assign_batches(news: Sequence[NewImage], now: int, policy: BatchPolicy) -> list[int]:
    """A batch id per new image (the device's collecting batch, a new one when it fills)."""
    out: list[int] = [0] * len(news)
    by_device: dict[str, list[int]] = {}
    for i, new in enumerate(news):
        by_device.setdefault(new.device_id, []).append(i)
    for device_id, indexes in by_device.items():
        device = ensure_device(device_id, now)
        while indexes:
            batch = collecting_batch(device, now, policy)
            take = max(1, policy.max_images - batch.image_count)
            for i in indexes[:take]:
                out[i] = batch.id
            count = batch.image_count + len(indexes[:take])
            changes: dict[str, Any] = {"image_count": count, "updated_at": now}
            if count >= policy.max_images:  # full: completed now, as add_image does
                changes.update(stage="complete", closed_at=now)
            Batch.update(**changes).where(Batch.id == batch.id).execute()
            indexes = indexes[take:]
    return out


def add_images(news: Sequence[NewImage], policy: BatchPolicy | None = None, *,
               validated: bool = False, savepoint: bool = True,
               annotation_rows: Sequence[Sequence[tuple]] | None = None,
               limits: AnnotationLimits = DEFAULT_LIMITS) -> list[tuple[int, bool]]:
    """Insert images with their annotations and outbox rows; one (image id, created) each.

    ``validated``: the annotations come from ``parse_metadata`` / ``parse_yolo``, which
    already ran ``validate_annotation`` on each. ``annotation_rows``: per image, annotations
    already converted by ``annotation_values`` (validated too), stored in addition to the
    image's ``annotations``. Every image's annotations then meet ``check_stored`` with
    ``limits`` (a ``ValidationError`` stores nothing). Runs in the caller's transaction when
    there is one (nested in a savepoint, unless ``savepoint=False``: then the caller rolls back
    all of its transaction if this raises), else in its own.
    """
    for new in () if validated else news:
        for i, ann in enumerate(new.annotations):
            validate_annotation(ann, f"annotations[{i}]", limits)
    # Converted (pure work) before the write transaction, so the write lock is held shorter,
    # and checked as stored before anything is written.
    given = list(annotation_rows or ())
    stored: dict[int, list[tuple]] = {}
    for k, new in enumerate(news):
        rows = [annotation_values(ann, new.width, new.height) for ann in new.annotations]
        if k < len(given):
            rows.extend(given[k])
        check_stored(rows, limits)
        stored[id(new)] = rows
    now = now_us()
    nest = savepoint or not database.in_transaction()
    with write_tx() if nest else nullcontext():
        ids = existing_images([n.sha256 for n in news])
        fresh: list[NewImage] = []
        for new in news:
            if new.sha256 not in ids:
                ids[new.sha256] = 0  # the same bytes twice in this chunk: the first one wins
                fresh.append(new)
        if fresh:
            _insert(fresh, _assign_batches(fresh, now, policy or BatchPolicy()), ids, now,
                    [stored[id(n)] for n in fresh])
    created = {id(n) for n in fresh}
    return [(ids[n.sha256], id(n) in created) for n in news]


def _insert(fresh: list[NewImage], batches: list[int], ids: dict[str, int], now: int,
            annotations: list[list[tuple]]) -> None:
    devices = {d: ensure_device(d, now).id for d in {n.device_id for n in fresh}}
    roots = {r: file_root(r).id for r in {n.root for n in fresh}}
    image = row_shape(Image, IMAGE_FIELDS)
    rows = [(new.filename, new.storage_key, new.width, new.height, devices[new.device_id],
             batch_id, now, now, new.captured_at if new.captured_at is not None else now,
             new.sha256, new.byte_size, roots[new.root], new.path, new.model_id,
             new.model_version, new.source) + image.tail
            for new, batch_id in zip(fresh, batches)]
    cursor = database.cursor()
    (last,) = cursor.execute('SELECT max("id") FROM "image"').fetchone()
    first = (last or 0) + 1
    # Near the largest rowid SQLite picks random ids, which no id range can describe.
    if len(rows) >= BULK_MIN and first + len(rows) < MAX_ROWID and gate_ready():
        with gated_chunk() as span:
            # Without AUTOINCREMENT a new row's id is max(id) + 1, and this transaction holds
            # the write lock: the chunk's ids are first, first + 1, ... in order.
            cursor.executemany(image.sql, rows)
            span.first, span.last = first, first + len(rows) - 1
            (check,) = cursor.execute('SELECT max("id") FROM "image"').fetchone()
            if check != span.last:
                raise RuntimeError(f"image ids {first}..{span.last} expected, max is {check}")
            _insert_children(cursor, fresh, list(range(first, first + len(rows))), ids, now,
                             annotations)
    else:
        image_ids = [cursor.execute(image.sql, row).lastrowid for row in rows]
        _insert_children(cursor, fresh, image_ids, ids, now, annotations)


def _insert_children(cursor, fresh: list[NewImage], image_ids: list[int],
                     ids: dict[str, int], now: int, stored: list[list[tuple]]) -> None:
    """The annotations (``annotation_values`` tuples, one list per image) and outbox rows of
    the new images, two ``executemany`` in all."""
    annotations, outbox = [], []
    ann_tail = (now, now) + row_shape(Annotation, ANNOTATION_FIELDS).tail
    out_tail = row_shape(Outbox, OUTBOX_FIELDS).tail
    for new, image_id, rows in zip(fresh, image_ids, stored):
        ids[new.sha256] = image_id
        for values in rows:
            annotations.append((image_id, *values) + ann_tail)
        outbox.append((image_id, "upload", "{}", new.byte_size,
                       idempotency_key(new.device_id, new.sha256), now, now) + out_tail)
    if annotations:
        cursor.executemany(row_shape(Annotation, ANNOTATION_FIELDS).sql, annotations)
    cursor.executemany(row_shape(Outbox, OUTBOX_FIELDS).sql, outbox)
