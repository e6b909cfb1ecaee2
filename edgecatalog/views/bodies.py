"""The JSON bodies of the write endpoints, parsed into the typed values the domain takes.

One parser per body (``parse_image_patch``, ``parse_batch_patch``, ``parse_new_project``,
``parse_new_annotation``, ``parse_annotation_patch``) and the small field parsers they share.
Each raises ``ValidationError`` naming the field and the accepted form. This is the web side:
the domain modules (``catalog``, ``batches``, ``projects``, ``annotation_edits``) never see a
request body, only the values made here, and keep the rules of what those values may be
(the annotation rules, the stage lifecycle, a project's unique name). No Flask: a view hands
over what ``web.json_body`` read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from .. import listing
from ..annotation_edits import AnnotationChanges, ManualAnnotation, new_manual_annotation
from ..batches import BatchChanges
from ..bulk_edits import MAX_IDS, SETTABLE, BulkChange, parse_shares
from ..catalog import DEFAULT_LIMITS, EDITABLE, AnnotationLimits, ImageChanges, unsafe_text
from ..errors import ValidationError
from ..models import ANNOTATION_STATUSES, SPLITS, STAGES
from ..params import MAX_ID, parse_choice
from ..projects import MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, NewProject

BATCH_PATCH_FIELDS = ("project_id", "stage")
BULK_PATCH_FIELDS = ("ids", "filter", "set", "assign_split", "force")
PROJECT_CREATE_FIELDS = ("name", "description")
ANNOTATION_CREATE_FIELDS = ("image_id", "class_value", "type", "geometry", "z_order", "confidence")
# confidence: a PATCH may clear a model's score (null) or set one; a new manual annotation
# has none, so POST takes it only as null (a client may echo an annotation object back).
ANNOTATION_PATCH_FIELDS = ("class_value", "type", "geometry", "z_order", "confidence")


def require_object(body: Any, name: str = "body") -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError(name, f"{name} must be a JSON object")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key in body:
        if key not in allowed:
            raise ValidationError(
                key, f"unknown field {key!r}; accepted fields: {', '.join(allowed)}"
            )


def patch_body(body: Any, allowed: Iterable[str]) -> Mapping[str, Any]:
    """A partial-update body: a JSON object of known fields, at least one of them."""
    allowed = tuple(allowed)
    require_object(body)
    reject_unknown(body, allowed)
    if not body:
        raise ValidationError("body", f"give at least one of {', '.join(allowed)}")
    return body


def body_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body[name]
    if not isinstance(value, bool):
        raise ValidationError(name, f"{name} must be true or false")
    return value


def body_choice(body: Mapping[str, Any], name: str, choices: Iterable[str]) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise ValidationError(name, f"{name} must be a string")
    return parse_choice(name, value, choices)


def _is_id(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= MAX_ID


def parse_image_patch(body: Any) -> ImageChanges:
    """PATCH /data/images/<id>."""
    patch_body(body, EDITABLE)
    return _image_values(body)


def _image_values(body: Mapping[str, Any], where: str = "") -> ImageChanges:
    """The image fields of a patch (``where``: the object they sit in, for error names)."""
    changes = ImageChanges()
    try:
        if "annotation_status" in body:
            changes["annotation_status"] = body_choice(
                body, "annotation_status", ANNOTATION_STATUSES
            )
        if "split" in body:
            changes["split"] = body_choice(body, "split", SPLITS)
        for name in ("split_locked", "pinned"):
            if name in body:
                changes[name] = body_bool(body, name)  # type: ignore[literal-required]
    except ValidationError as err:
        raise ValidationError(f"{where}{err.param}", err.message) from None
    return changes


def parse_bulk_patch(body: Any, *, max_class_values: int, max_chars: int) -> BulkChange:
    """PATCH /data/images: ``ids`` or ``filter``, ``set`` and/or ``assign_split``, ``force``."""
    require_object(body)
    reject_unknown(body, BULK_PATCH_FIELDS)
    if ("ids" in body) == ("filter" in body):
        raise ValidationError(
            "ids", f"give either ids (at most {MAX_IDS} image ids) or filter (the list's filters)"
        )
    ids = _bulk_ids(body["ids"]) if "ids" in body else None
    filters = None
    if "filter" in body:
        filters = _bulk_filter(body["filter"], max_class_values, max_chars)
    values: ImageChanges = ImageChanges()
    if "set" in body:
        given = require_object(body["set"], "set")
        try:
            reject_unknown(given, SETTABLE)
        except ValidationError as err:
            raise ValidationError(f"set.{err.param}", err.message) from None
        values = _image_values(given, "set.")
    shares = parse_shares(body["assign_split"]) if "assign_split" in body else ()
    if shares and "split" in values:
        raise ValidationError("assign_split", "give set.split or assign_split, not both")
    if not values and not shares:
        raise ValidationError(
            "set", f"give set (one or more of {', '.join(SETTABLE)}) or assign_split"
        )
    force = body_bool(body, "force") if "force" in body else False
    return BulkChange(ids, filters, dict(values), shares, force)


def _bulk_ids(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_IDS:
        raise ValidationError("ids", f"ids must be a list of 1 to {MAX_IDS} image ids")
    if not all(_is_id(v) for v in value):
        raise ValidationError("ids", "ids must be integer image ids")
    return tuple(value)


def _bulk_filter(value: Any, max_class_values: int, max_chars: int) -> dict[str, Any]:
    """The list's filters, each value as its query-string text (a number or a boolean is
    taken as the text it would be written as)."""
    given = require_object(value, "filter")
    names = [f.param for f in listing.FILTERS]
    texts = {}
    for name, raw in given.items():
        if name not in names:
            raise ValidationError(
                f"filter.{name}", f"unknown filter {name!r}; the list's filters: {', '.join(names)}"
            )
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        elif isinstance(raw, (int, float)):
            raw = repr(raw)
        if not isinstance(raw, str) or len(raw) > max_chars:
            raise ValidationError(
                f"filter.{name}", f"filter.{name} must be a string of at most {max_chars} chars"
            )
        texts[name] = raw
    try:
        return listing.parse_filter_values(texts, max_class_values=max_class_values)
    except ValidationError as err:
        raise ValidationError(f"filter.{err.param}", err.message) from None


def parse_batch_patch(body: Any) -> BatchChanges:
    """PATCH /data/batches/<id>."""
    patch_body(body, BATCH_PATCH_FIELDS)
    changes = BatchChanges()
    if "project_id" in body:
        value = body["project_id"]
        if value is not None and not _is_id(value):
            raise ValidationError("project_id", "project_id must be an integer id or null")
        changes["project_id"] = value
    if "stage" in body:
        changes["stage"] = body_choice(body, "stage", STAGES)
    return changes


def _text(body: Mapping[str, Any], name: str, max_chars: int, *, required: bool) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValidationError(name, f"{name} must be a string")
    value = value.strip()
    if required and not value:
        raise ValidationError(name, f"{name} must not be empty")
    if len(value) > max_chars:
        raise ValidationError(name, f"{name} must be at most {max_chars} characters")
    # Line breaks and tabs were always accepted; other controls, line separators and lone
    # surrogates (which SQLite cannot store: a 500) are not.
    if unsafe_text(value, allow="\n\t"):
        raise ValidationError(
            name, f"{name} must not contain control characters or unpaired surrogates"
        )
    return value


def parse_new_project(body: Any) -> NewProject:
    """POST /data/projects."""
    require_object(body)
    reject_unknown(body, PROJECT_CREATE_FIELDS)
    if "name" not in body:
        raise ValidationError("name", "name is required")
    return NewProject(
        name=_text(body, "name", MAX_NAME_CHARS, required=True),
        description=_text(body, "description", MAX_DESCRIPTION_CHARS, required=False),
    )


def parse_new_annotation(body: Any, limits: AnnotationLimits = DEFAULT_LIMITS) -> ManualAnnotation:
    """POST /data/annotations: the body's shape here, the annotation's rules in
    ``annotation_edits.new_manual_annotation``."""
    require_object(body)
    reject_unknown(body, ANNOTATION_CREATE_FIELDS)
    for name in ("image_id", "class_value", "type", "geometry"):
        if name not in body:
            raise ValidationError(name, f"{name} is required")
    if body.get("confidence") is not None:
        raise ValidationError(
            "confidence", "a manual annotation has no confidence; omit it or send null"
        )
    if not _is_id(body["image_id"]):
        raise ValidationError("image_id", "image_id must be an integer id")
    fields = cast(AnnotationChanges, {k: v for k, v in body.items() if k != "image_id"})
    return new_manual_annotation(body["image_id"], fields, limits)


def parse_annotation_patch(body: Any) -> AnnotationChanges:
    """PATCH /data/annotations/<id>: the fields given; ``annotation_edits.update_annotation``
    checks the annotation they make with the stored one."""
    patch_body(body, ANNOTATION_PATCH_FIELDS)
    return cast(AnnotationChanges, dict(body))
