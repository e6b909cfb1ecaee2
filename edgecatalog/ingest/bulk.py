"""Indexing many images in one transaction: ``add_images``, the bulk form of
``catalog.add_image`` used by the capture folder and ``scan``.

Same rows and rules as ``add_image`` (image, annotations, outbox ``upload`` row; the device's
collecting batch, completed when full; same bytes = the existing image), but the per-image
work is plain tuples through ``executemany`` and one ``INSERT`` each, instead of half a dozen
ORM queries: building peewee queries costs more than SQLite executing them, and a folder of
small images must index at disk speed. Batches, devices and roots come from ``catalog``'s own
helpers so the batch rules live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from peewee import Model

from ..catalog import (
    BatchPolicy,
    NewImage,
    annotation_columns,
    collecting_batch,
    ensure_device,
    file_root,
    idempotency_key,
    validate_annotation,
)
from ..db import write_tx
from ..models import Annotation, Batch, Image, Outbox, database
from ..timeutil import now_us


@cache
def insert_sql(model: type[Model]) -> tuple[str, dict[str, int], tuple[Any, ...]]:
    """INSERT statement, column position of each field, and the defaults, in column order."""
    fields = [f for f in model._meta.sorted_fields if f is not model._meta.primary_key]
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    marks = ", ".join("?" for _ in fields)
    sql = f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES ({marks})'
    return sql, {f.name: i for i, f in enumerate(fields)}, tuple(f.default for f in fields)


def row_of(model: type[Model], values: dict[str, Any]) -> list[Any]:
    _, position, defaults = insert_sql(model)
    row = [d() if callable(d) else d for d in defaults]
    for name, value in values.items():
        row[position[name]] = value
    return row


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
               validated: bool = False) -> list[tuple[int, bool]]:
    """Insert images with their annotations and outbox rows; one (image id, created) each.

    ``validated``: the annotations come from ``parse_metadata`` / ``parse_yolo``, which
    already ran ``validate_annotation`` on each. Runs in the caller's transaction when there
    is one (it nests), else in its own.
    """
    for new in () if validated else news:
        for i, ann in enumerate(new.annotations):
            validate_annotation(ann, f"annotations[{i}]")
    now = now_us()
    with write_tx():
        ids = existing_images([n.sha256 for n in news])
        fresh: list[NewImage] = []
        for new in news:
            if new.sha256 not in ids:
                ids[new.sha256] = 0  # the same bytes twice in this chunk: the first one wins
                fresh.append(new)
        _insert(fresh, _assign_batches(fresh, now, policy or BatchPolicy()), ids, now)
    created = {id(n) for n in fresh}
    return [(ids[n.sha256], id(n) in created) for n in news]


def _insert(fresh: list[NewImage], batches: list[int], ids: dict[str, int], now: int) -> None:
    """One INSERT per image (its id is needed), then the annotations and outbox rows at once."""
    devices = {d: ensure_device(d, now).id for d in {n.device_id for n in fresh}}
    roots = {r: file_root(r).id for r in {n.root for n in fresh}}
    cursor = database.cursor()
    image_sql = insert_sql(Image)[0]
    annotations, outbox = [], []
    for new, batch_id in zip(fresh, batches):
        cursor.execute(image_sql, row_of(Image, {
            "filename": new.filename, "storage_key": new.storage_key,
            "width": new.width, "height": new.height, "device": devices[new.device_id],
            "batch": batch_id, "created_at": now, "updated_at": now,
            "captured_at": new.captured_at if new.captured_at is not None else now,
            "sha256": new.sha256, "byte_size": new.byte_size, "root": roots[new.root],
            "path": new.path, "model_id": new.model_id,
            "model_version": new.model_version, "source": new.source}))
        image_id = ids[new.sha256] = cursor.lastrowid
        annotations += [row_of(Annotation, dict(annotation_columns(a, new.width, new.height),
                                                image=image_id, created_at=now,
                                                updated_at=now)) for a in new.annotations]
        outbox.append(row_of(Outbox, {
            "image": image_id, "kind": "upload", "payload": "{}", "byte_size": new.byte_size,
            "idempotency_key": idempotency_key(new.device_id, new.sha256),
            "created_at": now, "updated_at": now}))
    if annotations:
        cursor.executemany(insert_sql(Annotation)[0], annotations)
    if outbox:
        cursor.executemany(insert_sql(Outbox)[0], outbox)
