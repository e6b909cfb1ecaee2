"""A COCO detection dataset: ``annotations/instances_<split>.json`` (as exported here and by
COCO itself, images in ``images/<split>/``, ``<split>/`` or ``<split>2017/``) or Roboflow's
``<split>/_annotations.coco.json`` beside its images. No Flask.

Each file is read whole (at most ``MAX_JSON_BYTES``) and checked whole: categories {id, name},
images {id, file_name, width, height}, annotations {image_id, category_id, bbox [x, y, w, h]
in pixels, optional segmentation (polygons; an RLE mask keeps its box), optional score}. A
syntax error names the file, line and column; any other problem the file and the field
(``annotations[12].bbox``). A box is clipped to its image and normalized by the width and
height the file gives, which the importer checks against the image's bytes; a polygon object
becomes one polygon annotation per part, its source ``import``.
"""

from __future__ import annotations

import json
import math
import posixpath
from typing import Any

from ..catalog import IMPORT_SOURCE, NewAnnotation, validate_annotation
from ..errors import ValidationError
from .items import ImportItem, ReadLimits, check_image_labels, split_name
from .source import MalformedDataset, Source

MAX_JSON_BYTES = 256 * 1024 * 1024


def coco_files(source: Source) -> list[str]:
    return [
        n
        for n in source.names
        if n.endswith(".json")
        and (
            posixpath.basename(n).startswith("instances_")
            or posixpath.basename(n) == "_annotations.coco.json"
            or posixpath.basename(posixpath.dirname(n)) == "annotations"
        )
    ]


def read_coco(source: Source, bounds: ReadLimits) -> list[ImportItem]:
    files = coco_files(source)
    if not files:
        raise MalformedDataset(
            "dataset",
            "no COCO file (annotations/instances_<split>.json or <split>/_annotations.coco.json)",
        )
    items: list[ImportItem] = []
    for name in files:
        items.extend(_read_file(source, name, bounds))
    return items


def _load(source: Source, name: str) -> dict[str, Any]:
    try:
        doc = json.loads(source.read(name, MAX_JSON_BYTES))
    except json.JSONDecodeError as exc:
        raise MalformedDataset(f"{name} line {exc.lineno} column {exc.colno}", exc.msg) from None
    except (UnicodeDecodeError, RecursionError):
        raise MalformedDataset(name, "is not UTF-8 JSON of a sane depth") from None
    if not isinstance(doc, dict):
        raise MalformedDataset(name, "the top level must be an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key, []), list):
            raise MalformedDataset(f"{name} {key}", "must be a list")
    return doc


def _field(obj: Any, key: str, kind: type, where: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedDataset(f"{where}.{key}", f"must be a {kind.__name__}")
    return value


def _read_file(source: Source, name: str, bounds: ReadLimits) -> list[ImportItem]:
    doc = _load(source, name)
    split, token = _split_of(name)
    categories: dict[int, str] = {}
    for i, cat in enumerate(doc.get("categories", [])):
        where = f"{name} categories[{i}]"
        cid = _field(cat, "id", int, where)
        if cid in categories:
            raise MalformedDataset(f"{where}.id", f"category {cid} appears twice")
        categories[cid] = _field(cat, "name", str, where)
    images: dict[int, tuple[str, int, int]] = {}
    for i, img in enumerate(doc.get("images", [])):
        where = f"{name} images[{i}]"
        iid = _field(img, "id", int, where)
        if iid in images:
            raise MalformedDataset(f"{where}.id", f"image {iid} appears twice")
        width, height = _field(img, "width", int, where), _field(img, "height", int, where)
        if not (0 < width <= 65535 and 0 < height <= 65535):
            raise MalformedDataset(where, "width and height must be 1..65535")
        member = _member(source, name, token, _field(img, "file_name", str, where), where)
        images[iid] = (member, width, height)
    labels: dict[int, list[NewAnnotation]] = {iid: [] for iid in images}
    for i, ann in enumerate(doc.get("annotations", [])):
        where = f"{name} annotations[{i}]"
        iid = _field(ann, "image_id", int, where)
        if iid not in images:
            raise MalformedDataset(f"{where}.image_id", f"no image {iid} in this file")
        cid = _field(ann, "category_id", int, where)
        if cid not in categories:
            raise MalformedDataset(f"{where}.category_id", f"no category {cid} in this file")
        _, width, height = images[iid]
        for new in _annotations(ann, categories[cid], width, height, where):
            try:
                validate_annotation(new, where, bounds.limits)
            except ValidationError as exc:
                raise MalformedDataset(exc.param, exc.message) from None
            labels[iid].append(new)
    return [
        ImportItem(
            member,
            split,
            check_image_labels(
                [_ordered(a, z) for z, a in enumerate(labels[iid])], f"{name} image {iid}", bounds
            ),
            (width, height),
        )
        for iid, (member, width, height) in images.items()
    ]


def _ordered(ann: NewAnnotation, z: int) -> NewAnnotation:
    return NewAnnotation(ann.class_value, ann.type, ann.geometry, ann.confidence, z, ann.source)


def _split_of(name: str) -> tuple[str, str]:
    """(the split, the word it was read from): instances_<x>.json, else the folder's name."""
    base = posixpath.basename(name)
    if base.startswith("instances_"):
        token = base.removeprefix("instances_").removesuffix(".json")
    else:
        token = posixpath.basename(posixpath.dirname(name))
    return split_name(token), token


def _member(source: Source, name: str, token: str, file_name: str, where: str) -> str:
    """Where an image of ``name`` is in the source: the usual places, first found."""
    here = posixpath.dirname(name)
    root = posixpath.dirname(here) if posixpath.basename(here) == "annotations" else here
    parts = [p for p in file_name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise MalformedDataset(f"{where}.file_name", "must be a relative path inside the dataset")
    relative = "/".join(parts)
    for folder in (f"images/{token}", "images", token, f"{token}2017", ""):
        candidate = (
            posixpath.join(root, folder, relative) if folder else posixpath.join(root, relative)
        )
        if candidate in source.sizes:
            return candidate
    candidate = posixpath.join(here, relative)
    if candidate in source.sizes:
        return candidate
    raise MalformedDataset(f"{where}.file_name", f"{relative} is not in the dataset")


def _annotations(ann: dict, label: str, width: int, height: int, where: str) -> list[NewAnnotation]:
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(_number(v) for v in bbox)
        or bbox[2] < 0
        or bbox[3] < 0
    ):
        raise MalformedDataset(f"{where}.bbox", "must be [x, y, width, height], sizes >= 0")
    score = ann.get("score")
    if score is not None and not (_number(score) and 0 <= score <= 1):
        raise MalformedDataset(f"{where}.score", "must be a number in 0..1")
    polygons = ann.get("segmentation")
    if isinstance(polygons, list) and polygons and not ann.get("iscrowd"):
        out = []
        for part in polygons:
            if (
                not isinstance(part, list)
                or len(part) < 6
                or len(part) % 2
                or not all(_number(v) for v in part)
            ):
                raise MalformedDataset(
                    f"{where}.segmentation", "a polygon is [x1, y1, x2, y2, ...]"
                )
            points = [_clip(v / (width if i % 2 == 0 else height)) for i, v in enumerate(part)]
            out.append(NewAnnotation(label, "polygon", points, score, 0, IMPORT_SOURCE))
        return out
    x0, y0 = _clip(bbox[0] / width), _clip(bbox[1] / height)
    x1, y1 = _clip((bbox[0] + bbox[2]) / width), _clip((bbox[1] + bbox[3]) / height)
    box = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
    return [NewAnnotation(label, "bbox", box, score, 0, IMPORT_SOURCE)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _clip(value: float) -> float:
    return min(max(value, 0.0), 1.0)
