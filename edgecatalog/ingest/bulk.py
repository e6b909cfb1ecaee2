"""Writing new images: the one writer of an image row, its annotations and its outbox
``upload`` row (the device's collecting batch, completed when full; the same bytes = the
existing image). Every path that adds images comes here: uploads, the capture folder,
``scan``, and the tests' and benchmarks' single images.

``add_images(news)``: images whose annotations are ``NewAnnotation`` values, checked here
(``catalog.check_annotation``). ``add_probed_images(news, rows)``: captures a probe worker
already validated and converted to stored columns (``catalog.annotation_values``).
``add_image(new)``: one image, as an ORM row. The rules themselves (annotations, batches,
devices, roots, outbox keys) are ``catalog``'s; this module only builds on them.

The per-image work is plain tuples through ``executemany`` instead of ORM queries: building
peewee queries costs more than SQLite executing them, and a folder of small images must index
at disk speed. A chunk of ``BULK_MIN`` or more new images also switches the list's count and
FTS triggers off for its own rows and applies their work grouped (``counts``), which removes
most of the SQLite time per image.

Whoever validated them, an image's annotations are checked once more as they are about to be
stored (``check_stored``): z_order in range, polygon vertices and stored bytes within the
``catalog.AnnotationLimits``. It is the last gate before SQLite, so no fast path or caller
can write past the caps (or hand SQLite an integer it rejects with a 500).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Any

from peewee import Model

from .. import class_sets, confidence_bits
from ..catalog import (
    ANNOTATION_COLUMNS,
    DEFAULT_LIMITS,
    MAX_Z,
    AnnotationLimits,
    BatchPolicy,
    NewImage,
    annotation_values,
    check_annotation,
    check_z_order,
    collecting_batch,
    ensure_device,
    file_root,
    idempotency_key,
    stored_bytes,
    too_many_bytes,
)
from ..db import write_tx
from ..engines import current as engine
from ..errors import ValidationError
from ..models import Annotation, Image, Outbox, database
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
    return RowShape(
        f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES ({marks})',
        tuple(f.default for f in rest),
    )


IMAGE_FIELDS = (
    "filename",
    "storage_key",
    "width",
    "height",
    "device",
    "batch",
    "created_at",
    "updated_at",
    "captured_at",
    "sha256",
    "byte_size",
    "root",
    "model_id",
    "model_version",
    "source",
    "class_set_id",
    "confidence_bits",
    "crc32",
)
_CONFIDENCE = ANNOTATION_COLUMNS.index("confidence")
# The Annotation columns as the writer inserts them: the image, its stored columns
# (``catalog.ANNOTATION_COLUMNS``, as ``annotation_values`` gives them), the timestamps.
ANNOTATION_INSERT_FIELDS = ("image", *ANNOTATION_COLUMNS, "created_at", "updated_at")
OUTBOX_FIELDS = (
    "image",
    "kind",
    "payload",
    "byte_size",
    "idempotency_key",
    "created_at",
    "updated_at",
)


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
            raise ValidationError(
                f"annotations[{i}].geometry",
                f"a polygon may have at most {limits.max_polygon_points} points "
                "([ingest] max_polygon_points)",
            )
        used += stored_bytes(row[0], geometry, row[8])
    if used > limits.max_annotation_bytes:
        raise ValidationError("annotations", too_many_bytes(limits, f"these take {used}"))


def existing_images(shas: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    unique = sorted(set(shas))
    for i in range(0, len(unique), 500):
        chunk = unique[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        found.update(
            database.execute_sql(
                f"SELECT sha256, id FROM image WHERE sha256 IN ({marks})", chunk
            ).fetchall()
        )
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
            if count >= policy.max_images:  # full: completed now, as collecting_batch would
                database.execute_sql(
                    "UPDATE batch SET image_count = ?, updated_at = ?, stage = ?, closed_at = ? "
                    "WHERE id = ?",
                    (count, now, "complete", now, batch.id),
                )
            else:
                database.execute_sql(
                    "UPDATE batch SET image_count = ?, updated_at = ? WHERE id = ?",
                    (count, now, batch.id),
                )
            indexes = indexes[take:]
    return out


def add_images(
    news: Sequence[NewImage],
    policy: BatchPolicy | None = None,
    *,
    limits: AnnotationLimits = DEFAULT_LIMITS,
    batch: int | None = None,
) -> list[tuple[int, bool]]:
    """Insert images with their annotations (every rule of ``catalog.check_annotation`` and
    the caps of ``limits``) and outbox rows; one (image id, created) each, in order.

    ``batch``: every new image goes into this batch (an import's own, of the images'
    device; its ``image_count`` is the caller's to keep) instead of its device's collecting
    batch.

    A ``ValidationError`` stores nothing. Runs in the caller's transaction when there is one,
    as part of it: a caller that goes on after another error wraps the call in a savepoint
    (``db.write_tx()``). Else in a transaction of its own.
    """
    for new in news:
        for i, ann in enumerate(new.annotations):
            check_annotation(ann, f"annotations[{i}]", limits)
    # Converted (pure work) before the write transaction, so the write lock is held shorter.
    return _write(
        news,
        [
            [annotation_values(ann, new.width, new.height) for ann in new.annotations]
            for new in news
        ],
        policy,
        limits,
        batch,
    )


def add_probed_images(
    news: Sequence[NewImage],
    rows: Sequence[Sequence[tuple]],
    policy: BatchPolicy | None = None,
    *,
    limits: AnnotationLimits = DEFAULT_LIMITS,
) -> list[tuple[int, bool]]:
    """``add_images`` for captures a probe worker read: ``rows[k]`` are the annotations of
    ``news[k]``, already validated and converted (``catalog.annotation_values``) off the write
    path; the images themselves carry none. The caps of ``limits`` still hold
    (``check_stored``)."""
    if len(rows) != len(news) or any(new.annotations for new in news):
        raise ValueError(
            "add_probed_images takes one list of converted rows per image, and "
            "images without NewAnnotation values"
        )
    return _write(news, [list(r) for r in rows], policy, limits)


def add_image(
    new: NewImage, policy: BatchPolicy | None = None, *, limits: AnnotationLimits = DEFAULT_LIMITS
) -> tuple[Image, bool]:
    """``add_images`` of one image, returning (image, created) with the image as a row."""
    [(image_id, created)] = add_images([new], policy, limits=limits)
    return Image.get_by_id(image_id), created


def _write(
    news: Sequence[NewImage],
    stored: list[list[tuple]],
    policy: BatchPolicy | None,
    limits: AnnotationLimits,
    batch: int | None = None,
) -> list[tuple[int, bool]]:
    """Check ``stored`` (the annotation rows of each image) against the caps, then insert the
    images that are new, in the caller's transaction or one of its own."""
    for rows in stored:  # before anything is written: a refusal stores nothing
        check_stored(rows, limits)
    by_new = {id(new): rows for new, rows in zip(news, stored)}
    now = now_us()
    # No savepoint of its own inside the caller's transaction: while one is open SQLite copies
    # every page the chunk changes into a sub-journal, which costs the bulk path about 15%.
    with nullcontext() if database.in_transaction() else write_tx():
        ids = existing_images([n.sha256 for n in news])
        fresh: list[NewImage] = []
        for new in news:
            if new.sha256 not in ids:
                ids[new.sha256] = 0  # the same bytes twice in this chunk: the first one wins
                fresh.append(new)
        if fresh:
            _insert(
                fresh,
                [batch] * len(fresh)
                if batch is not None
                else _assign_batches(fresh, now, policy or BatchPolicy()),
                ids,
                now,
                [by_new[id(n)] for n in fresh],
            )
    created = {id(n) for n in fresh}
    return [(ids[n.sha256], id(n) in created) for n in news]


def _insert(
    fresh: list[NewImage],
    batches: list[int],
    ids: dict[str, int],
    now: int,
    annotations: list[list[tuple]],
) -> None:
    devices = {d: ensure_device(d, now).id for d in {n.device_id for n in fresh}}
    roots = {r: file_root(r).id for r in {n.root for n in fresh}}
    # Each image's class set, given as it is inserted (its annotations' triggers then find
    # nothing to move); the stored rows start with their class_value.
    set_keys = [class_sets.set_key(row[0] for row in rows) for rows in annotations]
    set_ids = class_sets.ids_for(set_keys)
    stored = engine().stored_confidence
    image = row_shape(Image, IMAGE_FIELDS)
    rows = [
        (
            new.filename,
            new.storage_key,
            new.width,
            new.height,
            devices[new.device_id],
            batch_id,
            now,
            now,
            new.captured_at if new.captured_at is not None else now,
            new.sha256,
            new.byte_size,
            roots[new.root],
            new.model_id,
            new.model_version,
            new.source,
            set_ids[key],
            # Its confidence buckets likewise: the annotations' triggers find their bits set.
            confidence_bits.bits_of(
                stored(row[_CONFIDENCE]) for row in rows_of if row[_CONFIDENCE] is not None
            ),
            new.crc32,
        )
        + image.tail
        for new, batch_id, key, rows_of in zip(fresh, batches, set_keys, annotations)
    ]
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
            _insert_children(
                cursor, fresh, list(range(first, first + len(rows))), ids, now, annotations
            )
    else:
        image_ids = [engine().insert_id(cursor, image.sql, row) for row in rows]
        _insert_children(cursor, fresh, image_ids, ids, now, annotations)


def _insert_children(
    cursor,
    fresh: list[NewImage],
    image_ids: list[int],
    ids: dict[str, int],
    now: int,
    stored: list[list[tuple]],
) -> None:
    """The annotations (``annotation_values`` tuples, one list per image) and outbox rows of
    the new images, two ``executemany`` in all."""
    annotations, outbox = [], []
    ann_tail = (now, now) + row_shape(Annotation, ANNOTATION_INSERT_FIELDS).tail
    out_tail = row_shape(Outbox, OUTBOX_FIELDS).tail
    for new, image_id, rows in zip(fresh, image_ids, stored):
        ids[new.sha256] = image_id
        for values in rows:
            annotations.append((image_id, *values) + ann_tail)
        outbox.append(
            (
                image_id,
                "upload",
                "{}",
                new.byte_size,
                idempotency_key(new.device_id, new.sha256),
                now,
                now,
            )
            + out_tail
        )
    if annotations:
        cursor.executemany(row_shape(Annotation, ANNOTATION_INSERT_FIELDS).sql, annotations)
    cursor.executemany(row_shape(Outbox, OUTBOX_FIELDS).sql, outbox)
