"""Thumbnails of stored images: made with Pillow on first request, then cached on disk. No Flask.

Cache layout: ``<data_dir>/thumbnails/<sha256[:2]>/<sha256>-<size>.jpg``. The key is the
image's content hash, so a new image never meets an old thumbnail; a source file changed in
place (newer mtime or a size other than the catalog's) is re-read, and if its bytes no longer
match the row's hash the thumbnail is served uncached rather than stored under the wrong key.

Memory is bounded three ways: the pixel count is checked from the header before any decoding
(a decompression bomb is a 422, not an allocation), JPEGs are decoded at reduced scale with
``draft``, and at most ``MAX_CONCURRENT`` thumbnails are decoded at once whatever the number
of server threads.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from .errors import UnprocessableImage

SIZES = (128, 256, 512)
JPEG_QUALITY = 82
MAX_CONCURRENT = 2
CACHE_DIRNAME = "thumbnails"
_JPEG_END = b"\xff\xd9"
_decoding = threading.BoundedSemaphore(MAX_CONCURRENT)
log = logging.getLogger("edgecatalog.thumbnails")


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    etag: str
    cached: bool  # False: served without caching because the file no longer matches its row


def cache_path(cache_dir: Path, sha256: str, size: int) -> Path:
    return cache_dir / sha256[:2] / f"{sha256}-{size}.jpg"


def remove_cached(cache_dir: Path, sha256: str) -> int:
    """Delete every cached size of one image (for retention, when its file is evicted)."""
    removed = 0
    for size in SIZES:
        try:
            cache_path(cache_dir, sha256, size).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def get_thumbnail(source: str, sha256: str, byte_size: int, size: int, cache_dir: Path,
                  max_pixels: int) -> Thumbnail:
    """The JPEG thumbnail of the file at ``source`` (already checked against its root)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    target = cache_path(cache_dir, sha256, size)
    data = _read_cached(target, source, byte_size)
    if data is not None:
        return Thumbnail(data, f"{sha256}-{size}", True)
    with _decoding:
        # Another thread may have made it while this one waited for a decoding slot.
        data = _read_cached(target, source, byte_size)
        if data is not None:
            return Thumbnail(data, f"{sha256}-{size}", True)
        with _open_source(source) as fh:
            actual = _hash_file(fh)
            fh.seek(0)
            data = render(fh, size, max_pixels)
    if actual != sha256:
        log.warning("file of image %s… changed on disk; thumbnail served uncached", sha256[:12])
        return Thumbnail(data, f"{actual}-{size}", False)
    _write_atomic(target, data)
    return Thumbnail(data, f"{sha256}-{size}", True)


def render(fh: BinaryIO, size: int, max_pixels: int) -> bytes:
    """Decode, orient (EXIF), shrink to fit ``size`` x ``size`` and encode as JPEG."""
    try:
        img = Image.open(fh)
    except Image.DecompressionBombError:
        raise _too_large() from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad input
        raise _unreadable(exc) from None
    with img:
        if img.width * img.height > max_pixels:
            raise _too_large(img.width, img.height, max_pixels)
        try:
            return _shrink(img, size)
        except (Image.DecompressionBombError, MemoryError):
            raise _too_large() from None
        except Exception as exc:  # noqa: BLE001 - as above: any decoder failure is "unreadable"
            raise _unreadable(exc) from None


def _shrink(img: Image.Image, size: int) -> bytes:
    img.draft("RGB", (size, size))  # JPEG only: let the decoder scale by 1/2..1/8 for free
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        # Palette and 1-bit images resize with nearest-neighbour only; widen them first.
        has_alpha = "transparency" in img.info or img.mode.endswith("A")
        img = img.convert("RGBA" if has_alpha else "RGB")
    img.thumbnail((size, size))  # keeps the aspect ratio, never enlarges
    # Orient after shrinking: exif_transpose copies the image, and a copy of the full-size
    # decode would double the peak memory. The box is square, so the result is the same.
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA"):
        # JPEG has no alpha: flatten on white, which is how a browser shows it on this page.
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        img = background
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def _too_large(width: int = 0, height: int = 0, limit: int = 0) -> UnprocessableImage:
    shown = f" ({width} x {height} pixels, limit {limit})" if width else ""
    return UnprocessableImage(f"image is too large to make a thumbnail from{shown}", "id",
                              code="IMAGE_TOO_LARGE")


def _unreadable(exc: Exception) -> UnprocessableImage:
    log.warning("cannot make a thumbnail: %s: %s", exc.__class__.__name__, exc)
    return UnprocessableImage("the stored file is not a readable image", "id",
                              code="IMAGE_UNREADABLE")


def _open_source(path: str) -> BinaryIO:
    # O_NOFOLLOW: the caller resolved the path; its last component must not become a link.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    return os.fdopen(fd, "rb")


def _hash_file(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _read_cached(target: Path, source: str, byte_size: int) -> bytes | None:
    """The cached thumbnail, unless missing, torn, or older than a changed source file."""
    try:
        cached_mtime = target.stat().st_mtime_ns
        src = os.stat(source)
    except OSError:
        return None
    if src.st_size != byte_size or src.st_mtime_ns > cached_mtime:
        return None
    try:
        data = target.read_bytes()
    except OSError:
        return None
    # Written without fsync (it is a cache): after a power cut a file may be cut short.
    return data if data.endswith(_JPEG_END) else None


def _write_atomic(target: Path, data: bytes) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)  # readers see the old state or the whole new file
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        # A full or read-only disk must not stop thumbnails from being served.
        log.warning("cannot cache thumbnail %s: %s", target.name, exc.strerror or exc)
