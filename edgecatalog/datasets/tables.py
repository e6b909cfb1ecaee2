"""The two plain formats: ``images.jsonl``, one image with its annotations per line as the
list serializes it (``serialize.image_to_dict``, plus ``file``: its path in the archive), and
``annotations.csv``, one annotation per row (an image without annotations: one row with the
annotation columns empty, so every image is listed). No Flask.
"""

from __future__ import annotations

import csv
import io

from ..serialize import image_to_dict
from .archive import ArchiveBuilder
from .placed import Placed, compact
from .select import LISTED, OBJECTS

CSV_COLUMNS = (
    "image_id",
    "file",
    "split",
    "image_width",
    "image_height",
    "device_id",
    "annotation_id",
    "class_value",
    "type",
    "x_center",
    "y_center",
    "width",
    "height",
    "geometry",
    "confidence",
    "source",
)


class JsonlWriter:
    needs_split = False
    shape = LISTED

    def __init__(self, builder: ArchiveBuilder, classes: list[str]) -> None:
        self.builder = builder
        self.out = builder.spool.writer()

    def add(self, placed: Placed, dos: int) -> None:
        # The list's serializer reads mappings: the row and its annotations as dicts.
        row = placed.row._asdict()
        row["annotations"] = [ann._asdict() for ann in placed.annotations]
        item = image_to_dict(row)
        item["file"] = placed.path
        self.out.write(compact(item) + "\n")

    def finish(self, dos: int) -> None:
        self.builder.add_generated("images.jsonl", self.out, dos)


class CsvWriter:
    needs_split = False
    shape = OBJECTS

    def __init__(self, builder: ArchiveBuilder, classes: list[str]) -> None:
        self.builder = builder
        self.out = builder.spool.writer()
        self.out.write(",".join(CSV_COLUMNS) + "\r\n")

    def add(self, placed: Placed, dos: int) -> None:
        row = placed.row
        head = [row.id, placed.path, placed.split, row.width, row.height, row.device_id]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\r\n")
        for ann in placed.annotations or [None]:
            tail = [""] * 10
            if ann is not None:
                tail = [
                    ann.id,
                    ann.class_value,
                    ann.type,
                    repr(ann.x_center),
                    repr(ann.y_center),
                    repr(ann.width),
                    repr(ann.height),
                    ann.geometry,
                    "" if ann.confidence is None else repr(ann.confidence),
                    ann.source,
                ]
            writer.writerow(head + tail)
        self.out.write(text.getvalue())

    def finish(self, dos: int) -> None:
        self.builder.add_generated("annotations.csv", self.out, dos)
