"""The upload ``metadata`` JSON (also the ``<name>.json`` sidecar format), validated.

Fields: model_id, model_version, source, timestamp (capture time), device_id, filename and
annotations [{class_value, type, geometry, confidence, z_order, source}] with normalized
geometry. Unknown fields are ignored, as a cloud pipeline may send more than this catalog keeps.
Every problem raises ``ValidationError`` naming the field.

The caps of ``catalog.AnnotationLimits`` apply here, where a device's metadata and a capture
folder's JSON sidecars enter: polygon vertices per annotation, and the bytes all of an image's
annotations may take as stored, counted with ``catalog.stored_size_bound`` (the image's size
is not known yet when an upload's metadata is read).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..catalog import (
    COORDINATE_DIGITS,
    DEFAULT_LIMITS,
    MAX_SOURCE_CHARS,
    MODEL_SOURCE,
    AnnotationLimits,
    NewAnnotation,
    plainly_valid,
    stored_size_bound,
    too_many_bytes,
    unsafe_text,
    validate_annotation,
)
from ..errors import ValidationError
from ..timeutil import parse_ts

MAX_METADATA_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 8
STRING_FIELDS = ("model_id", "model_version", "source", "device_id", "filename")
# Uploaded annotations are a model's inferences unless an item says otherwise. The top-level
# ``source`` describes the image (upstream's example is "camera-1"), not its annotations.
DEFAULT_ANNOTATION_SOURCE = MODEL_SOURCE


@dataclass(frozen=True)
class Metadata:
    model_id: str = ""
    model_version: str = ""
    source: str = ""
    device_id: str = ""
    filename: str = ""
    captured_at: int | None = None
    annotations: tuple[NewAnnotation, ...] = field(default_factory=tuple)


def check_filename(name: str, param: str = "filename") -> str:
    """A bare file name: no path separators, no NUL, not '.'/'..', not overlong."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValidationError(param, f"{param} must be a bare file name without path separators")
    if len(name.encode("utf-8")) > 200:
        raise ValidationError(param, f"{param} must be at most 200 bytes")
    # Controls, line separators and lone surrogates: a file name is shown, logged and stored.
    if unsafe_text(name):
        raise ValidationError(param, f"{param} must not contain control characters")
    return name


def _depth(value: Any, level: int = 0) -> int:
    """How deep containers nest (a scalar inside adds nothing), stopping past MAX_DEPTH."""
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return level
    deepest = level + 1
    for child in children:
        # Only containers can go deeper: scalars (most of a sidecar) cost no call.
        if isinstance(child, (dict, list)):
            deepest = max(deepest, _depth(child, level + 1))
    return deepest


def parse_metadata_text(
    text: str | bytes,
    *,
    max_annotations: int = 1000,
    param: str = "metadata",
    limits: AnnotationLimits = DEFAULT_LIMITS,
) -> Metadata:
    if len(text) > MAX_METADATA_BYTES:
        raise ValidationError(param, f"{param} is larger than {MAX_METADATA_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(param, f"{param} is not UTF-8 text") from None
    if not text.strip():
        return Metadata()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise ValidationError(param, f"{param} is not valid JSON") from None
    # Nesting deeper than MAX_DEPTH needs more than MAX_DEPTH brackets: a short sidecar is
    # cleared by two C-speed counts instead of a walk of every value.
    deep = text.count("[") + text.count("{") > MAX_DEPTH
    return parse_metadata(
        doc, max_annotations=max_annotations, param=param, check_depth=deep, limits=limits
    )


def parse_metadata(
    doc: Any,
    *,
    max_annotations: int = 1000,
    param: str = "metadata",
    check_depth: bool = True,
    limits: AnnotationLimits = DEFAULT_LIMITS,
) -> Metadata:
    if not isinstance(doc, dict):
        raise ValidationError(param, f"{param} must be a JSON object")
    if check_depth and _depth(doc) > MAX_DEPTH:
        raise ValidationError(param, f"{param} is nested deeper than {MAX_DEPTH} levels")
    values: dict[str, Any] = {}
    for name in STRING_FIELDS:
        if name in doc and doc[name] is not None:
            if not isinstance(doc[name], str) or len(doc[name]) > 256:
                raise ValidationError(
                    f"{param}.{name}", f"{name} must be a string of at most 256 characters"
                )
            if unsafe_text(doc[name]):
                raise ValidationError(
                    f"{param}.{name}",
                    f"{name} must not contain control characters or unpaired surrogates",
                )
            values[name] = doc[name]
    if values.get("filename"):
        check_filename(values["filename"], f"{param}.filename")
    if doc.get("timestamp") is not None:
        stamp = doc["timestamp"]
        try:
            values["captured_at"] = parse_ts(stamp) if isinstance(stamp, str) else _bad_ts()
        except (ValueError, OverflowError):
            raise ValidationError(
                f"{param}.timestamp",
                "timestamp must be an ISO-8601 date-time such as 2026-11-28T10:00:00Z",
            ) from None
    raw = doc.get("annotations")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ValidationError(f"{param}.annotations", "annotations must be a list")
    if len(raw) > max_annotations:
        raise ValidationError(
            f"{param}.annotations",
            f"at most {max_annotations} annotations per image, got {len(raw)}",
        )
    annotations = []
    for i, item in enumerate(raw):
        where = f"{param}.annotations[{i}]"
        if not isinstance(item, dict):
            raise ValidationError(where, "each annotation must be an object")
        for key in ("class_value", "type", "geometry"):
            if key not in item:
                raise ValidationError(f"{where}.{key}", f"{key} is required")
        ann = NewAnnotation(
            class_value=item["class_value"] if isinstance(item["class_value"], str) else "",
            type=item["type"] if isinstance(item["type"], str) else "",
            geometry=item["geometry"],
            confidence=item.get("confidence"),
            z_order=item.get("z_order", i) if item.get("z_order") is not None else i,
            source=_annotation_source(item, where),
        )
        if not plainly_valid(ann):  # the common bbox is cleared here, far sooner
            validate_annotation(ann, where, limits)
        annotations.append(ann)
    check_annotation_bytes(annotations, limits, f"{param}.annotations")
    return Metadata(annotations=tuple(annotations), **values)


def check_annotation_bytes(
    annotations: Sequence[NewAnnotation], limits: AnnotationLimits, param: str
) -> None:
    """Refuse valid ``annotations`` of one image that may take more than ``[ingest]
    max_annotation_bytes`` as stored, before the image's size is known (``catalog.
    stored_size_bound``). For every parser of sidecars and metadata (YOLO's too)."""
    stored = sum(stored_size_bound(ann) for ann in annotations)
    if stored > limits.max_annotation_bytes:
        raise ValidationError(
            param,
            too_many_bytes(
                limits,
                f"these take up to {stored} (a geometry value counted at its widest: "
                f"{COORDINATE_DIGITS} digits and a comma)",
            ),
        )


def _annotation_source(item: dict, where: str) -> str:
    source = item.get("source")
    if source is None or source == "":
        return DEFAULT_ANNOTATION_SOURCE
    if not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS or unsafe_text(source):
        raise ValidationError(
            f"{where}.source",
            f"source must be a string of at most {MAX_SOURCE_CHARS} printable characters",
        )
    return source


def _bad_ts() -> int:
    raise ValueError("timestamp must be a string")
