"""Thumbnails of stored images: made with Pillow on first request, then cached on disk. No Flask.

Cache layout: ``<data_dir>/thumbnails/<sha256[:2]>/<sha256>-<size>.jpg``. The key is the
image's content hash, so a new image never meets an old thumbnail; a source file changed in
place (newer mtime or a size other than the catalog's) is re-read, and if its bytes no longer
match the row's hash the thumbnail is served uncached rather than stored under the wrong key.

One decode per image: when any size of an image is missing, the image is decoded once (a JPEG
at reduced scale with ``draft``), every size in ``SIZES`` is made from that one decode (largest
first, each smaller one from the one before) and all are cached. Requests for other sizes of
the same image that arrive meanwhile wait for that decode (``_State.inflight``) instead of
starting their own.

Memory and server threads are bounded: the pixel count is checked from the header before any
decoding or waiting (a decompression bomb is a 422, not an allocation); decodes of large images
run on a fixed pool of ``DECODE_WORKERS`` thread, so one full-size bitmap (4 bytes a pixel) is
alive at a time whatever the number of server threads; and at most ``max_waiting`` requests
(the caller derives it from the server's threads) may wait for that pool, a later one is
refused at once with ``ThumbnailsBusy`` (503 with Retry-After) so list requests always find a
free thread. A refused request still leaves its image in the pool's queue while the queue is
short (``MAX_QUEUED``, ``QUEUE_SECONDS``), so its retry finds the thumbnail made. A small image
(``SMALL_PIXELS`` decoded, ``SMALL_BYTES`` read: a camera frame, milliseconds) is decoded in the
request's own thread, as any request does its work, and is never refused. Cached thumbnails
never wait.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import logging
import math
import os
import queue
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from .errors import ThumbnailsBusy, UnprocessableImage

SIZES = (128, 256, 512)
JPEG_QUALITY = 82
# One decoding thread for large images. On the 2-core machine a second one filled a grid of 24
# fresh 2400x1800 PNGs in 1.6 s instead of 2.7 s (benchmarks/thumbnails.py --http 24
# --grid-case PNG:2400x1800 --workers 2), but it doubles the peak (two full-size bitmaps: 184
# instead of 92 MB at the 24 MP cap, a fifth of a 1 GB Pi) and leaves no core to ingest, sync
# and the API; camera frames do not go through the pool at all (``SMALL_PIXELS``).
DECODE_WORKERS = 1
# Requests that may wait for a decode when the caller gives no bound (the view derives its
# bound from the server's threads).
DEFAULT_MAX_WAITING = 2
# A waiting request gives up (503) after this long: far beyond one decode at the pixel cap on a
# Pi (about 4 s), so only a stuck decoder gets here.
WAIT_TIMEOUT = 60.0
# Images a refused request may leave queued: without it a refused thumbnail is only made when
# its retry (a second later at least) is let in, and a grid of fresh images filled several
# times slower than the decoder allows. Bounded in count, one page of the grid (each queued
# image holds a file descriptor), and in the work ahead (from recent decode times), so the
# queue is no backlog that outlasts a page's retries.
MAX_QUEUED = 48
QUEUE_SECONDS = 10.0
# An image that decodes to at most this many pixels (a 4 MiB bitmap; a JPEG counts at its
# draft scale) from a file of at most this many bytes is made in the request's thread: about
# 10 ms here, no longer than other requests take, so sending it through the pool would only
# turn a grid of new camera frames into 503s and retries a second later.
SMALL_PIXELS = 1024 * 1024
SMALL_BYTES = 1024 * 1024
# Pillow's thumbnail(): first an integer box reduce() to no less than twice the target, then a
# bicubic resample, so the only copy of the full-size bitmap is 1/gap^2 of it at most.
REDUCING_GAP = 2.0
CACHE_DIRNAME = "thumbnails"
_JPEG_END = b"\xff\xd9"
log = logging.getLogger("edgecatalog.thumbnails")


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    etag: str
    cached: bool  # False: served without caching because the file no longer matches its row


@dataclass(frozen=True)
class _Made:
    """What one decode produced: every size, and the hash of the bytes actually read."""

    sizes: dict[int, bytes]
    sha256: str
    cached: bool


@dataclass(frozen=True)
class _Job:
    future: Future[_Made]
    small: bool  # decoded in the thread of the request that started it, not on the pool


@dataclass
class _State:
    """The process's decoding pool and its bookkeeping, all guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: queue.SimpleQueue[tuple[_Image, int, _Job]] = field(default_factory=queue.SimpleQueue)
    workers: list[threading.Thread] = field(default_factory=list)
    # (cache dir, sha256) -> the one decode of that image that is queued or running, in the
    # order they were queued.
    inflight: dict[tuple[str, str], _Job] = field(default_factory=dict)
    waiting: int = 0  # requests blocked on a decode (each holds a server thread)
    decodes: int = 0
    refused: int = 0
    # Recent decode time on the pool (None before the first), for Retry-After and the queue's
    # bound.
    mean_seconds: float | None = None


_state = _State()


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


def stats() -> dict[str, int]:
    """Counters since the process started: images decoded, requests refused as busy, and the
    requests waiting and decodes queued or running now."""
    with _state.lock:
        return {
            "decodes": _state.decodes,
            "refused_busy": _state.refused,
            "waiting": _state.waiting,
            "in_flight": len(_state.inflight),
        }


def get_thumbnail(
    source: BinaryIO,
    src: os.stat_result,
    sha256: str,
    byte_size: int,
    size: int,
    cache_dir: Path,
    max_pixels: int,
    *,
    max_waiting: int = DEFAULT_MAX_WAITING,
) -> Thumbnail:
    """The JPEG thumbnail of the open file ``source`` (opened beneath its root without
    following links; ``src`` is its fstat). Raises ``ThumbnailsBusy`` when it is not cached, is
    not small, and ``max_waiting`` requests already wait for the pool."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    data = _read_cached(cache_path(cache_dir, sha256, size), src, byte_size)
    if data is not None:
        return Thumbnail(data, f"{sha256}-{size}", True)
    # A bomb is refused from its header here, in this thread: it must not queue behind real
    # decodes, nor be answered "busy" when the true answer is "never".
    source.seek(0)
    with _open_checked(source, max_pixels) as img:
        small = _decoded_pixels(img) <= SMALL_PIXELS and src.st_size <= SMALL_BYTES
    image = _Image((os.fspath(cache_dir), sha256), src, sha256, byte_size, cache_dir, max_pixels)
    made = _decode_once(image, source, small, max_waiting)
    if not made.cached:
        return Thumbnail(made.sizes[size], f"{made.sha256}-{size}", False)
    return Thumbnail(made.sizes[size], f"{sha256}-{size}", True)


@dataclass(frozen=True)
class _Image:
    """What a decode needs to know of the image besides its open file."""

    key: tuple[str, str]  # (cache dir, sha256): one decode at a time per key
    src: os.stat_result
    sha256: str
    byte_size: int
    cache_dir: Path
    max_pixels: int


def _decode_once(image: _Image, source: BinaryIO, small: bool, max_waiting: int) -> _Made:
    """Every size of the image, from the one decode of it that is running or queued, or from a
    new one: in this thread for a small image, else on the pool if this request may wait."""
    with _state.lock:
        job = _state.inflight.get(image.key)
        if job is None and small:
            job = _state.inflight[image.key] = _Job(Future(), small=True)
            mine, counted = True, False
        elif job is not None and job.small:
            # A small decode in another request's thread: milliseconds, no place in the bound.
            mine, counted = False, False
        else:
            # A large image: this request would hold its thread until the pool gets to it.
            if _state.waiting >= max(1, max_waiting):
                _state.refused += 1
                queued = len(_queue_locked())
                backlog = (_state.mean_seconds or 0.0) * queued
                if job is None and queued < MAX_QUEUED and backlog <= QUEUE_SECONDS:
                    _submit_locked(image, source)
                raise ThumbnailsBusy(_retry_after_locked(image.key))
            if job is None:
                job = _submit_locked(image, source)
            _state.waiting += 1
            mine, counted = False, True
    if mine:
        outcome = _settle(image, job, source, on_pool=False)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
    try:
        return job.future.result(timeout=WAIT_TIMEOUT)
    except concurrent.futures.TimeoutError:
        # Checked before OSError reaches the view: on 3.11+ this is the builtin TimeoutError.
        with _state.lock:
            raise ThumbnailsBusy(_retry_after_locked(image.key)) from None
    finally:
        if counted:
            with _state.lock:
                _state.waiting -= 1


def _submit_locked(image: _Image, source: BinaryIO) -> _Job:
    job = _state.inflight[image.key] = _Job(Future(), small=False)
    # The worker reads its own descriptor of the same open file: the request may give up
    # waiting, or not wait at all, and close its handle while the decode goes on.
    _state.jobs.put((image, os.dup(source.fileno()), job))
    while len(_state.workers) < DECODE_WORKERS:
        # Daemon threads: stopping the service must not wait for a queue of thumbnails (nor
        # does it lose anything: cache files are written whole or not at all).
        worker = threading.Thread(
            target=_work, name=f"thumbnail-{len(_state.workers)}", daemon=True
        )
        worker.start()
        _state.workers.append(worker)
    return job


def _work() -> None:
    while True:
        image, fd, job = _state.jobs.get()
        with os.fdopen(fd, "rb") as fh:
            _settle(image, job, fh, on_pool=True)


def _settle(image: _Image, job: _Job, fh: BinaryIO, on_pool: bool) -> _Made | BaseException:
    """Run one decode and hand its outcome, a result or an error, to everyone who waits."""
    try:
        outcome: _Made | BaseException = _make_all(image, fh, on_pool)
    except BaseException as exc:  # noqa: BLE001 - the waiters get it; the pool thread lives on
        outcome = exc
    with _state.lock:
        # Forgotten before the answer: a request from now on finds the cache (or, after a
        # failure, starts afresh) instead of joining a finished decode.
        if _state.inflight.get(image.key) is job:
            del _state.inflight[image.key]
    if isinstance(outcome, BaseException):
        job.future.set_exception(outcome)
    else:
        job.future.set_result(outcome)
    return outcome


def _queue_locked() -> list[tuple[str, str]]:
    """The images queued for the pool or being decoded there, oldest first."""
    return [key for key, job in _state.inflight.items() if not job.small]


def _retry_after_locked(key: tuple[str, str]) -> int:
    # The earliest the decodes ahead of this image (or the whole queue, when it is not queued)
    # can be done, in whole seconds as the header wants: rounded down, and 1 s before any
    # decode was timed, because a retry that comes too early costs a 1 ms refusal and one that
    # comes too late a blank tile. At most 30 s, so a page's bounded retries outlast a queue.
    order = _queue_locked()
    ahead = order.index(key) + 1 if key in order else max(1, len(order))
    return max(1, min(30, math.floor((_state.mean_seconds or 0.0) * ahead)))


def _make_all(image: _Image, fh: BinaryIO, on_pool: bool) -> _Made:
    """Every size of one image from one decode, cached (unless the file no longer matches its
    row)."""
    sha256 = image.sha256
    cached = {
        n: _read_cached(cache_path(image.cache_dir, sha256, n), image.src, image.byte_size)
        for n in SIZES
    }
    if all(data is not None for data in cached.values()):
        # Made by the decode before this one, after this request looked at the cache.
        return _Made({n: d for n, d in cached.items() if d is not None}, sha256, True)
    fh.seek(0)  # a pool worker's offset is shared with the request's, which read the header
    actual = _hash_file(fh)
    fh.seek(0)
    started = time.monotonic()
    try:
        made = render_all(fh, image.max_pixels)
    finally:
        took = time.monotonic() - started
        with _state.lock:
            _state.decodes += 1
            if on_pool:  # what Retry-After promises is the pool's pace
                last = _state.mean_seconds
                _state.mean_seconds = took if last is None else 0.5 * last + 0.5 * took
    log.debug(
        "thumbnails of image %s… made from one decode in %.0f ms%s",
        sha256[:12],
        took * 1000,
        "" if on_pool else " (small: in the request's thread)",
    )
    if actual != sha256:
        log.warning("file of image %s… changed on disk; thumbnail served uncached", sha256[:12])
        return _Made(made, actual, False)
    for n, data in made.items():
        if cached[n] is None:
            _write_atomic(cache_path(image.cache_dir, sha256, n), data)
    # What is on disk is what is served, so the ETag always names the same bytes.
    return _Made({n: cached[n] or made[n] for n in SIZES}, sha256, True)


def render_all(fh: BinaryIO, max_pixels: int) -> dict[int, bytes]:
    """Decode once, orient (EXIF), and make the JPEG of every size in ``SIZES``, each fitting
    ``size`` x ``size``."""
    with _open_checked(fh, max_pixels) as img:
        try:
            return _shrink_all(img)
        except (Image.DecompressionBombError, MemoryError):
            raise _too_large() from None
        except Exception as exc:  # noqa: BLE001 - as above: any decoder failure is "unreadable"
            raise _unreadable(exc) from None


def _open_checked(fh: BinaryIO, max_pixels: int) -> Image.Image:
    """The image with only its header read, refused if it has more than ``max_pixels``."""
    try:
        img = Image.open(fh)
    except Image.DecompressionBombError:
        raise _too_large() from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad input
        raise _unreadable(exc) from None
    if img.width * img.height > max_pixels:
        img.close()
        raise _too_large(img.width, img.height, max_pixels)
    return img


def _decoded_pixels(img: Image.Image) -> int:
    """The pixels the decode will hold: a JPEG's at the scale ``draft`` will pick (as Pillow
    picks it: the largest of 1/8, 1/4, 1/2 that keeps the largest thumbnail covered)."""
    if img.format not in ("JPEG", "MPO"):
        return img.width * img.height
    fit_w, fit_h = _fit(img.size, max(SIZES))
    room = min(img.width // fit_w, img.height // fit_h)
    scale = next((s for s in (8, 4, 2) if room >= s), 1)
    return math.ceil(img.width / scale) * math.ceil(img.height / scale)


def _shrink_all(img: Image.Image) -> dict[int, bytes]:
    largest = max(SIZES)
    # JPEG only: let the decoder scale by 1/2..1/8 for free, to no less than the largest
    # thumbnail's own size (not the square box: a panorama then scales as far as it can).
    img.draft("RGB", _fit(img.size, largest))
    if img.mode == "1":
        img = img.convert("L")  # 1 byte a pixel, as the bilevel decode is already
    elif img.mode not in ("RGB", "RGBA", "L", "LA"):
        # Palette and other images resize with nearest-neighbour only; widen them first.
        has_alpha = "transparency" in img.info or img.mode.endswith("A")
        img = img.convert("RGBA" if has_alpha else "RGB")
    # In place: the full-size bitmap is dropped as soon as the largest size exists.
    img.thumbnail((largest, largest), reducing_gap=REDUCING_GAP)
    # Orient after shrinking: exif_transpose copies the image, and a copy of the full-size
    # decode would double the peak memory. The box is square, so the result is the same.
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA"):
        # JPEG has no alpha: flatten on white, which is how a browser shows it on this page.
        background = Image.new("RGB", img.size, (255, 255, 255))
        rgba = img.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        img = background
    made: dict[int, bytes] = {}
    for size in sorted(SIZES, reverse=True):
        img.thumbnail((size, size), reducing_gap=REDUCING_GAP)  # never enlarges
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        made[size] = out.getvalue()
    return made


def _fit(size: tuple[int, int], box: int) -> tuple[int, int]:
    width, height = size
    scale = min(box / width, box / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _too_large(width: int = 0, height: int = 0, limit: int = 0) -> UnprocessableImage:
    shown = f" ({width} x {height} pixels, limit {limit})" if width else ""
    return UnprocessableImage(
        f"image is too large to make a thumbnail from{shown}", "id", code="IMAGE_TOO_LARGE"
    )


def _unreadable(exc: Exception) -> UnprocessableImage:
    log.warning("cannot make a thumbnail: %s: %s", exc.__class__.__name__, exc)
    return UnprocessableImage(
        "the stored file is not a readable image", "id", code="IMAGE_UNREADABLE"
    )


def _hash_file(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _read_cached(target: Path, src: os.stat_result, byte_size: int) -> bytes | None:
    """The cached thumbnail, unless missing, torn, or older than a changed source file."""
    try:
        cached_mtime = target.stat().st_mtime_ns
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
