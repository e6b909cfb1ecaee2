"""One image as an export places it, and what every format writer is given. No Flask."""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Protocol

from .select import Annotation, Row, Shape


class Placed(NamedTuple):
    """An image of the export: its row and annotations (``select.read_view``), its split in
    the export, its file name and its path in the archive. A tuple, made once per image: a
    frozen dataclass costs several times as much to build."""

    row: Row
    annotations: list[Annotation]
    split: str
    name: str
    path: str


class FormatWriter(Protocol):
    """What a format adds to the archive: per image (``add``, in archive order, after the
    image's own file), and once at the end (``finish``)."""

    # True: images whose split is none (and not assigned one) are left out.
    needs_split: bool
    # The columns it reads of each image and annotation (``select.LABELS``, ...).
    shape: Shape

    def add(self, placed: Placed, dos: int) -> None: ...

    def finish(self, dos: int) -> None: ...


def compact(value: Any) -> str:
    """JSON as every generated member writes it: compact, UTF-8, keys in the given order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def pixel_box(ann: Annotation, width: int, height: int) -> tuple[float, float, float, float]:
    """(x, y, w, h) in pixels from the image's top-left corner, clipped to the image: from
    the stored normalized box (sub-pixel, unlike the integer ``geometry``)."""
    x0 = min(max(ann.x_center - ann.width / 2, 0.0), 1.0) * width
    y0 = min(max(ann.y_center - ann.height / 2, 0.0), 1.0) * height
    x1 = min(max(ann.x_center + ann.width / 2, 0.0), 1.0) * width
    y1 = min(max(ann.y_center + ann.height / 2, 0.0), 1.0) * height
    return x0, y0, x1 - x0, y1 - y0


def polygon_points(ann: Annotation) -> list[int]:
    """A polygon's stored pixel coordinates, x1, y1, x2, y2, ..."""
    return json.loads(ann.geometry)


def class_index(classes: dict[str, int], value: str) -> int:
    try:
        return classes[value]
    except KeyError:  # class_set_member holds every class an image ever had
        raise RuntimeError(f"class {value!r} is not among the catalog's classes") from None
