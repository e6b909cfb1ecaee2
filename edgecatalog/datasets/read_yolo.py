"""A YOLO dataset as Ultralytics lays it out: ``data.yaml`` (``names`` as a list or an
``{index: name}`` mapping; ``train``/``val``/``test`` as folders of images, or lists of them)
or, without one, ``images/<split>/`` folders and a ``classes.txt``; an image's labels in the
file its path names with the last ``images`` folder replaced by ``labels`` and the suffix by
``.txt`` (a missing label file: an image without annotations). No Flask.

Folder paths in ``data.yaml`` are taken relative to the folder holding it, a leading ``./``
or ``../`` dropped (Roboflow writes ``../train/images``); image list files (``train.txt``)
are not read. Every label line is checked as a sidecar's is (``ingest.sidecars.parse_yolo``),
its source ``import``; a problem names the file and line.
"""

from __future__ import annotations

import posixpath

from ..catalog import IMPORT_SOURCE
from ..errors import ValidationError
from ..ingest.sidecars import parse_yolo
from . import miniyaml
from .items import MAX_TEXT_BYTES, ImportItem, ReadLimits, check_image_labels, is_image, text_of
from .source import MalformedDataset, Source

SPLIT_KEYS = ("train", "val", "test")


def read_yolo(source: Source, bounds: ReadLimits) -> list[ImportItem]:
    config = _find_yaml(source)
    if config is not None:
        base = posixpath.dirname(config)
        doc = miniyaml.parse(text_of(source.read(config, MAX_TEXT_BYTES), config), config)
        names = _names(doc.get("names"), config)
        folders = {key: _folders(doc.get(key), base, config) for key in SPLIT_KEYS}
    else:
        names = _classes_txt(source)
        folders = {key: [f"images/{key}"] for key in SPLIT_KEYS}
    items: list[ImportItem] = []
    seen: set[str] = set()
    for split in SPLIT_KEYS:
        for folder in folders[split]:
            prefix = f"{folder}/" if folder else ""
            for name in source.names:
                if name.startswith(prefix) and is_image(name) and name not in seen:
                    seen.add(name)
                    items.append(ImportItem(name, split, _labels(source, name, names, bounds)))
    if not items:
        where = config or "dataset"
        raise MalformedDataset(where, "no images found in its train, val or test folders")
    return items


def _find_yaml(source: Source) -> str | None:
    if "data.yaml" in source.sizes:
        return "data.yaml"
    found = [n for n in source.names if n.count("/") <= 1 and n.endswith((".yaml", ".yml"))]
    if len(found) > 1:
        raise MalformedDataset(found[1], f"more than one dataset description ({found[0]} too)")
    return found[0] if found else None


def _names(value: object, where: str) -> list[str]:
    if isinstance(value, list):
        names = value
    elif isinstance(value, dict):
        try:
            keys = sorted(int(k) for k in value)
        except ValueError:
            raise MalformedDataset(
                where, "names: the keys of a mapping must be 0, 1, 2 ..."
            ) from None
        if keys != list(range(len(keys))):
            raise MalformedDataset(where, "names: the keys of a mapping must be 0, 1, 2 ...")
        names = [value[k] for k in sorted(value, key=int)]
    else:
        raise MalformedDataset(where, "names: a list of class names or {index: name} is needed")
    return [str(n) for n in names]


def _folders(value: object, base: str, where: str) -> list[str]:
    if value is None or value == "":
        return []
    for folder in value if isinstance(value, list) else [value]:
        if str(folder).endswith(".txt"):
            raise MalformedDataset(where, f"{folder}: image list files are not read; give a folder")
    out = []
    for folder in value if isinstance(value, list) else [value]:
        parts = [p for p in str(folder).split("/") if p not in ("", ".", "..")]
        out.append(posixpath.join(base, *parts) if parts else base)
    return out


def _classes_txt(source: Source) -> list[str]:
    if "classes.txt" not in source.sizes:
        raise MalformedDataset(
            "dataset", "no data.yaml and no classes.txt: the classes are unnamed"
        )
    text = text_of(source.read("classes.txt", MAX_TEXT_BYTES), "classes.txt")
    return [line.strip() for line in text.splitlines() if line.strip()]


def label_name(image: str) -> str:
    """Ultralytics' rule: the last ``images/`` folder becomes ``labels/``, the suffix .txt."""
    head, sep, tail = f"/{image}".rpartition("/images/")
    path = f"{head}/labels/{tail}" if sep else f"/{image}"
    return posixpath.splitext(path[1:])[0] + ".txt"


def _labels(source: Source, image: str, names: list[str], bounds: ReadLimits) -> tuple:
    label = label_name(image)
    if label not in source.sizes:
        return ()
    text = text_of(source.read(label, MAX_TEXT_BYTES), label)
    try:
        annotations = parse_yolo(text, names, label, source=IMPORT_SOURCE, limits=bounds.limits)
    except ValidationError as exc:
        raise MalformedDataset(exc.param, exc.message) from None
    return check_image_labels(annotations, label, bounds)
