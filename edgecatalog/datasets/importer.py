"""``edgecatalog import``: a COCO or YOLO dataset (a ZIP or a folder) into the catalog through
the ingest path, all of it or nothing. No Flask.

Three steps, so that a malformed dataset stores nothing and a crash leaves nothing half:

1. read: every label file or JSON is read and checked whole (``read_coco``/``read_yolo``), and
   every image it names found in the source, before a byte is stored;
2. store: each image streamed into ``images/.incoming/`` and checked as an upload is (format
   from its bytes, dimensions, a whole container; ``ingest.store.IncomingFile``), its size
   against what COCO says, then renamed to its ``raw-data/`` key; the same bytes (already in
   the catalog, or twice in the dataset) are stored once. One ``syncfs`` makes them durable.
   A refusal here discards every file stored so far;
3. commit: one write transaction adds every image with its annotations (``ingest.bulk.
   add_images``, the one writer: dedup by content, the annotation caps, the outbox), in a
   batch of its own for the device (``--device-id``, else the configured one) under
   ``--project`` if given, then sets each image's split and marks it ``completed`` (a
   labelled dataset is reviewed). A crash before the commit leaves only files no row points
   at, which start-up reconciliation removes; the ingest lock is held shared meanwhile, so a
   service starting then does not take them for orphans.

An image already in the catalog keeps its own annotations and split (counted as a duplicate).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import IMPORT_SOURCE, AnnotationLimits, NewImage, closed_batch
from ..config import Settings
from ..db import write_tx
from ..errors import CatalogError
from ..ingest.bulk import add_images, existing_images
from ..ingest.durable import fsync_dir, fsync_file, syncfs, syncfs_available
from ..ingest.metadata import check_filename
from ..ingest.store import IncomingFile, IngestLock, StoredFile
from ..ingest.upload import default_device_id
from ..models import Batch, Image, Project
from ..timeutil import format_ts, now_us
from .items import ImportItem, ReadLimits
from .read_coco import read_coco
from .read_yolo import read_yolo
from .source import MalformedDataset, Source, open_source

log = logging.getLogger("edgecatalog.import")

READERS: dict[str, Callable[[Source, ReadLimits], list[ImportItem]]] = {
    "coco": read_coco,
    "yolo": read_yolo,
}
CHUNK = 1000  # images per add_images call inside the one transaction


@dataclass
class ImportReport:
    images: int = 0  # new in the catalog
    duplicates: int = 0  # already there (or twice in the dataset)
    annotations: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in sorted(self.splits.items())) or "none"
        return (
            f"imported {self.images} images ({splits}), {self.annotations} annotations, "
            f"{self.duplicates} duplicates in {self.seconds:.2f} s"
        )


@dataclass(frozen=True)
class _Stored:
    item: ImportItem
    file: StoredFile
    filename: str


def import_dataset(
    settings: Settings,
    path: Path,
    fmt: str,
    *,
    device_id: str | None = None,
    project: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import ``path`` as ``fmt``; ``MalformedDataset`` (nothing stored) when it cannot be."""
    started = time.monotonic()
    bounds = ReadLimits(
        settings["ingest.max_annotations"], AnnotationLimits.from_settings(settings)
    )
    source = open_source(path)
    lock = IngestLock(settings.images_dir)
    lock.shared()
    try:
        items = READERS[fmt](source, bounds)
        stored, duplicates = _store_all(source, items, settings, progress)
        try:
            device = device_id or default_device_id(settings)
            report = _commit(stored, settings.images_dir, device, project, path, bounds.limits)
        except BaseException:
            for one in stored:
                one.file.path.unlink(missing_ok=True)
            raise
    finally:
        lock.release()
        source.close()
    report.duplicates += duplicates
    report.seconds = time.monotonic() - started
    log.info("import of %s: %s", path, report.summary())
    return report


def _store_all(
    source: Source,
    items: Sequence[ImportItem],
    settings: Settings,
    progress: Callable[[int], None] | None,
) -> tuple[list[_Stored], int]:
    stored: list[_Stored] = []
    chunk: list[_Stored] = []  # stored, not yet sorted into new and duplicate
    seen: set[str] = set()
    duplicates = 0
    try:
        for start in range(0, len(items), CHUNK):
            chunk = []
            for item in items[start : start + CHUNK]:
                chunk.append(_store(source, item, settings))
            known = existing_images([one.file.sha256 for one in chunk])
            for one in chunk:
                if one.file.sha256 in known or one.file.sha256 in seen:
                    one.file.path.unlink(missing_ok=True)
                    duplicates += 1
                else:
                    seen.add(one.file.sha256)
                    stored.append(one)
            chunk = []
            if progress is not None:
                progress(len(items[start : start + CHUNK]))
    except BaseException:
        for one in (*stored, *chunk):
            one.file.path.unlink(missing_ok=True)
        raise
    _flush([one.file.path for one in stored])
    return stored, duplicates


def _store(source: Source, item: ImportItem, settings: Settings) -> _Stored:
    incoming = IncomingFile(
        settings.images_dir, max_bytes=settings["ingest.max_upload_bytes"], param=item.member
    )
    try:
        with incoming:
            for piece in source.chunks(item.member):
                incoming.write(piece)
            _, width, height = incoming.check()
            if item.size is not None and item.size != (width, height):
                raise MalformedDataset(
                    item.member,
                    f"is {width}x{height} pixels; its labels were made for "
                    f"{item.size[0]}x{item.size[1]}",
                )
            filename = _filename(item.member)
            file = incoming.persist(filename, sync_dir=False, sync_file=False)
            return _Stored(item, file, filename)
    except CatalogError as exc:  # what an upload of it would be told
        raise MalformedDataset(item.member, exc.message) from None


def _filename(member: str) -> str:
    name = os.path.basename(member)
    raw = name.encode("utf-8")
    if len(raw) > 200:
        _stem, suffix = os.path.splitext(name)
        name = raw[: 200 - len(suffix.encode())].decode("utf-8", "ignore") + suffix
    return check_filename(name, member)


def _flush(paths: list[Path]) -> None:
    """Every stored file and its folder on disk before any row points at it."""
    if not paths:
        return
    folder = paths[0].parent
    if syncfs_available() and syncfs(folder):
        return
    for path in paths:
        fsync_file(path)
    fsync_dir(folder)


def _commit(
    stored: list[_Stored],
    images_dir: Path,
    device_id: str,
    project: str | None,
    path: Path,
    limits: AnnotationLimits,
) -> ImportReport:
    report = ImportReport()
    now = now_us()
    with write_tx():
        project_id = _project(project, now) if project else None
        batch = closed_batch(device_id, f"import {path.name} {format_ts(now)}", project_id, now)
        created_by_split: dict[str, list[int]] = {}
        for start in range(0, len(stored), CHUNK):
            chunk = stored[start : start + CHUNK]
            news = [_new_image(one, images_dir, device_id) for one in chunk]
            results = add_images(news, limits=limits, batch=batch.id)
            for one, (image_id, created) in zip(chunk, results):
                if not created:  # stored meanwhile by another writer: its file is not needed
                    one.file.path.unlink(missing_ok=True)
                    report.duplicates += 1
                    continue
                created_by_split.setdefault(one.item.split, []).append(image_id)
                report.annotations += len(one.item.annotations)
        for split, ids in created_by_split.items():
            for start in range(0, len(ids), 500):
                Image.update(split=split, annotation_status="completed").where(
                    Image.id.in_(ids[start : start + 500])
                ).execute()
            report.splits[split] = len(ids)
        report.images = sum(report.splits.values())
        Batch.update(image_count=report.images).where(Batch.id == batch.id).execute()
    return report


def _project(name: str, now: int) -> int:
    found = Project.get_or_none(Project.name == name)
    if found is not None:
        return found.id
    return Project.create(name=name, description="", created_at=now, updated_at=now).id


def _new_image(one: _Stored, images_dir: Path, device_id: str) -> NewImage:
    file = one.file
    return NewImage(
        filename=one.filename,
        storage_key=file.storage_key,
        sha256=file.sha256,
        crc32=file.crc32,
        byte_size=file.byte_size,
        width=file.width,
        height=file.height,
        root=str(images_dir),
        device_id=device_id,
        source=IMPORT_SOURCE,
        annotations=one.item.annotations,
    )
