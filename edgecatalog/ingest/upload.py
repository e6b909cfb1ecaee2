"""The upload path of ``POST /device/images/upload``, and the start-up reconciliation that
makes it crash-safe. No Flask: the view hands over the body stream and its headers.

``ingest_upload`` is the one function an upload goes through. Its order is the crash-safety
argument: the body is streamed into ``images/.incoming/`` (nothing in memory), checked
(metadata, file name, format, size), fsync'ed and renamed to ``raw-data/<uuid>_<filename>``,
and only then is the row committed with its annotations (``catalog.add_image``, through the
group commit of ``ingest.commit``, which flushes the folder holding the rename first). A crash
before the commit leaves a file no row points at, which ``reconcile_at_startup`` removes; a
crash after it leaves the whole image, which a retried upload finds as a duplicate.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from peewee import SQL

from ..catalog import BatchPolicy, NewImage
from ..errors import PayloadTooLarge, ValidationError
from ..models import FileRoot, Image, database
from ..retention import ensure_ingest_space
from . import multipart, store
from .bulk import add_images
from .commit import UPLOADS
from .metadata import MAX_METADATA_BYTES, Metadata, check_filename, parse_metadata_text

log = logging.getLogger("edgecatalog.ingest.upload")

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
# Orphans younger than this are kept when another process may be ingesting (see IngestLock).
RECONCILE_GRACE_SECONDS = 3600.0


@dataclass(frozen=True)
class UploadConfig:
    images_dir: Path
    max_upload_bytes: int
    max_annotations: int
    default_device_id: str
    batch_policy: BatchPolicy
    # Raises InsufficientStorage (507) when the bytes would not fit; None = no check.
    space_check: Callable[[int], None] | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> UploadConfig:
        return cls(
            images_dir=settings.images_dir,
            max_upload_bytes=int(settings["ingest.max_upload_bytes"]),
            max_annotations=int(settings["ingest.max_annotations"]),
            default_device_id=default_device_id(settings),
            batch_policy=BatchPolicy.from_settings(settings),
            space_check=functools.partial(ensure_ingest_space, settings),
        )


@dataclass(frozen=True)
class UploadResult:
    image_id: int
    batch_id: int
    storage_key: str
    duplicate: bool

    def to_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "batch_id": self.batch_id,
                "storage_key": self.storage_key, "duplicate": self.duplicate}


def default_device_id(settings: Mapping[str, Any]) -> str:
    """``[device] id``, else this machine's host name."""
    return settings["device.id"] or socket.gethostname() or "edge"


def ingest_upload(config: UploadConfig, body: BinaryIO, content_type: str,
                  content_length: int | None) -> UploadResult:
    """Store one uploaded image with its metadata; the same bytes again return the existing
    image with ``duplicate=True``. Raises a ``CatalogError`` (and stores nothing) on bad input."""
    if content_length is not None and content_length > config.max_upload_bytes:
        # Refused from the header alone: not one byte of the body is read.
        raise PayloadTooLarge(
            f"the upload body is {content_length} bytes; the limit is {config.max_upload_bytes}",
            "body")
    # A check that needs the disk (free space) belongs here: nothing has been written yet.
    if config.space_check is not None:
        config.space_check(content_length or 0)  # evicts synced files first, else 507
    parts = multipart.read_upload(
        body, content_type, images_dir=config.images_dir,
        max_body_bytes=config.max_upload_bytes, field_limits={"metadata": MAX_METADATA_BYTES})
    if parts.image is None:
        parts.discard()
        raise ValidationError("image", "the upload has no 'image' part")
    with parts.image as incoming:  # leaving by an exception removes the received file
        meta = parse_metadata_text(parts.fields.get("metadata", b""),
                                   max_annotations=config.max_annotations)
        if parts.image_filename:
            check_filename(parts.image_filename, "image.filename")
        fmt, _, _ = incoming.check()
        filename = meta.filename or parts.image_filename or f"image.{EXTENSIONS[fmt]}"
        existing = find_by_sha256(incoming.sha256)
        if existing is not None:
            incoming.discard()  # never fsync'ed: a duplicate costs no disk flush
            return existing
        # The file and its folder are flushed by the group commit, once for every upload
        # in the round, before the row is committed.
        stored = incoming.persist(filename, sync_dir=False, sync_file=False)
    return _index(config, stored, filename, meta)


def _index(config: UploadConfig, stored: store.StoredFile, filename: str,
           meta: Metadata) -> UploadResult:
    try:
        image_id, created = UPLOADS.run(lambda: add_images([NewImage(
            filename=filename, storage_key=stored.storage_key,
            sha256=stored.sha256, byte_size=stored.byte_size, width=stored.width,
            height=stored.height, root=str(config.images_dir), path=stored.storage_key,
            device_id=meta.device_id or config.default_device_id, captured_at=meta.captured_at,
            model_id=meta.model_id, model_version=meta.model_version, source=meta.source,
            annotations=meta.annotations,
        )], config.batch_policy, validated=True)[0], sync_folders=[stored.path.parent],
            sync_files=[stored.path])
    except BaseException:
        store.discard(stored)
        raise
    if not created:  # the same bytes were committed by a concurrent upload meanwhile
        store.discard(stored)
    batch_id, storage_key = database.execute_sql(
        "SELECT batch_id, storage_key FROM image WHERE id = ?", (image_id,)).fetchone()
    return UploadResult(image_id, batch_id, storage_key, not created)


def find_by_sha256(sha256: str) -> UploadResult | None:
    row = database.execute_sql(
        "SELECT id, batch_id, storage_key FROM image WHERE sha256 = ?", (sha256,)).fetchone()
    if row is None:
        return None
    return UploadResult(row[0], row[1], row[2], True)


def stored_among_files(images_dir: Path) -> set[str]:
    """Which files under ``images/raw-data`` a row points at. The files on disk are listed
    first and only they are looked up, so start-up costs what the folder holds, not what the
    catalog holds (loading every path took ~2 s at a million images)."""
    wanted = os.path.realpath(images_dir)
    roots = [r.id for r in FileRoot.select() if os.path.realpath(r.path) == wanted]
    folder = images_dir / "raw-data"
    if not roots or not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        paths = {f"raw-data/{e.name}" for e in entries if e.is_file(follow_symlinks=False)}
    if not paths:
        return set()
    # An upload's key is raw-data/<uuid>_<filename>: the filename index finds those rows.
    names = sorted({p.split("_", 1)[1] for p in paths if "_" in p})
    in_roots = Image.root.in_(roots)
    known = {path for (path,) in Image.select(Image.path).where(
        in_roots & Image.filename.in_(_json_values(names))).tuples() if path in paths}
    misses = sorted(paths - known)
    if misses:
        # Anything else (a moved capture under another name, a true orphan) by its path: one
        # scan, paid only when such files exist; a miss here is what makes a file an orphan.
        known.update(path for (path,) in Image.select(Image.path).where(
            in_roots & Image.path.in_(_json_values(misses))).tuples())
    return known


def _json_values(values: list[str]):
    """``IN (SELECT value FROM json_each(?))``: any number of values in one bound parameter."""
    return SQL("(SELECT value FROM json_each(?))", (json.dumps(values),))


def reconcile_at_startup(images_dir: Path) -> tuple[store.IngestLock, list[Path]]:
    """Remove files under images/raw-data and images/.incoming that no row points at.

    Returns the ingest lock, held shared: the caller keeps it for as long as it may ingest.
    """
    lock = store.IngestLock(images_dir)
    exclusive = lock.try_exclusive()
    grace = 0.0 if exclusive else RECONCILE_GRACE_SECONDS
    known = stored_among_files(images_dir)
    removed = store.reconcile_orphans(images_dir, known, min_age_seconds=grace)
    lock.shared()
    if removed:
        log.warning("removed %d file(s) under %s that no catalog row points at (left by an "
                    "interrupted ingest)", len(removed), images_dir)
    if not exclusive:
        log.info("another process is ingesting into %s; kept orphans younger than %.0f s",
                 images_dir, grace)
    return lock, removed


__all__ = [
    "UploadConfig",
    "UploadResult",
    "default_device_id",
    "find_by_sha256",
    "ingest_upload",
    "reconcile_at_startup",
]
