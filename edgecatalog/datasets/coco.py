"""COCO instances: ``annotations/instances_<split>.json`` per split present, with the images
under ``images/<split>/``. No Flask.

``images`` {id, file_name, width, height} (the catalog's image id; file_name relative to
``images/<split>/``); ``annotations`` {id, image_id, category_id, bbox [x, y, w, h] in pixels
from the top-left corner, area, iscrowd 0, score where the source is a model (not a reviewed
label: ``catalog.REVIEWED_SOURCES``) and a confidence was given, segmentation for a polygon};
``categories`` {id, name}: every class of the catalog sorted by name, ids from 1, the same in
every export of the catalog. Each file is written as the images come, two parts per split
in the spool, joined at the end without copying.
"""

from __future__ import annotations

from ..catalog import REVIEWED_SOURCES
from .archive import ArchiveBuilder
from .naming import DATASET_SPLITS
from .placed import Placed, class_index, compact, pixel_box, polygon_points
from .select import OBJECTS, ExportAnnotation
from .spool import SpoolWriter

INFO = {"description": "edgecatalog export", "version": "1"}


def polygon_area(points: list[int]) -> float:
    xs, ys = points[0::2], points[1::2]
    twice = sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))
    return abs(twice) / 2


def annotation_object(ann: ExportAnnotation, width: int, height: int, category: int) -> dict:
    x, y, w, h = (round(v, 2) for v in pixel_box(ann, width, height))
    out: dict = {"id": ann.id, "image_id": ann.image, "category_id": category}
    out["bbox"] = [x, y, w, h]
    if ann.type == "bbox":
        out["area"] = round(w * h, 2)
    else:
        points = polygon_points(ann)
        out["area"] = round(polygon_area(points), 2)
        out["segmentation"] = [points]
    out["iscrowd"] = 0
    if ann.confidence is not None and ann.source not in REVIEWED_SOURCES:
        out["score"] = ann.confidence
    return out


class _Split:
    def __init__(self, builder: ArchiveBuilder) -> None:
        self.images: SpoolWriter = builder.spool.writer()
        self.annotations: SpoolWriter = builder.spool.writer()
        self.any_image = self.any_annotation = False


class CocoWriter:
    needs_split = True
    shape = OBJECTS

    def __init__(self, builder: ArchiveBuilder, classes: list[str]) -> None:
        self.builder = builder
        self.categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
        self.index = {name: i + 1 for i, name in enumerate(classes)}
        self.parts: dict[str, _Split] = {}

    def add(self, placed: Placed, dos: int) -> None:
        part = self.parts.get(placed.split) or self.parts.setdefault(
            placed.split, _Split(self.builder)
        )
        row = placed.row
        image = {"id": row.id, "file_name": placed.name, "width": row.width, "height": row.height}
        part.images.write(("," if part.any_image else "") + compact(image))
        part.any_image = True
        for ann in placed.annotations:
            category = class_index(self.index, ann.class_value)
            text = compact(annotation_object(ann, row.width, row.height, category))
            part.annotations.write(("," if part.any_annotation else "") + text)
            part.any_annotation = True

    def finish(self, dos: int) -> None:
        for split in DATASET_SPLITS:
            part = self.parts.get(split)
            if part is None:
                continue
            out = self.builder.spool.writer()
            out.write('{"info":' + compact(INFO) + ',"licenses":[],"images":[')
            out.extend(part.images)
            out.write('],"annotations":[')
            out.extend(part.annotations)
            out.write('],"categories":' + compact(self.categories) + "}\n")
            self.builder.add_generated(f"annotations/instances_{split}.json", out, dos)
