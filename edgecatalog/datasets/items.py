"""What a dataset reader gives the importer: one ``ImportItem`` per image (where its bytes
are in the source, its split, its annotations as ``catalog.NewAnnotation`` values already
validated), and the checks every reader applies to an image's annotations. No Flask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..catalog import AnnotationLimits, NewAnnotation
from ..errors import ValidationError
from ..ingest.metadata import check_annotation_bytes
from ..ingest.sidecars import IMAGE_SUFFIXES
from .source import MalformedDataset

# A split named in a dataset (a file or folder name) -> the catalog's; others are "none".
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
MAX_TEXT_BYTES = 4 * 1024 * 1024  # a label file, classes.txt, data.yaml


@dataclass(frozen=True)
class ImportItem:
    member: str  # the image's name in the source
    split: str  # train, val, test or none
    annotations: tuple[NewAnnotation, ...]
    size: tuple[int, int] | None = None  # (width, height) the labels were made for, if said


@dataclass(frozen=True)
class ReadLimits:
    """The bounds of ``[ingest]`` a reader holds each image's labels to."""

    max_annotations: int
    limits: AnnotationLimits


def split_name(token: str) -> str:
    """``train2017``, ``valid``, ``instances_val`` -> the catalog's split name."""
    word = token.lower()
    for prefix in ("instances_", "annotations_"):
        word = word.removeprefix(prefix)
    word = word.rstrip("0123456789_-")
    return SPLIT_NAMES.get(word, "none")


def is_image(name: str) -> bool:
    dot = name.rfind(".")
    return dot > name.rfind("/") and name[dot:].lower() in IMAGE_SUFFIXES


def check_image_labels(
    annotations: Sequence[NewAnnotation], where: str, bounds: ReadLimits
) -> tuple[NewAnnotation, ...]:
    if len(annotations) > bounds.max_annotations:
        raise MalformedDataset(
            where, f"at most {bounds.max_annotations} annotations per image, got {len(annotations)}"
        )
    try:
        check_annotation_bytes(annotations, bounds.limits, where)
    except ValidationError as exc:
        raise MalformedDataset(exc.param, exc.message) from None
    return tuple(annotations)


def text_of(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedDataset(name, "is not UTF-8 text") from None
