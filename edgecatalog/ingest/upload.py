"""The upload path of ``POST /device/images/upload``, and the start-up reconciliation that
makes it crash-safe. No Flask: the view hands over the body stream and its headers.

``ingest_upload`` is the one function an upload goes through. Its order is the crash-safety
argument: the body is streamed into ``images/.incoming/`` (nothing in memory), checked
(metadata, file name, format, size), fsync'ed and renamed to ``raw-data/<uuid>_<filename>``,
and only then is the row committed with its annotations (``ingest.bulk.add_images``, through the
group commit of ``ingest.commit``, which flushes the folder holding the rename first). A crash
before the commit leaves a file no row points at, which ``reconcile_at_startup`` removes; a
crash after it leaves the whole image, which a retried upload finds as a duplicate.

An upload made with a device key (``device_id`` given: the device the key is bound to) is held
to that device: its metadata may name no other ``device_id`` (403 ``DEVICE_MISMATCH``) and no
annotation may claim review (``source`` "manual" or "import", 403), and the device may fill only
its ``[ingest] device_disk_share`` of the catalog's room (``DeviceShare``, 507) while other
devices have images. A bearer token (a person, the gateway's sync) may name any device.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from peewee import SQL

from ..catalog import DEFAULT_LIMITS, REVIEWED_SOURCES, AnnotationLimits, BatchPolicy, NewImage
from ..engines import current as engine
from ..errors import (
    DeviceMismatch,
    DeviceShareExceeded,
    PayloadTooLarge,
    ReviewForbidden,
    ValidationError,
)
from ..models import FileRoot, Image, database
from ..retention import disk_usage, ensure_ingest_space
from . import multipart, store
from .bulk import add_images
from .commit import UPLOADS
from .metadata import MAX_METADATA_BYTES, Metadata, check_filename, parse_metadata_text

log = logging.getLogger("edgecatalog.ingest.upload")

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
# Orphans younger than this are kept when another process may be ingesting (see IngestLock).
RECONCILE_GRACE_SECONDS = 3600.0


class DeviceShare:
    """Bytes of not-evicted images per device, kept in memory, for ``[ingest]
    device_disk_share``: a device may hold at most share x (bytes of every not-evicted image +
    free bytes on the data disk) while another device has images too.

    Per upload this is two dict reads and one statvfs (7 us). The totals are one GROUP BY over
    the image table (``NOT INDEXED``: at 1M images the table scan took 0.45-1.5 s against
    1.8 s in device-index order), read at the first upload that needs them, and again when an
    upload finds them older than ``REFRESH_SECONDS`` (or 50 reads' time, whichever is longer:
    at most 2% of a core at 1M images under steady uploads, nothing when idle) on a thread of
    its own, so evictions and other processes' images count and no upload waits. Between
    reads, each image this process stores is added as it is committed. A refusal decided on
    totals older than ``RECHECK_SECONDS`` (or 20 reads' time) reads them again first (on the
    request when a read is quick, else in the background for the next try), so an eviction
    that made room does not keep a device refused for long. No index was added for this: a
    covering partial index made the read 74 ms at 1M images but cost every insert 5-7 us.
    """

    REFRESH_SECONDS = 60.0
    RECHECK_SECONDS = 5.0
    QUICK_READ_SECONDS = 0.1  # a recheck this fast is made on the request itself

    @staticmethod
    def _sql() -> str:
        # One pass over the table (SQLite: NOT INDEXED, or it walks an index and looks up
        # every row).
        image = engine().scan_whole("image")
        return (
            f"SELECT d.device_id, t.n FROM (SELECT device_id, sum(byte_size) AS n FROM {image} "
            "WHERE evicted_at IS NULL GROUP BY device_id) t JOIN device d ON d.id = t.device_id"
        )

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.share = float(settings["ingest.device_disk_share"])
        self._bytes: dict[str, int] = {}
        self._total = 0
        self._read_at: float | None = None  # time.monotonic() of the last read, None = never
        self._read_seconds = 0.0  # how long that read took
        self._since_read: list[tuple[str, int]] | None = None  # adds while a read runs
        self._lock = threading.Lock()  # the totals
        self._reading = threading.Lock()  # one read at a time

    def check(self, device_id: str, incoming: int) -> None:
        """Raise DeviceShareExceeded (507) when ``incoming`` more bytes from ``device_id``
        would put it over its share."""
        if self.share >= 1.0:
            return
        if self._read_at is None:
            self.read(unless_read=True)
        elif self._age() >= max(self.REFRESH_SECONDS, 50 * self._read_seconds):
            self._read_in_background()
        over = self._over(device_id, incoming)
        if over is not None and self._age() > max(self.RECHECK_SECONDS, 20 * self._read_seconds):
            if self._read_seconds <= self.QUICK_READ_SECONDS:
                self.read()
                over = self._over(device_id, incoming)
            else:
                self._read_in_background()
        if over is None:
            return
        used, room, whole = over
        raise DeviceShareExceeded(
            f"device {device_id!r} stores {used} bytes of images; with {incoming} more it "
            f"would pass its share of {room} bytes ([ingest] device_disk_share "
            f"{self.share:g} of {whole} bytes: every stored image plus free space) while other "
            "devices have images too",
            "device_id",
        )

    def _age(self) -> float:
        return time.monotonic() - (self._read_at or 0.0)

    def _over(self, device_id: str, incoming: int) -> tuple[int, int, int] | None:
        with self._lock:
            used, total = self._bytes.get(device_id, 0), self._total
        if total - used <= 0:
            return None  # the only device with images: the disk's own limits apply
        _, free = disk_usage(self.settings)
        whole = total + max(free, 0)
        room = int(self.share * whole)
        return (used, room, whole) if used + incoming > room else None

    def added(self, device_id: str, nbytes: int) -> None:
        """An image of ``nbytes`` was committed for ``device_id``."""
        with self._lock:
            if self._read_at is None and self._since_read is None:
                return  # never read: the first read will count it
            self._bytes[device_id] = self._bytes.get(device_id, 0) + nbytes
            self._total += nbytes
            if self._since_read is not None:
                self._since_read.append((device_id, nbytes))

    def read(self, unless_read: bool = False) -> None:
        """Read the totals from the database (on the calling thread's connection).
        ``unless_read``: not when another thread read them while this one waited (the first
        uploads arrive together: one read, not one full scan per server thread)."""
        with self._reading:
            if unless_read and self._read_at is not None:
                return
            with self._lock:
                self._since_read = []
            started = time.monotonic()
            try:
                rows = database.execute_sql(self._sql()).fetchall()
            except BaseException:
                with self._lock:
                    self._since_read = None
                raise
            with self._lock:
                totals = {device: int(n or 0) for device, n in rows}
                # Images committed while the read ran may be in it or not; counting them
                # again errs on the strict side until the next read.
                for device, n in self._since_read or ():
                    totals[device] = totals.get(device, 0) + n
                self._bytes, self._total = totals, sum(totals.values())
                self._since_read = None
                self._read_at = time.monotonic()
                self._read_seconds = self._read_at - started

    def _read_in_background(self) -> None:
        if self._reading.locked():
            return

        def run() -> None:
            try:
                with database.connection_context():
                    self.read()
            except Exception as exc:  # noqa: BLE001 - keep the old totals; say why at DEBUG
                log.debug("device share totals not refreshed: %s", exc)

        threading.Thread(target=run, name="device-share", daemon=True).start()


@dataclass(frozen=True)
class UploadConfig:
    images_dir: Path
    max_upload_bytes: int
    max_annotations: int
    default_device_id: str
    batch_policy: BatchPolicy
    # Raises InsufficientStorage (507) when the bytes would not fit; None = no check.
    space_check: Callable[[int], None] | None = None
    # Per-device totals for [ingest] device_disk_share; None = no per-device limit.
    device_share: DeviceShare | None = None
    limits: AnnotationLimits = DEFAULT_LIMITS

    def add_images(self, news: list[NewImage]) -> list[tuple[int, bool]]:
        """``bulk.add_images`` with this configuration's batch policy and caps: one upload's
        image, or a group commit round's."""
        return add_images(news, self.batch_policy, limits=self.limits)

    @classmethod
    def from_settings(cls, settings: Any, device_share: DeviceShare | None = None) -> UploadConfig:
        return cls(
            images_dir=settings.images_dir,
            max_upload_bytes=int(settings["ingest.max_upload_bytes"]),
            max_annotations=int(settings["ingest.max_annotations"]),
            default_device_id=default_device_id(settings),
            batch_policy=BatchPolicy.from_settings(settings),
            space_check=functools.partial(ensure_ingest_space, settings),
            device_share=device_share,
            limits=AnnotationLimits.from_settings(settings),
        )


@dataclass(frozen=True)
class UploadResult:
    image_id: int
    batch_id: int
    storage_key: str
    duplicate: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "batch_id": self.batch_id,
            "storage_key": self.storage_key,
            "duplicate": self.duplicate,
        }


def default_device_id(settings: Mapping[str, Any]) -> str:
    """``[device] id``, else this machine's host name."""
    return settings["device.id"] or socket.gethostname() or "edge"


def ingest_upload(
    config: UploadConfig,
    body: BinaryIO,
    content_type: str,
    content_length: int | None,
    device_id: str | None = None,
    *,
    device_review: bool = False,
) -> UploadResult:
    """Store one uploaded image with its metadata; the same bytes again return the existing
    image with ``duplicate=True``. Raises a ``CatalogError`` (and stores nothing) on bad input.

    ``device_id`` is the device a device key is bound to (None for a bearer token): the
    upload is then that device's, whatever its metadata would like (see the module docstring).
    ``device_review``: that device may send its reviewers' "manual" annotations (a device
    syncing to a site gateway).
    """
    if content_length is not None and content_length > config.max_upload_bytes:
        # Refused from the header alone: not one byte of the body is read.
        raise PayloadTooLarge(
            f"the upload body is {content_length} bytes; the limit is {config.max_upload_bytes}",
            "body",
        )
    share = config.device_share if device_id is not None else None
    # Checks that need the disk (free space, the device's share) belong here: nothing has been
    # written yet. The share first: a device over it must not make anything be evicted.
    if share is not None:
        share.check(device_id, content_length or 0)
    if config.space_check is not None:
        config.space_check(content_length or 0)  # evicts synced files first, else 507
    parts = multipart.read_upload(
        body,
        content_type,
        images_dir=config.images_dir,
        max_body_bytes=config.max_upload_bytes,
        field_limits={"metadata": MAX_METADATA_BYTES},
    )
    if parts.image is None:
        parts.discard()
        raise ValidationError("image", "the upload has no 'image' part")
    with parts.image as incoming:  # leaving by an exception removes the received file
        meta = parse_metadata_text(
            parts.fields.get("metadata", b""),
            max_annotations=config.max_annotations,
            limits=config.limits,
        )
        if device_id is not None:
            check_device_upload(meta, device_id, review=device_review)
        if parts.image_filename:
            check_filename(parts.image_filename, "image.filename")
        fmt, _, _ = incoming.check()
        if share is not None and content_length is None:
            share.check(device_id, incoming.byte_size)  # a chunked body: now its size is known
        filename = meta.filename or parts.image_filename or f"image.{EXTENSIONS[fmt]}"
        existing = find_by_sha256(incoming.sha256)
        if existing is not None:
            incoming.discard()  # never fsync'ed: a duplicate costs no disk flush
            return existing
        # The file and its folder are flushed by the group commit's flush stage, shared with
        # the uploads that arrive meanwhile, before the row's transaction begins.
        stored = incoming.persist(filename, sync_dir=False, sync_file=False)
    owner = meta.device_id or device_id or config.default_device_id
    result = _index(config, stored, filename, meta, owner)
    if not result.duplicate and config.device_share is not None:
        config.device_share.added(owner, stored.byte_size)
    return result


def check_device_upload(meta: Metadata, device_id: str, *, review: bool = False) -> None:
    """What a device key may not do: write as another device, or mark an annotation as human
    review (a camera's annotations are inferences; "manual" is what a person's edit sets, and
    is what sidecar re-reads leave alone). Checked after parsing, before anything is stored.
    ``review``: the device forwards its own catalog to a site gateway, whose "manual"
    annotations are its reviewers' (``[site] enabled``)."""
    if meta.device_id and meta.device_id != device_id:
        log.warning(
            "upload refused: a device key bound to device %r named device_id %r in its metadata",
            device_id,
            meta.device_id,
        )
        raise DeviceMismatch(
            f"this device key belongs to device {device_id!r}; metadata.device_id "
            f"{meta.device_id!r} must be that id or left out",
            "metadata.device_id",
        )
    for i, ann in enumerate(() if review else meta.annotations):
        # Any spelling: " Manual" would read as human review to a person looking at it.
        if ann.source.strip().casefold() in REVIEWED_SOURCES:
            raise ReviewForbidden(
                f"annotation source {ann.source!r} marks a reviewed label (a person's, or a "
                "labelled dataset's import), which a device key cannot claim; leave source "
                'out (it becomes "model") or name the model',
                f"metadata.annotations[{i}].source",
            )


def _index(
    config: UploadConfig, stored: store.StoredFile, filename: str, meta: Metadata, device_id: str
) -> UploadResult:
    new = NewImage(
        filename=filename,
        storage_key=stored.storage_key,
        sha256=stored.sha256,
        crc32=stored.crc32,
        byte_size=stored.byte_size,
        width=stored.width,
        height=stored.height,
        root=str(config.images_dir),
        device_id=device_id,
        captured_at=meta.captured_at,
        model_id=meta.model_id,
        model_version=meta.model_version,
        source=meta.source,
        annotations=meta.annotations,
    )
    try:
        image_id, created = UPLOADS.run(
            lambda: config.add_images([new])[0],
            sync_folders=[stored.path.parent],
            sync_files=[stored.path],
            # The uploads of a round are written by one add_images call.
            together=(config.add_images, new),
        )
    except BaseException:
        store.discard(stored)
        raise
    if not created:  # the same bytes were committed by a concurrent upload meanwhile
        store.discard(stored)
    batch_id, storage_key = database.execute_sql(
        "SELECT batch_id, storage_key FROM image WHERE id = ?", (image_id,)
    ).fetchone()
    return UploadResult(image_id, batch_id, storage_key, not created)


def find_by_sha256(sha256: str) -> UploadResult | None:
    row = database.execute_sql(
        "SELECT id, batch_id, storage_key FROM image WHERE sha256 = ?", (sha256,)
    ).fetchone()
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
    known = {
        path
        for (path,) in Image.select(Image.storage_key)
        .where(in_roots & Image.filename.in_(_json_values(names)))
        .tuples()
        if path in paths
    }
    misses = sorted(paths - known)
    if misses:
        # Anything else (a moved capture under another name, a true orphan) by its path: one
        # scan, paid only when such files exist; a miss here is what makes a file an orphan.
        known.update(
            path
            for (path,) in Image.select(Image.storage_key)
            .where(in_roots & Image.storage_key.in_(_json_values(misses)))
            .tuples()
        )
    return known


def _json_values(values: list[str]):
    """``IN (SELECT ...)``: any number of values in one bound parameter."""
    table, args = engine().values_table(values, "j")
    return SQL(f"(SELECT j.value FROM {table})", args)


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
        log.warning(
            "removed %d file(s) under %s that no catalog row points at (left by an "
            "interrupted ingest)",
            len(removed),
            images_dir,
        )
    if not exclusive:
        log.info(
            "another process is ingesting into %s; kept orphans younger than %.0f s",
            images_dir,
            grace,
        )
    return lock, removed


__all__ = [
    "DeviceShare",
    "UploadConfig",
    "UploadResult",
    "check_device_upload",
    "default_device_id",
    "find_by_sha256",
    "ingest_upload",
    "reconcile_at_startup",
]
