"""The YOLO layout Ultralytics reads: ``data.yaml``, ``images/<split>/<file>`` and
``labels/<split>/<stem>.txt``. No Flask.

A label file has one line per annotation, ``class x_center y_center width height`` for a box
and ``class x1 y1 x2 y2 ...`` (YOLO segmentation) for a polygon, normalized to the image, 6
decimals; an image without annotations gets an empty one (a background image, not a missing
label). ``names`` is every class of the catalog (``select.class_names``), so a class has the
same index in every export of the catalog.
"""

from __future__ import annotations

from .archive import ArchiveBuilder
from .naming import DATASET_SPLITS, split_suffix
from .placed import Placed, class_index, compact, polygon_points
from .select import LABELS

# A box's line: one %-format (the same digits as format specs) costs about three quarters
# of an f-string with four specs, and as bytes it need not be encoded: a label is ASCII.
BOX_LINE = b"%d %.6f %.6f %.6f %.6f\n"


def label_bytes(placed: Placed, classes: dict[str, int]) -> bytes:
    """The image's label file. A box's values are stored normalized (each checked 0..1 on
    the way in); a polygon's points are stored in pixels, within the image, and are divided
    by its size here."""
    width, height = placed.row.width, placed.row.height
    lines = []
    for ann in placed.annotations:
        try:  # the lookup inline, not a call per box: every box of the export comes here
            index = classes[ann.class_value]
        except KeyError:
            index = class_index(classes, ann.class_value)  # raises, naming the class
        if ann.geometry is None:  # a box (select.LabelAnnotation)
            lines.append(BOX_LINE % (index, ann.x_center, ann.y_center, ann.width, ann.height))
        else:
            points = polygon_points(ann)
            values = [v / (width if i % 2 == 0 else height) for i, v in enumerate(points)]
            lines.append(b"%d " % index + b" ".join(b"%.6f" % v for v in values) + b"\n")
    return b"".join(lines)


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
    shape = LABELS

    def __init__(self, builder: ArchiveBuilder, classes: list[str]) -> None:
        self.builder = builder
        self.classes = classes
        self.index = {name: i for i, name in enumerate(classes)}
        self.splits: set[str] = set()

    def add(self, placed: Placed, dos: int) -> None:
        self.splits.add(placed.split)
        stem = split_suffix(placed.name)[0]
        self.builder.add_bytes(
            f"labels/{placed.split}/{stem}.txt", label_bytes(placed, self.index), dos
        )

    def finish(self, dos: int) -> None:
        present = [s for s in DATASET_SPLITS if s in self.splits]
        self.builder.add_bytes("data.yaml", data_yaml(self.classes, present), dos)
