"""Disk pressure: evicting the files of synced images, oldest first, and refusing new data
when only unsynced data is left to fill the disk. No Flask.

"Crossed" means the data disk is fuller than ``[retention] max_disk_percent`` or has less
than ``[retention] min_free_bytes`` free. Eviction deletes the file and keeps the row with
``evicted_at`` set (the list then gives an empty ``image_url`` and /files answers 410). Only
``synced`` images and ``skipped`` ones (the selection rules keep them local: they are never
to be sent, so their bytes are as dispensable) are ever evicted, oldest first, one as the
other; pending, deferred, quarantined and local_only files stay: a site
gateway evicts only what its own upstream confirmed, and with no upstream evicts nothing
(uploads then get 507 and its devices keep their queues). A pinned image's file is never
evicted, whatever the disk: a reviewer asked for it to stay.

One eviction at a time among every process on the catalog (the engine's job lock
``retention``: a file lock in ``data_dir`` on SQLite, an advisory lock on PostgreSQL), so two
``serve`` processes on one shared data folder never free the same room twice.

The disk figures come from a source function returning (total, free) bytes, replaceable
with ``use_disk_usage`` so tests can simulate a full disk without filling one.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import safeopen, thumbnails
from .config import Settings
from .db import write_tx
from .engines import current as engine
from .errors import InsufficientStorage
from .models import FileRoot, Image, database
from .timeutil import now_us

log = logging.getLogger("edgecatalog.retention")
DiskUsage = Callable[[Path], "tuple[int, int]"]
EVICT_CHUNK = 32  # rows marked per transaction before the disk is measured again
_lock = threading.Lock()  # one eviction at a time per process (and the job lock across them)
EVICTABLE = ("synced", "skipped")  # sync states whose files may go
LOCK_WAIT_SECONDS = 60.0  # how long an upload waits for another process's eviction


def _real_disk_usage(path: Path) -> tuple[int, int]:
    usage = shutil.disk_usage(path)
    return usage.total, usage.free


_source: DiskUsage = _real_disk_usage


def use_disk_usage(source: DiskUsage | None) -> None:
    """Replace the disk figures source (None restores the real one)."""
    global _source
    _source = source or _real_disk_usage


def disk_usage(settings: Settings) -> tuple[int, int]:
    return _source(settings.data_dir)


def shortfall(settings: Settings, total: int, free: int, incoming: int = 0) -> int:
    """Bytes that must be freed so ``incoming`` more bytes keep both limits; 0 if none."""
    free_after = free - incoming
    by_free = settings["retention.min_free_bytes"] - free_after
    allowed_used = total * settings["retention.max_disk_percent"] / 100.0
    by_percent = (total - free_after) - allowed_used
    return max(0, int(by_free), int(-(-by_percent // 1)))


@dataclass
class EvictionReport:
    evicted: int = 0
    freed_bytes: int = 0
    still_short: int = 0  # bytes still missing once nothing evictable is left
    image_ids: list[int] = field(default_factory=list)


def _candidates(limit: int) -> list[Image]:
    query = (
        Image.select(
            Image.id,
            Image.storage_key,
            Image.byte_size,
            Image.sha256,
            FileRoot.path.alias("root_path"),
        )
        .join(FileRoot, on=(Image.root == FileRoot.id))
        .where(Image.sync_state.in_(EVICTABLE) & Image.evicted_at.is_null() & ~Image.pinned)
        .order_by(Image.created_at, Image.id)
        .limit(limit)
    )
    return list(query.objects())


def _remove_file(root: str, rel: str) -> int:
    """Delete one image file beneath its root, following no link (a link planted in its
    place is removed itself, never what it points at). Returns bytes freed."""
    try:
        return safeopen.unlink(root, rel)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        log.warning("not evicting %s beneath %s: %s", rel, root, exc)
        return 0


def evict_if_needed(settings: Settings, incoming: int = 0) -> EvictionReport:
    """Evict synced files, oldest first, until the limits hold with ``incoming`` more bytes."""
    report = EvictionReport()
    total, free = disk_usage(settings)
    if shortfall(settings, total, free, incoming) <= 0:
        # Room enough (nearly always): no lock, no lock file. Every upload asks first, and
        # this answer is no staler than one given under the lock, which is released before
        # the bytes are written anyway.
        return report
    with (
        _lock,
        engine().job_lock(database, "retention", settings.data_dir, LOCK_WAIT_SECONDS) as got,
    ):
        if not got:
            log.warning(
                "another process has been evicting for %.0f s; not waiting", LOCK_WAIT_SECONDS
            )
            total, free = disk_usage(settings)
            report.still_short = max(shortfall(settings, total, free, incoming), 0)
            return report
        while True:
            total, free = disk_usage(settings)
            need = shortfall(settings, total, free, incoming)
            if need <= 0:
                return report
            candidates = _candidates(EVICT_CHUNK)
            if not candidates:
                report.still_short = need
                return report
            chunk, planned = [], 0
            for img in candidates:  # as few as the shortfall needs, by their recorded sizes
                chunk.append(img)
                planned += img.byte_size
                if planned >= need:
                    break
            # The row is marked before the file goes: a crash in between leaves a stray file
            # (harmless) rather than a row whose file vanished without saying so.
            now = now_us()
            with write_tx():
                Image.update(evicted_at=now).where(
                    Image.id.in_([img.id for img in chunk])
                    & Image.evicted_at.is_null()
                    & Image.sync_state.in_(EVICTABLE)
                    & ~Image.pinned  # pinned since it was picked: it stays
                ).execute()
                marked = {
                    row.id
                    for row in Image.select(Image.id).where(
                        Image.id.in_([img.id for img in chunk]) & (Image.evicted_at == now)
                    )
                }
            chunk = [img for img in chunk if img.id in marked]
            thumbs = settings.data_dir / thumbnails.CACHE_DIRNAME
            for img in chunk:
                report.freed_bytes += _remove_file(img.root_path, img.storage_key)
                # Its thumbnails go too: /files/{id}/thumbnail answers 410 like the file.
                thumbnails.remove_cached(thumbs, img.sha256)
                report.evicted += 1
                report.image_ids.append(img.id)
            log.info("evicted %d synced image file(s) to free disk space", len(chunk))


def ensure_ingest_space(settings: Settings, incoming_bytes: int) -> None:
    """Make room for ``incoming_bytes`` by eviction; raise InsufficientStorage (507) when the
    limits would still be crossed, i.e. only unsynced data is left to fill the disk."""
    report = evict_if_needed(settings, max(incoming_bytes, 0))
    if report.still_short:
        total, free = disk_usage(settings)
        raise InsufficientStorage(
            f"not enough disk space to store {incoming_bytes} more bytes: {free} of {total} "
            f"bytes free, limits are {settings['retention.max_disk_percent']:g}% used and "
            f"{settings['retention.min_free_bytes']} bytes free, and every stored image is "
            "still waiting to be synced, so none can be evicted",
            "image",
        )


class SpaceGate:
    """For a producer that can wait (the capture watcher): ``has_room()`` is False while only
    unsynced data fills the disk; the pause and the resume are each logged once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paused = False

    def has_room(self, incoming_bytes: int = 0) -> bool:
        try:
            ensure_ingest_space(self.settings, incoming_bytes)
        except InsufficientStorage as exc:
            if not self.paused:
                log.warning("capture paused, files stay where they are: %s", exc.message)
                self.paused = True
            return False
        if self.paused:
            log.info("capture resumed: disk space is back within the retention limits")
            self.paused = False
        return True
