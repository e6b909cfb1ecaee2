"""Where an image goes in an export: its split (``assign_unsplit`` for the unsplit ones) and
its file name, unique in the archive. No Flask.

Names: the image's own file name, with characters no file system takes (separators, controls,
``:*?"<>|``) replaced by ``_``. Two images whose stems match ignoring case (``A.jpg`` and
``a.png`` would share ``labels/.../a.txt``, and collide on a case-insensitive disk) are told
apart in id order: the first keeps its name, a later one gets ``_<device_id>`` added, then
``_<image id>``. The same catalog gives the same names, whatever the time or the process.

A name whose suffix is no image suffix gets the one its bytes show (``ingest.store``'s
detection), so a YOLO or COCO reader finds it as an image.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from ..errors import ValidationError
from ..ingest.sidecars import IMAGE_SUFFIXES
from .select import Row

DATASET_SPLITS = ("train", "val", "test")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f/\\:*?"<>|\u2028\u2029]')
MAX_STEM_BYTES = 150
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


def parse_assign_unsplit(name: str, text: str) -> tuple[tuple[str, float], ...]:
    """``train:0.8,val:0.1,test:0.1``: fractions of the unsplit images per split, adding up
    to 1; in the order train, val, test whatever the order given."""
    shares: dict[str, float] = {}
    for part in text.split(","):
        split, colon, value = part.strip().partition(":")
        try:
            fraction = float(value) if colon else -1.0
        except ValueError:
            fraction = -1.0
        if split not in DATASET_SPLITS or split in shares or not 0 < fraction <= 1:
            raise ValidationError(
                name,
                f"{name} must be split:fraction pairs such as train:0.8,val:0.1,test:0.1 "
                f"(splits train, val, test, each once, fractions in (0, 1]), got {text[:60]!r}",
            )
        shares[split] = fraction
    if abs(sum(shares.values()) - 1) > 1e-9:
        raise ValidationError(name, f"the fractions of {name} must add up to 1")
    return tuple((s, shares[s]) for s in DATASET_SPLITS if s in shares)


def split_of(row: Row, assign: tuple[tuple[str, float], ...]) -> str:
    """The split an image takes in the export: its own; for ``none``, the one its content
    hash falls in under ``assign`` (the same bytes, the same split), unless its split is
    locked, which nothing moves."""
    split = row.split
    if split != "none" or not assign or row.split_locked:
        return split
    point = int(row.sha256[:16], 16) / 2**64
    bound = 0.0
    for name, fraction in assign:
        bound += fraction
        if point < bound:
            return name
    return assign[-1][0]


class Namer:
    """Unique file names, given in id order (see the module docstring)."""

    def __init__(self) -> None:
        # 8-byte digests of the stems taken, casefolded: ~70 bytes an image, not a string.
        self._taken: set[int] = set()

    def _take(self, stem: str) -> bool:
        key = int.from_bytes(hashlib.blake2b(stem.casefold().encode(), digest_size=8).digest())
        if key in self._taken:
            return False
        self._taken.add(key)
        return True

    def name(self, row: Row, sniff: Callable[[Row], str | None]) -> str:
        """``sniff``: the image's format from its bytes, asked only when its name has no
        image suffix."""
        stem, suffix = split_suffix(_UNSAFE.sub("_", row.filename).strip())
        if suffix.lower() not in IMAGE_SUFFIXES:
            stem, suffix = stem + suffix, EXTENSIONS.get(sniff(row) or "", "")
        stem = _clip(stem.strip(" .")) or f"image_{row.id}"
        if self._take(stem):  # most images: the other candidates are not even built
            return stem + suffix
        for candidate in (
            f"{stem}_{_UNSAFE.sub('_', row.device_id)[:60]}",
            f"{stem}_{row.id}",
        ):
            if self._take(candidate):
                return candidate + suffix
        n = 2
        while not self._take(f"{stem}_{row.id}_{n}"):
            n += 1
        return f"{stem}_{row.id}_{n}{suffix}"


def split_suffix(name: str) -> tuple[str, str]:
    """``os.path.splitext`` of a name without separators (``_UNSAFE`` replaced them): at the
    last dot, unless only dots come before it (``.jpg``, ``..jpg`` have no suffix). Written
    out: ``splitext`` is two Python calls deep, and every image of an export takes one or
    two (its name, its YOLO label's)."""
    dot = name.rfind(".")
    if dot > 0 and (name[0] != "." or name[:dot].strip(".")):
        return name[:dot], name[dot:]
    return name, ""


def _clip(stem: str) -> str:
    raw = stem.encode("utf-8")
    if len(raw) <= MAX_STEM_BYTES:
        return stem
    return raw[:MAX_STEM_BYTES].decode("utf-8", "ignore")
