"""Reading one capture from disk without touching the database: bytes, SHA-256, format,
dimensions and its sidecar (annotations already converted to their stored columns). Pure and
thread-safe, so a folder is probed by worker processes or threads (``pool``) while one thread
writes the catalog; a ``Probe`` crosses from a process as plain tuples (``to_wire``).

Files are opened beneath their root without following links (``safeopen``): a link, a FIFO or
a folder with an image's name is a rejected capture with its reason. The probe keeps the
identity of what it read (device, inode, size, mtime), so move mode stores that very file.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from .. import safeopen
from ..catalog import DEFAULT_LIMITS, AnnotationLimits, BatchPolicy, annotation_values
from ..config import Settings
from ..errors import ValidationError
from .imagecheck import jpeg_fast_size, structure_problem
from .metadata import Metadata
from .sidecars import ClassNames, find_sidecar, read_sidecar
from .store import checked_dimensions, image_size_bytes, sniff_format
from .upload import default_device_id


@dataclass(frozen=True)
class CaptureOptions:
    """What indexing a capture needs from the settings."""

    mode: str  # index | move
    images_dir: Path
    device_id: str
    policy: BatchPolicy
    max_annotations: int
    max_bytes: int
    settle_seconds: float
    classes: tuple[str, ...] = ()
    limits: AnnotationLimits = DEFAULT_LIMITS

    @classmethod
    def from_settings(
        cls, settings: Settings, mode: str | None = None, settle_seconds: float | None = None
    ) -> CaptureOptions:
        return cls(
            mode=mode or settings["capture.mode"],
            images_dir=settings.images_dir,
            device_id=default_device_id(settings),  # the same default as uploads
            policy=BatchPolicy.from_settings(settings),
            max_annotations=settings["ingest.max_annotations"],
            max_bytes=settings["ingest.max_upload_bytes"],
            settle_seconds=(
                settings["capture.settle_seconds"] if settle_seconds is None else settle_seconds
            ),
            classes=tuple(settings["capture.classes"]),
            limits=AnnotationLimits.from_settings(settings),
        )


class FileStat:
    """A file as listed: where (absolute), relative to its root ('/'-separated), and its size
    and mtime at that moment. ``where`` is the path as text; ``path`` makes the ``Path`` only
    when asked (a scan lists thousands of files and needs few Path objects)."""

    __slots__ = ("_path", "mtime_ns", "rel", "size", "where")

    def __init__(self, path: Path | str, rel: str, size: int, mtime_ns: int) -> None:
        self.where = os.fspath(path)
        self._path = path if isinstance(path, Path) else None
        self.rel, self.size, self.mtime_ns = rel, size, mtime_ns

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = Path(self.where)
        return self._path

    def __repr__(self) -> str:
        return f"FileStat({self.where!r}, {self.rel!r}, {self.size}, {self.mtime_ns})"

    @classmethod
    def of(cls, path: Path, root: Path) -> FileStat:
        """Stat ``path``; ValueError if it is not under ``root`` (both absolute, normalized)."""
        prefix = str(root).rstrip(os.sep) + os.sep
        text = str(path)
        if not text.startswith(prefix):
            raise ValueError(f"{path} is not under {root}")
        st = os.lstat(text)  # a link is listed as itself, and rejected when it is read
        return cls(path, text[len(prefix) :].replace(os.sep, "/"), st.st_size, st.st_mtime_ns)

    def settled(self, settle_seconds: float, now: float | None = None) -> bool:
        """Not written within ``settle_seconds``. An mtime ahead of the clock by more than
        that was not set by a write just now: a copy that kept a camera's fast clock, or our
        clock set back since. Waiting for the clock to reach it could take hours."""
        now = time.time() if now is None else now
        return abs(now - self.mtime_ns / 1e9) >= settle_seconds


@dataclass
class Probe:
    file: FileStat
    sha256: str = ""
    width: int = 0
    height: int = 0
    error: str = ""  # why the image is rejected
    changing: bool = False  # gone or still being written: try again later
    sidecar: FileStat | None = None
    metadata: Metadata | None = None  # its annotations are stored from ``rows``
    sidecar_error: str = ""
    rows: tuple[tuple, ...] = ()  # catalog.annotation_values of each sidecar annotation
    ident: tuple[int, int, int, int] | None = None  # (dev, inode, size, mtime_ns) read
    crc32: int | None = None  # of the bytes read, beside the SHA-256

    @property
    def root(self) -> str:
        return safeopen.root_of(self.file.where, self.file.rel)

    def to_wire(self) -> tuple:
        """Plain tuples of str/int/float (no Path, no dataclass): cheap to pickle from a
        probe process. The file itself is not sent back: the receiver has it."""
        side, meta = self.sidecar, self.metadata
        return (
            self.sha256,
            self.width,
            self.height,
            self.error,
            self.changing,
            None if side is None else (side.where, side.rel, side.size, side.mtime_ns),
            None
            if meta is None
            else (
                meta.model_id,
                meta.model_version,
                meta.source,
                meta.device_id,
                meta.filename,
                meta.captured_at,
            ),
            self.sidecar_error,
            self.rows,
            self.ident,
            self.crc32,
        )

    @classmethod
    def from_wire(cls, file: FileStat, wire: tuple, hint: FileStat | None) -> Probe:
        sha, width, height, error, changing, side, meta, sidecar_error, rows, ident, crc = wire
        sidecar = None
        if side is not None:
            sidecar = hint if hint is not None and hint.rel == side[1] else FileStat(*side)
        return cls(
            file,
            sha,
            width,
            height,
            error,
            changing,
            sidecar,
            None if meta is None else Metadata(*meta),
            sidecar_error,
            rows,
            ident,
            crc,
        )


def reason_of(exc: ValidationError) -> str:
    return f"{exc.param}: {exc.message}" if exc.param else exc.message


def probe_image(
    file: FileStat,
    options: CaptureOptions,
    classes: ClassNames,
    sidecar: FileStat | None = None,
    look: bool = True,
) -> Probe:
    """Read one image; its sidecar is ``sidecar`` (from a folder listing) or, with ``look``,
    whatever ``find_sidecar`` finds next to it."""
    probe = Probe(file)
    try:
        data, probe.ident = _read_listed(file, options.max_bytes)
    except FileNotFoundError:
        probe.changing = True
        return probe
    except safeopen.UnsafeFile as exc:
        probe.error = f"{exc.reason}: a capture is taken only from a regular file"
        return probe
    except (OSError, ValueError) as exc:
        probe.error = f"cannot be read: {getattr(exc, 'strerror', None) or exc}"
        return probe
    if len(data) != file.size:
        # Written to since it was listed (or larger than the limit, which the size says).
        probe.changing = len(data) <= options.max_bytes
        probe.error = (
            ""
            if probe.changing
            else f"larger than {options.max_bytes} bytes (ingest.max_upload_bytes)"
        )
        return probe
    probe.error = _check_image(probe, data)
    if not probe.error:
        probe.sha256 = hashlib.sha256(data).hexdigest()
        probe.crc32 = zlib.crc32(data)
        if sidecar is None and look:
            sidecar = _find_sidecar(file)
        if sidecar is not None and sidecar.settled(options.settle_seconds):
            # An unsettled sidecar is still being written: it is attached later, when late.
            probe.sidecar = sidecar
            try:
                meta = read_sidecar(
                    probe.root,
                    sidecar.rel,
                    classes,
                    options.max_annotations,
                    size=sidecar.size,
                    limits=options.limits,
                )
            except ValidationError as exc:
                probe.sidecar_error = reason_of(exc)
            else:
                # Converted here, in a probe worker, rather than by the one writing thread.
                probe.rows = tuple(
                    annotation_values(a, probe.width, probe.height) for a in meta.annotations
                )
                probe.metadata = meta
    return probe


def _read_listed(file: FileStat, max_bytes: int) -> tuple[bytes, tuple[int, int, int, int]]:
    """The file's bytes, up to one more than listed (so growth shows) and max_bytes + 1, and
    the identity of the file read (from its descriptor, after the read).

    Unbuffered reads of the size the listing gave: ``read(max_bytes + 1)`` on a buffered file
    allocates the whole 50 MiB limit for every 100 KB capture, which cost more than hashing it.
    """
    want = min(file.size, max_bytes) + 1
    root = safeopen.root_of(file.where, file.rel)
    with safeopen.open_file(root, file.rel, buffering=0) as fh:
        data = fh.read(want)
        while len(data) < want:  # a short read (or EOF, which says so with b"")
            more = fh.read(want - len(data))
            if not more:
                break
            data += more
        st = os.fstat(fh.fileno())
    return data, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _check_image(probe: Probe, data: bytes) -> str:
    if not data:
        return "the file is empty"
    fmt = sniff_format(data[:32])
    if fmt is None:
        return "not a supported image (JPEG, PNG, WebP or BMP, judged by its bytes)"
    try:
        fast = jpeg_fast_size(data) if fmt == "JPEG" else None
        if fast is not None:  # a whole, ordinary JPEG header: size and structure in one walk
            probe.width, probe.height = checked_dimensions(*fast, fmt)
            return ""
        probe.width, probe.height = image_size_bytes(data, fmt)
    except ValidationError as exc:
        return exc.message
    # The same whole-container check as uploads: a header alone does not make an image.
    return structure_problem(io.BytesIO(data), fmt, len(data)) or ""


def _find_sidecar(file: FileStat) -> FileStat | None:
    path = find_sidecar(file.path)
    if path is None:
        return None
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    rel_dir = os.path.dirname(file.rel)
    return FileStat(
        path, f"{rel_dir}/{path.name}" if rel_dir else path.name, st.st_size, st.st_mtime_ns
    )
