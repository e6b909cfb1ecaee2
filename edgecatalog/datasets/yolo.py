"""The YOLO layout Ultralytics reads: ``data.yaml``, ``images/<split>/<file>`` and
``labels/<split>/<stem>.txt``. No Flask.

A label file has one line per annotation, ``class x_center y_center width height`` for a box
and ``class x1 y1 x2 y2 ...`` (YOLO segmentation) for a polygon, normalized to the image, 6
decimals; an image without annotations gets an empty one (a background image, not a missing
label). ``names`` is every class of the catalog (``select.class_names``), so a class has the
same index in every export of the catalog.
"""

from __future__ import annotations

import os

from .archive import ArchiveBuilder
from .naming import DATASET_SPLITS
from .placed import Placed, class_index, compact, polygon_points


def label_text(placed: Placed, classes: dict[str, int]) -> str:
    """A box's values are stored normalized (each checked 0..1 on the way in); a polygon's
    points are stored in pixels, within the image, and are divided by its size here."""
    width, height = placed.row["width"], placed.row["height"]
    lines = []
    for ann in placed.annotations:
        index = class_index(classes, ann["class_value"])
        if ann["type"] == "bbox":
            lines.append(
                f"{index} {ann['x_center']:.6f} {ann['y_center']:.6f} "
                f"{ann['width']:.6f} {ann['height']:.6f}\n"
            )
        else:
            points = polygon_points(ann)
            values = [v / (width if i % 2 == 0 else height) for i, v in enumerate(points)]
            lines.append(f"{index} " + " ".join(f"{v:.6f}" for v in values) + "\n")
    return "".join(lines)


def data_yaml(classes: list[str], splits: list[str]) -> str:
    """``path`` is the folder the file is in when training starts there (Ultralytics takes a
    relative ``path`` that exists from the working folder); names as ``{index: name}`` in
    JSON's quoting, which YAML reads the same."""
    lines = [
        "# edgecatalog export. Set path to this folder's absolute path to train from elsewhere.",
        "path: .",
        *(f"{split}: images/{split}" for split in splits),
        f"nc: {len(classes)}",
        "names:",
        *(f"  {i}: {compact(name)}" for i, name in enumerate(classes)),
    ]
    return "\n".join(lines) + "\n"


class YoloWriter:
    needs_split = True

    def __init__(self, builder: ArchiveBuilder, classes: list[str]) -> None:
        self.builder = builder
        self.classes = classes
        self.index = {name: i for i, name in enumerate(classes)}
        self.splits: set[str] = set()

    def add(self, placed: Placed, dos: int) -> None:
        self.splits.add(placed.split)
        stem = os.path.splitext(placed.name)[0]
        self.builder.add_bytes(
            f"labels/{placed.split}/{stem}.txt", label_text(placed, self.index), dos
        )

    def finish(self, dos: int) -> None:
        present = [s for s in DATASET_SPLITS if s in self.splits]
        self.builder.add_bytes("data.yaml", data_yaml(self.classes, present), dos)
