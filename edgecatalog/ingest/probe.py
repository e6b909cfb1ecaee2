"""Reading one capture from disk without touching the database: bytes, SHA-256, format,
dimensions and its sidecar. Pure and thread-safe, so a folder is probed by a small pool of
threads (reads and hashing release the GIL) while one thread writes the catalog.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..catalog import BatchPolicy
from ..config import Settings
from ..errors import ValidationError
from .imagecheck import structure_problem
from .metadata import Metadata
from .sidecars import ClassNames, find_sidecar, read_sidecar
from .store import image_size_bytes, sniff_format
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

    @classmethod
    def from_settings(cls, settings: Settings, mode: str | None = None,
                      settle_seconds: float | None = None) -> CaptureOptions:
        return cls(
            mode=mode or settings["capture.mode"],
            images_dir=settings.images_dir,
            device_id=default_device_id(settings),  # the same default as uploads
            policy=BatchPolicy.from_settings(settings),
            max_annotations=settings["ingest.max_annotations"],
            max_bytes=settings["ingest.max_upload_bytes"],
            settle_seconds=(settings["capture.settle_seconds"] if settle_seconds is None
                            else settle_seconds),
            classes=tuple(settings["capture.classes"]),
        )


@dataclass(frozen=True)
class FileStat:
    """A file as listed: where, and its size and mtime at that moment."""

    path: Path
    rel: str  # relative to its root, '/'-separated
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path, root: Path) -> FileStat:
        st = path.stat()
        return cls(path, path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns)

    def settled(self, settle_seconds: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now - self.mtime_ns / 1e9 >= settle_seconds


@dataclass
class Probe:
    file: FileStat
    sha256: str = ""
    width: int = 0
    height: int = 0
    error: str = ""  # why the image is rejected
    changing: bool = False  # gone or still being written: try again later
    sidecar: FileStat | None = None
    metadata: Metadata | None = None
    sidecar_error: str = ""


def reason_of(exc: ValidationError) -> str:
    return f"{exc.param}: {exc.message}" if exc.param else exc.message


def probe_image(file: FileStat, options: CaptureOptions, classes: ClassNames,
                sidecar: FileStat | None = None, look: bool = True) -> Probe:
    """Read one image; its sidecar is ``sidecar`` (from a folder listing) or, with ``look``,
    whatever ``find_sidecar`` finds next to it."""
    probe = Probe(file)
    try:
        with open(file.path, "rb") as fh:
            data = fh.read(options.max_bytes + 1)
    except FileNotFoundError:
        probe.changing = True
        return probe
    except OSError as exc:
        probe.error = f"cannot be read: {exc.strerror or exc}"
        return probe
    if len(data) != file.size:
        # Written to since it was listed (or larger than the limit, which the size says).
        probe.changing = len(data) <= options.max_bytes
        probe.error = "" if probe.changing else f"larger than {options.max_bytes} bytes " \
                                                "(ingest.max_upload_bytes)"
        return probe
    probe.error = _check_image(probe, data)
    if not probe.error:
        probe.sha256 = hashlib.sha256(data).hexdigest()
        if sidecar is None and look:
            sidecar = _find_sidecar(file)
        if sidecar is not None and sidecar.settled(options.settle_seconds):
            # An unsettled sidecar is still being written: it is attached later, when late.
            probe.sidecar = sidecar
            try:
                probe.metadata = read_sidecar(sidecar.path, classes, options.max_annotations)
            except ValidationError as exc:
                probe.sidecar_error = reason_of(exc)
    return probe


def _check_image(probe: Probe, data: bytes) -> str:
    if not data:
        return "the file is empty"
    fmt = sniff_format(data[:32])
    if fmt is None:
        return "not a supported image (JPEG, PNG, WebP or BMP, judged by its bytes)"
    try:
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
        st = path.stat()
    except FileNotFoundError:
        return None
    rel_dir = os.path.dirname(file.rel)
    return FileStat(path, f"{rel_dir}/{path.name}" if rel_dir else path.name, st.st_size,
                    st.st_mtime_ns)
