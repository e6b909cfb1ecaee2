"""Putting image bytes under ``<data_dir>/images/`` so that a crash at any point leaves either
nothing or the whole image.

Order of a store: stream into ``images/.incoming/`` while hashing, fsync, rename to its final
``raw-data/<uuid>_<filename>`` key, fsync the folder, then commit the row (``catalog.add_image``).
A crash before the commit leaves only a file the catalog does not know: ``reconcile`` removes
those (and stale temporaries) at start-up. A row is never committed before its file is durable.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import imagesize

from ..errors import UnsupportedMediaType, ValidationError

INCOMING = ".incoming"
CHUNK = 1024 * 1024
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


def sniff_format(head: bytes) -> str | None:
    for magic, name in SIGNATURES:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def image_size(path: Path, fmt: str) -> tuple[int, int]:
    """Width and height from the header; a file whose header does not parse is rejected."""
    try:
        width, height = imagesize.get(str(path))
    except Exception:  # imagesize raises assorted errors on truncated headers
        width, height = -1, -1
    if width <= 0 or height <= 0:
        raise ValidationError("image", f"the {fmt} header is damaged: no valid width and height")
    if width > 65535 or height > 65535:
        raise ValidationError("image", f"image dimensions {width}x{height} exceed 65535 pixels")
    return width, height


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store_stream(images_dir: Path, stream: BinaryIO, filename: str, *, max_bytes: int) -> StoredFile:
    """Copy a stream into the images folder durably; the caller then indexes or discards it."""
    incoming = images_dir / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        with open(tmp, "wb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    from ..errors import PayloadTooLarge

                    raise PayloadTooLarge(f"image is larger than {max_bytes} bytes", "image")
                if len(head) < 32:
                    head += chunk[: 32 - len(head)]
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise ValidationError("image", "the image part is empty")
        fmt = sniff_format(head)
        if fmt is None:
            raise UnsupportedMediaType(
                "image is not a supported image (JPEG, PNG, WebP or BMP, judged by its bytes)",
                "image")
        width, height = image_size(tmp, fmt)
        key = f"raw-data/{uuid.uuid4()}_{filename}"
        final = images_dir / key
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return StoredFile(key, final, digest.hexdigest(), size, width, height, fmt)


def discard(stored: StoredFile) -> None:
    stored.path.unlink(missing_ok=True)


def reconcile(images_dir: Path, known_paths: Iterable[str]) -> list[Path]:
    """Remove stored files no row points at, and stale temporaries. Returns what was removed.

    Only files under raw-data/ and .incoming/ are considered: those are the ones this module
    writes, so nothing an operator put elsewhere is ever touched.
    """
    known = set(known_paths)
    removed = []
    for sub in (INCOMING, "raw-data"):
        folder = images_dir / sub
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            rel = f"{sub}/{entry.name}"
            if entry.is_file() and (sub == INCOMING or rel not in known):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed
