"""Rows to contract dicts, and the one declaration of each response object's fields.

``IMAGE_FIELDS``, ``ANNOTATION_FIELDS``, ``PROJECT_FIELDS`` and ``BATCH_FIELDS`` list every
field in output order: its name, JSON type, whether it may be null, a description, and how it is
read from a row. The ``*_to_dict`` functions build their dicts from these specs, and ``apidoc``
builds the OpenAPI schemas (types.ImageDetailResponse, types.AnnotationDTO, Project, Batch) from
the same specs, so a field cannot be served without being documented. The names, types and
order are those of the upstream contract's types.ImageDetailResponse and types.AnnotationDTO.
Empty strings, never null, for string fields without a value.

A list page's annotations, which can number tens of thousands, are written as JSON text
straight from their rows (``annotation_writer``, made from ``ANNOTATION_FIELDS``; ``image_json``
puts them in their image's text): the same bytes as the dicts dumped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any

from .models import ANNOTATION_STATUSES, ANNOTATION_TYPES, SPLITS, STAGES, SYNC_STATES
from .timeutil import format_ts

Row = Mapping[str, Any]
TIMESTAMP = "RFC 3339 UTC timestamp"
UNSET = "RFC 3339 UTC timestamp; empty string when unset"


@dataclass(frozen=True, eq=False)
class FieldSpec:
    """One field of a response object."""

    name: str
    type: str  # JSON Schema type: integer, number, string, boolean or array
    # The value from a row; None for a field its serializer fills itself (see image_to_dict).
    read: Callable[[Row], Any] | None
    description: str = ""
    nullable: bool = False
    enum: tuple[str, ...] = ()
    items: str = ""  # of an array: a JSON type, or the name of a component schema


def _column(key: str) -> Callable[[Row], Any]:
    return itemgetter(key)


def _text(key: str) -> Callable[[Row], str]:
    return lambda row: row[key] or ""


def _timestamp(key: str) -> Callable[[Row], str]:
    return lambda row: format_ts(row[key])


ANNOTATION_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("id", "integer", _column("id")),
    FieldSpec("image_id", "integer", _column("image")),
    FieldSpec("class_value", "string", _column("class_value")),
    FieldSpec("type", "string", _column("type"), enum=ANNOTATION_TYPES),
    FieldSpec(
        "geometry",
        "array",
        lambda row: json.loads(row["geometry"]),
        "integer pixels: bbox [x_min, y_min, x_max, y_max]; polygon [x1, y1, ...]",
        items="integer",
    ),
    FieldSpec("x_center", "number", _column("x_center"), "normalized (0..1)"),
    FieldSpec("y_center", "number", _column("y_center"), "normalized (0..1)"),
    FieldSpec("width", "number", _column("width"), "normalized (0..1)"),
    FieldSpec("height", "number", _column("height"), "normalized (0..1)"),
    FieldSpec(
        "confidence",
        "number",
        _column("confidence"),
        "Model score; null for manual annotations",
        nullable=True,
    ),
    FieldSpec("source", "string", _column("source")),
    FieldSpec("z_order", "integer", _column("z_order")),
    FieldSpec("created_at", "string", _timestamp("created_at"), TIMESTAMP),
    FieldSpec("updated_at", "string", _timestamp("updated_at"), TIMESTAMP),
)

IMAGE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("id", "integer", _column("id")),
    FieldSpec("filename", "string", _column("filename")),
    FieldSpec("storage_key", "string", _column("storage_key")),
    FieldSpec(
        "image_url",
        "string",
        None,
        "Signed file URL; only with include_image_url, empty when the file was evicted",
    ),
    FieldSpec("width", "integer", _column("width"), "pixels"),
    FieldSpec("height", "integer", _column("height"), "pixels"),
    FieldSpec("device_id", "string", _column("device_id")),
    FieldSpec("batch_id", "integer", _column("batch")),
    FieldSpec("batch_name", "string", _text("batch_name")),
    FieldSpec("project_name", "string", _text("project_name")),
    FieldSpec(
        "annotation_status", "string", _column("annotation_status"), enum=ANNOTATION_STATUSES
    ),
    FieldSpec("split", "string", _column("split"), enum=SPLITS),
    FieldSpec("split_locked", "boolean", lambda row: bool(row["split_locked"])),
    FieldSpec("version_name", "string", _text("version_name")),
    FieldSpec("created_at", "string", _timestamp("created_at"), TIMESTAMP),
    FieldSpec("updated_at", "string", _timestamp("updated_at"), TIMESTAMP),
    # Additive fields of the edge catalog.
    FieldSpec(
        "sync_state",
        "string",
        _column("sync_state"),
        "Edge catalog extension: pending, synced, quarantined, local_only, skipped (the "
        "selection rules keep it local) or deferred (past a quota)",
        enum=SYNC_STATES,
    ),
    FieldSpec(
        "synced_at",
        "string",
        _timestamp("synced_at"),
        "Edge catalog extension: when it reached upstream; empty until then",
    ),
    FieldSpec(
        "pinned",
        "boolean",
        lambda row: bool(row["pinned"]),
        "Edge catalog extension: kept by retention, whatever the disk",
    ),
    FieldSpec(
        "annotations",
        "array",
        None,
        "Always on a single image; in a list only with include_annotations",
        items="types.AnnotationDTO",
    ),
)

PROJECT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("id", "integer", _column("id")),
    FieldSpec("name", "string", _column("name")),
    FieldSpec("description", "string", _column("description")),
    FieldSpec("created_at", "string", _timestamp("created_at"), TIMESTAMP),
    FieldSpec("updated_at", "string", _timestamp("updated_at"), TIMESTAMP),
)

BATCH_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("id", "integer", _column("id")),
    FieldSpec("name", "string", _column("name")),
    FieldSpec("device_id", "string", _column("device_id")),
    FieldSpec("project_id", "integer", _column("project"), "null: no project", nullable=True),
    FieldSpec("project_name", "string", _text("project_name")),
    FieldSpec("stage", "string", _column("stage"), enum=STAGES),
    FieldSpec("image_count", "integer", _column("image_count")),
    FieldSpec("opened_at", "string", _timestamp("opened_at"), TIMESTAMP),
    FieldSpec("closed_at", "string", _timestamp("closed_at"), UNSET),
    FieldSpec("created_at", "string", _timestamp("created_at"), TIMESTAMP),
    FieldSpec("updated_at", "string", _timestamp("updated_at"), TIMESTAMP),
)


def _read_all(specs: tuple[FieldSpec, ...]) -> tuple[tuple[str, Callable[[Row], Any]], ...]:
    # (name, reader) pairs resolved once: the serializers run for every row of a page.
    return tuple((spec.name, spec.read) for spec in specs if spec.read is not None)


def _split_at(specs: tuple[FieldSpec, ...], name: str) -> tuple[tuple[FieldSpec, ...], ...]:
    at = [spec.name for spec in specs].index(name)
    return specs[:at], specs[at + 1 :]


# image_url sits after storage_key and annotations last: both appear only when asked for.
_IMAGE_HEAD, _IMAGE_TAIL = _split_at(IMAGE_FIELDS, "image_url")
assert _IMAGE_TAIL[-1].name == "annotations", "annotations is the image's last field"
_IMAGE_BEFORE_URL = _read_all(_IMAGE_HEAD)
_IMAGE_AFTER_URL = _read_all(_IMAGE_TAIL[:-1])
_ANNOTATION = _read_all(ANNOTATION_FIELDS)
_PROJECT = _read_all(PROJECT_FIELDS)
_BATCH = _read_all(BATCH_FIELDS)


def annotation_to_dict(row: Row) -> dict[str, Any]:
    return {name: read(row) for name, read in _ANNOTATION}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# An annotation's geometry as stored: a compact JSON array of integers, already its JSON text
# (loaded and dumped it comes back the same); anything else takes that round trip.
_COMPACT_INTS = re.compile(r"\[(?:(?:0|-?[1-9][0-9]*)(?:,(?:0|-?[1-9][0-9]*))*)?\]")


def _geometry_text(text: str) -> str:
    return text if _COMPACT_INTS.fullmatch(text) else _dumps(json.loads(text))


def _nullable_number_text(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)  # what json writes for it, without json's machinery
    return _dumps(value)


# The column of ANNOTATION_FIELDS' row each field reads, where its name is not the field's.
_ANNOTATION_COLUMN = {"image_id": "image"}


def annotation_writer(columns: tuple[str, ...]) -> Callable[[tuple], str]:
    """A function from an annotation as a tuple of ``columns`` (``listing``'s
    ``ANNOTATION_COLUMNS``) to its JSON text: the same text as ``_dumps(annotation_to_dict)``
    of it as a dict (``tests/test_serialize_text.py``), with no dict, and a ``%`` template
    made from ``ANNOTATION_FIELDS`` once: a page of 100 images carrying 100 annotations each
    spent ~9 us an annotation on dicts and ``json``, most of the request.

    Integers and non-null numbers go in as they are (``%d``, and ``%r``, which is ``repr``,
    as ``json`` writes floats); strings are escaped as ``json`` does; timestamps formatted once
    per distinct value (the annotations of an image mostly share theirs; the memo lives as
    long as the function, one page)."""
    memo: dict[int | None, str] = {}

    def timestamp(us: int | None) -> str:
        text = memo.get(us)
        if text is None:
            text = memo[us] = format_ts(us)
        return text

    template, picks, conversions = [], [], []
    for i, spec in enumerate(ANNOTATION_FIELDS):
        picks.append(columns.index(_ANNOTATION_COLUMN.get(spec.name, spec.name)))
        key = ("{" if i == 0 else ",") + _dumps(spec.name) + ":"
        if spec.description == TIMESTAMP:
            template.append(key + '"%s"')
            conversions.append((i, timestamp))
        elif spec.name == "geometry":
            template.append(key + "%s")
            conversions.append((i, _geometry_text))
        elif spec.type == "string" and not spec.nullable:
            template.append(key + "%s")
            conversions.append((i, encode_basestring_ascii))
        elif spec.type == "number" and spec.nullable:
            template.append(key + "%s")
            conversions.append((i, _nullable_number_text))
        elif spec.type == "integer" and not spec.nullable:
            template.append(key + "%d")
        elif spec.type == "number":
            template.append(key + "%r")
        else:
            raise TypeError(f"annotation_writer has no rule for the field {spec.name!r}")
    text = "".join(template) + "}"
    pick = itemgetter(*picks)

    def write(annotation: tuple) -> str:
        values = list(pick(annotation))
        for i, convert in conversions:
            values[i] = convert(values[i])
        return text % tuple(values)

    return write


def image_json(
    row: Row, write_annotation: Callable[[tuple], str], image_url: Callable[[int], str] | None
) -> str:
    """``_dumps(image_to_dict(row, image_url))`` of a row whose ``annotations`` are tuples,
    each written by ``write_annotation`` (``annotation_writer``): the same text."""
    annotations = row["annotations"]
    head = _dumps(image_to_dict({k: v for k, v in row.items() if k != "annotations"}, image_url))
    return f'{head[:-1]},"annotations":[{",".join(map(write_annotation, annotations))}]}}'


def image_to_dict(row: Row, image_url: Callable[[int], str] | None = None) -> dict[str, Any]:
    out = {name: read(row) for name, read in _IMAGE_BEFORE_URL}
    if image_url is not None:
        # An evicted file has no URL to give; the key stays so clients see the same shape.
        out["image_url"] = "" if row.get("evicted_at") else image_url(row["id"])
    for name, read in _IMAGE_AFTER_URL:
        out[name] = read(row)
    if "annotations" in row:
        out["annotations"] = [annotation_to_dict(a) for a in row["annotations"]]
    return out


def project_to_dict(row: Row) -> dict[str, Any]:
    return {name: read(row) for name, read in _PROJECT}


def batch_to_dict(row: Row) -> dict[str, Any]:
    return {name: read(row) for name, read in _BATCH}
