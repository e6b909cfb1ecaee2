"""Putting image bytes under ``<data_dir>/images/`` so that a crash at any point leaves either
nothing or the whole image.

Order of a store: stream into ``images/.incoming/`` while hashing, fsync, rename to its final
``raw-data/<uuid>_<filename>`` key, fsync the folder, then commit the row (``ingest.bulk.add_images``, by
the caller).
A crash before the commit leaves only a file the catalog does not know: ``reconcile`` removes
those (and stale temporaries) at start-up. A row is never committed before its file is durable.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import logging
import os
import time
import uuid
import zlib
from array import array
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import imagesize

from ..errors import PayloadTooLarge, ValidationError
from .durable import fsync_dir
from .imagecheck import structure_problem

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("edgecatalog.ingest.upload")

INCOMING = ".incoming"
LOCK_FILE = ".ingest.lock"
# Formats identified from their first bytes, never from the file name.
SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
)


@dataclass(frozen=True)
class StoredFile:
    storage_key: str  # relative to images/, e.g. raw-data/<uuid>_<filename>
    path: Path
    sha256: str
    byte_size: int
    width: int
    height: int
    format: str
    crc32: int


def sniff_format(head: bytes) -> str | None:
    for magic, name in SIGNATURES:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def image_size(path: Path, fmt: str) -> tuple[int, int]:
    """Width and height from the header; a file whose header does not parse is rejected."""
    return _checked_size(str(path), fmt)


def image_size_bytes(data: bytes, fmt: str) -> tuple[int, int]:
    """``image_size`` for bytes already in memory (the capture folder reads each file once)."""
    return _checked_size(io.BytesIO(data), fmt)


def _checked_size(source: str | BinaryIO, fmt: str) -> tuple[int, int]:
    try:
        width, height = imagesize.get(source)
    except Exception:  # noqa: BLE001 - imagesize raises assorted errors on truncated headers
        width, height = -1, -1
    return checked_dimensions(width, height, fmt)


def checked_dimensions(width: int, height: int, fmt: str) -> tuple[int, int]:
    """The size a header gave, or the error that says why it is not acceptable."""
    if width <= 0 or height <= 0:
        raise ValidationError("image", f"the {fmt} header is damaged: no valid width and height")
    if width > 65535 or height > 65535:
        raise ValidationError("image", f"image dimensions {width}x{height} exceed 65535 pixels")
    return width, height


class IncomingFile:
    """An image being received into ``images/.incoming/``: bytes are pushed in with ``write``
    (hashed and counted on the way), then ``check`` reads the format and size from the bytes,
    and ``persist`` makes the file durable under its final key. ``discard`` (or leaving the
    ``with`` block by an exception) removes whatever was written.

    Push-style, so a multipart parser can hand over each piece of a part as it arrives and no
    body is ever held in memory.
    """

    def __init__(self, images_dir: Path, *, max_bytes: int, param: str = "image") -> None:
        self.images_dir = images_dir
        self.max_bytes = max_bytes
        self.param = param
        incoming = images_dir / INCOMING
        self.tmp = incoming / f"{uuid.uuid4().hex}.part"
        # Held open across write() calls, closed by persist() or discard(); readable too, so
        # check() reads the header back through it instead of opening the file twice more.
        try:
            self._out: BinaryIO | None = open(self.tmp, "w+b")  # noqa: SIM115
        except FileNotFoundError:  # the first upload (or someone removed the folder)
            incoming.mkdir(parents=True, exist_ok=True)
            self._out = open(self.tmp, "w+b")  # noqa: SIM115
        self._digest = hashlib.sha256()
        self.crc32 = 0
        self._head = b""
        self.byte_size = 0
        self.format = ""
        self.width = self.height = 0

    def __enter__(self) -> IncomingFile:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()

    def write(self, chunk: bytes) -> None:
        self.byte_size += len(chunk)
        if self.byte_size > self.max_bytes:
            raise PayloadTooLarge(f"{self.param} is larger than {self.max_bytes} bytes", self.param)
        if len(self._head) < 32:
            self._head += chunk[: 32 - len(self._head)]
        self._digest.update(chunk)
        self.crc32 = zlib.crc32(chunk, self.crc32)
        assert self._out is not None, "write after persist or discard"
        self._out.write(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def check(self) -> tuple[str, int, int]:
        """Format (from the first bytes), width/height (from the header) and a whole
        container (``imagecheck``), or the error."""
        assert self._out is not None, "check after persist or discard"
        self._out.flush()
        if self.byte_size == 0:
            raise ValidationError(self.param, f"the {self.param} part is empty")
        fmt = sniff_format(self._head)
        if fmt is None:
            # A 400 like every other bad part (the upload contract asks for it): the request's
            # media type, multipart, was right; the part's content is what is wrong.
            raise ValidationError(
                self.param,
                f"{self.param} is not a supported image (JPEG, PNG, WebP or BMP, judged by "
                "its bytes)",
            )
        self.width, self.height = _checked_size(self._out, fmt)
        problem = structure_problem(self._out, fmt, self.byte_size)
        self._out.seek(0, io.SEEK_END)  # where the next write() would go, as before the check
        if problem is not None:
            raise ValidationError(self.param, problem)
        self.format = fmt
        return fmt, self.width, self.height

    def persist(
        self, filename: str, *, sync_dir: bool = True, sync_file: bool = True
    ) -> StoredFile:
        """Rename to ``raw-data/<uuid>_<filename>``, then fsync the file and the folder
        (unless the caller flushes them itself before committing the row, as the upload's
        group commit and the dataset import do with one ``syncfs``). The rename may come
        first: nothing points at the new name until the row is committed, after both."""
        if not self.format:
            self.check()
        assert self._out is not None
        self._out.flush()
        key = f"raw-data/{uuid.uuid4()}_{filename}"
        final = self.images_dir / key
        try:
            os.replace(self.tmp, final)
        except FileNotFoundError:  # no raw-data/ yet (a missing .part fails again below)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp, final)
        try:
            if sync_file:
                os.fsync(self._out.fileno())
            if sync_dir:
                fsync_dir(final.parent)
        except BaseException:
            final.unlink(missing_ok=True)  # renamed already: discard() would miss it
            raise
        finally:
            self._out.close()
            self._out = None
        return StoredFile(
            key,
            final,
            self.sha256,
            self.byte_size,
            self.width,
            self.height,
            self.format,
            self.crc32,
        )

    def discard(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        self.tmp.unlink(missing_ok=True)


def discard(stored: StoredFile) -> None:
    stored.path.unlink(missing_ok=True)


def reconcile(
    images_dir: Path, known_paths: Iterable[str], *, min_age_seconds: float = 0.0
) -> list[Path]:
    """Remove stored files no row points at, and stale temporaries. Returns what was removed.

    Only files under raw-data/ and .incoming/ are considered: those are the ones this module
    writes, so nothing an operator put elsewhere is ever touched. Files modified within the
    last ``min_age_seconds`` are left alone: another process may be about to commit them.
    """
    known = KnownPaths(known_paths)
    return reconcile_orphans(images_dir, known, min_age_seconds=min_age_seconds)


class KnownPaths:
    """The set of stored paths, as sorted 64-bit digests: 8 bytes a path instead of ~100, so a
    million-image catalog is reconciled in a few MB. A digest collision can only make an orphan
    look known (it is kept), never make a known file look orphaned."""

    def __init__(self, paths: Iterable[str]) -> None:
        self._sorted = array("q", sorted(self.digest(p) for p in paths))

    @staticmethod
    def digest(path: str) -> int:
        return int.from_bytes(
            hashlib.blake2b(path.encode(), digest_size=8).digest(), "big", signed=True
        )

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        value = self.digest(path)
        i = bisect.bisect_left(self._sorted, value)
        return i < len(self._sorted) and self._sorted[i] == value


def reconcile_orphans(
    images_dir: Path, known: Container[str], *, min_age_seconds: float = 0.0
) -> list[Path]:
    """``reconcile`` with any container of known relative paths (e.g. ``KnownPaths``)."""
    cutoff = time.time() - min_age_seconds
    removed = []
    for sub in (INCOMING, "raw-data"):
        folder = images_dir / sub
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if sub != INCOMING and f"{sub}/{entry.name}" in known:
                    continue
                if min_age_seconds and entry.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
                log.info("removed %s: no catalog row points at it", entry.path)
    return removed


class IngestLock:
    """Which processes may be writing into images/ right now, through ``flock`` on
    ``images/.ingest.lock``.

    Every process that stores files holds it shared for as long as it may write (the service
    for its lifetime, ``scan`` while it runs). Start-up reconciliation asks for it exclusively
    without waiting: if it gets it, no one else is mid-ingest and every orphan can go; if not,
    it removes only orphans older than a grace period, because a younger one may be a file
    another process is about to commit. The kernel drops the lock when a process dies, so a
    SIGKILLed service never leaves it held.
    """

    def __init__(self, images_dir: Path) -> None:
        images_dir.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(images_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)

    def try_exclusive(self) -> bool:
        if fcntl is None:  # pragma: no cover - not POSIX: always assume someone else is writing
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def shared(self) -> None:
        """Hold the lock shared (downgrading an exclusive hold, if this process had one)."""
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:  # an app dropped by a test releases its hold
        try:
            self.release()
        # Interpreter shutdown: the kernel drops the lock anyway, and there may be no logging.
        except Exception:  # noqa: BLE001, S110
            pass
