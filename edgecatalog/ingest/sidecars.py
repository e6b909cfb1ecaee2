"""Which files in a capture folder matter, and the annotation sidecars next to images.

A capture folder holds images (by suffix: .jpg .jpeg .png .webp .bmp; the bytes decide whether
they really are), sidecars ``<name>.json`` (the upload ``metadata`` format) or ``<name>.txt``
(YOLO: ``class_index x_center y_center width height [confidence]`` per line, or a
segmentation polygon ``class_index x1 y1 x2 y2 x3 y3 ...``, normalized), and
``classes.txt`` (one class name per line, for the YOLO sidecars of that folder). Temporaries
(``*.tmp``, ``*.part``), dotfiles and everything else are not ours and are left alone.
When an image has both, ``<name>.json`` wins: it can carry model and capture fields YOLO cannot.
Every problem raises ``ValidationError``, naming the sidecar and the line or field. Sidecars and
``classes.txt`` are opened beneath the folder's root without following links (``safeopen``):
a link planted in their place is a rejected sidecar, never the file it points at.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .. import safeopen
from ..catalog import (
    DEFAULT_LIMITS,
    MODEL_SOURCE,
    AnnotationLimits,
    NewAnnotation,
    validate_annotation,
)
from ..errors import ValidationError
from .metadata import (
    MAX_METADATA_BYTES,
    Metadata,
    check_annotation_bytes,
    parse_metadata_text,
    plainly_valid,
)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
SIDECAR_SUFFIXES = (".json", ".txt")  # in order of preference
CLASSES_FILE = "classes.txt"
IGNORED_SUFFIXES = (".tmp", ".part")


def classify(name: str) -> str | None:
    """'image', 'sidecar', 'classes' or None (not ours: leave it alone)."""
    lowered = name.lower()
    if name.startswith(".") or lowered.endswith(IGNORED_SUFFIXES):
        return None
    if lowered == CLASSES_FILE:
        return "classes"
    dot = lowered.rfind(".")  # os.path.splitext's suffix, for a name not starting with a dot
    suffix = lowered[dot:] if dot > 0 else ""
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in SIDECAR_SUFFIXES:
        return "sidecar"
    return None


def stem_of(rel: str) -> str:
    """The key an image and its sidecars share: the relative path without its suffix."""
    return os.path.splitext(rel)[0]


def find_sidecar(image: Path) -> Path | None:
    """The sidecar of an image, if a name for one exists: ``<stem>.json`` first, then
    ``<stem>.txt``. Existing is enough (``lexists``): a link or a folder by that name is found
    here and rejected, with its reason, when it is read."""
    for suffix in SIDECAR_SUFFIXES:
        candidate = image.with_suffix(suffix)
        if candidate.name.lower() != CLASSES_FILE and os.path.lexists(candidate):
            return candidate
    return None


def preferred_sidecar(sidecar: Path) -> bool:
    """False for a ``.txt`` sidecar shadowed by a ``.json`` one for the same image."""
    return not (sidecar.suffix.lower() == ".txt" and os.path.lexists(sidecar.with_suffix(".json")))


class ClassNames:
    """Class names for YOLO sidecars: the folder's classes.txt, else the configured list.

    classes.txt is read again only when its mtime or size changes, and looked at (stat) at
    most once every ``RECHECK_SECONDS`` per folder, so a folder of thousands of YOLO sidecars
    costs one read and a stat a second. Safe to share between threads.
    """

    RECHECK_SECONDS = 1.0

    def __init__(self, configured: Sequence[str] = ()) -> None:
        self.configured = tuple(configured)
        self._cache: dict[tuple[str, str], tuple[tuple[int, int], tuple[str, ...]]] = {}
        self._checked: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}  # when, names
        self._lock = threading.Lock()

    def for_folder(self, root: str, folder: str) -> tuple[str, ...]:
        """The class names for sidecars in ``folder`` (relative to ``root``; '' for the root
        itself)."""
        key = (root, folder)
        now = time.monotonic()
        recent = self._checked.get(key)
        if recent is not None and now - recent[0] < self.RECHECK_SECONDS:
            return recent[1]
        names = self._read(key)
        self._checked[key] = (now, names)
        return names

    def _read(self, key: tuple[str, str]) -> tuple[str, ...]:
        root, folder = key
        rel = f"{folder}/{CLASSES_FILE}" if folder else CLASSES_FILE
        try:
            fh = safeopen.open_file(root, rel)
        except FileNotFoundError:
            return self.configured
        except (OSError, ValueError) as exc:
            raise ValidationError(CLASSES_FILE, f"{CLASSES_FILE} cannot be read: {exc}") from None
        with fh:
            st = os.fstat(fh.fileno())
            stamp = (st.st_mtime_ns, st.st_size)
            with self._lock:
                cached = self._cache.get(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            try:
                text = fh.read(MAX_METADATA_BYTES + 1).decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValidationError(
                    CLASSES_FILE, f"{CLASSES_FILE} cannot be read: {exc}"
                ) from None
        if len(text) > MAX_METADATA_BYTES:
            raise ValidationError(CLASSES_FILE, f"larger than {MAX_METADATA_BYTES} bytes")
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
        with self._lock:
            self._cache[key] = (stamp, names)
        return names


def parse_yolo(
    text: str,
    classes: Sequence[str],
    name: str = "sidecar",
    *,
    source: str = MODEL_SOURCE,
    limits: AnnotationLimits = DEFAULT_LIMITS,
) -> tuple[NewAnnotation, ...]:
    """YOLO lines -> annotations: ``class x_center y_center width height [confidence]`` a
    box, ``class x1 y1 x2 y2 x3 y3 ...`` (YOLO segmentation: 3 points or more) a polygon,
    normalized; ``name`` is used in error details."""
    annotations = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{name} line {number}"
        if len(fields) not in (5, 6) and (len(fields) < 7 or len(fields) % 2 == 0):
            raise ValidationError(
                where,
                "expected 'class_index x_center y_center width height [confidence]' or "
                f"'class_index x1 y1 x2 y2 x3 y3 ...', got {len(fields)} fields",
            )
        try:
            index = int(fields[0])
            numbers = [_unit(float(v)) for v in fields[1:]]
        except ValueError:
            raise ValidationError(
                where, "class index must be an integer and the rest numbers"
            ) from None
        if not classes:
            raise ValidationError(
                where,
                f"no {CLASSES_FILE} in the folder and [capture] classes "
                "is empty, so class indexes cannot be named",
            )
        if not 0 <= index < len(classes):
            raise ValidationError(where, f"class index {index} is outside 0..{len(classes) - 1}")
        box = len(numbers) <= 5
        ann = NewAnnotation(
            class_value=classes[index],
            type="bbox" if box else "polygon",
            geometry=numbers[:4] if box else numbers,
            confidence=numbers[4] if len(numbers) == 5 else None,
            z_order=len(annotations),
            source=source,
        )
        if not plainly_valid(ann):
            validate_annotation(ann, where, limits)
        annotations.append(ann)
    return tuple(annotations)


# A coordinate a float's rounding put just outside 0..1 (1.0000001) is taken as the bound.
_SLACK = 1e-6


def _unit(value: float) -> float:
    if -_SLACK <= value < 0:
        return 0.0
    if 1 < value <= 1 + _SLACK:
        return 1.0
    return value


def read_sidecar(
    root: str,
    rel: str,
    classes: ClassNames,
    max_annotations: int,
    size: int | None = None,
    limits: AnnotationLimits = DEFAULT_LIMITS,
) -> Metadata:
    """Read and validate the sidecar at ``rel`` beneath ``root``; ``ValidationError`` says
    what is wrong with it (a link or a non-regular file among them).

    ``size``: the size a listing gave, so only that much (plus one byte) is asked for.
    """
    name = os.path.basename(rel)
    limit = MAX_METADATA_BYTES + 1 if size is None else min(size, MAX_METADATA_BYTES) + 1
    try:
        with safeopen.open_file(root, rel) as fh:
            data = fh.read(limit)
            if size is not None and len(data) == limit <= MAX_METADATA_BYTES:
                data += fh.read(MAX_METADATA_BYTES + 1 - limit)  # it grew: read on to the limit
    except safeopen.UnsafeFile as exc:
        raise ValidationError(
            name, f"{exc.reason}: a sidecar is read only from a regular file"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValidationError(
            name, f"cannot be read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if name.lower().endswith(".json"):
        return parse_metadata_text(data, max_annotations=max_annotations, param=name, limits=limits)
    if len(data) > MAX_METADATA_BYTES:
        raise ValidationError(name, f"larger than {MAX_METADATA_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(name, "is not UTF-8 text") from None
    annotations = parse_yolo(
        text, classes.for_folder(root, os.path.dirname(rel)), name, limits=limits
    )
    if len(annotations) > max_annotations:
        raise ValidationError(
            name, f"at most {max_annotations} annotations per image, got {len(annotations)}"
        )
    check_annotation_bytes(annotations, limits, name)
    return Metadata(annotations=annotations)
