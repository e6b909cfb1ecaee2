"""Reading the images an export holds: the list's filters (``listing``'s parser and
conditions, so a view means the same in both), every matching image in id order with the
columns its format needs and its annotations, a chunk at a time. No Flask.

Rows and annotations are tuples with names, of the columns the format reads (its ``Shape``):
every value read becomes a Python object, a good part of an image's plan, so none is made
that no one reads, and no dict per row (several times a tuple to build). YOLO reads the
fewest; JSON Lines the list's whole row and annotations, which it turns into dicts for the
list's serializer. The plan keeps none of them.

``read_view`` runs inside ``engines.read_snapshot``: its statements see the catalog as it was
at the first one, so the archive is one consistent state even while images arrive.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import Any, NamedTuple

from ..listing import IMAGES, ImageQuery
from ..listing.sql import (
    ANNOTATION_SELECT_A,
    ROW_COLUMNS,
    ROW_JOINS,
    annotation_cursor,
    compose,
    ids_cond,
    where,
)
from ..models import database

CHUNK = 500  # images read (with their annotations) per statement pair


class ExportRow(NamedTuple):
    """An image as the plan and the YOLO, COCO and CSV writers read it."""

    id: int
    filename: str
    width: int
    height: int
    device_id: str
    split: str
    split_locked: bool
    updated_at: int
    evicted_at: int | None
    sha256: str
    crc32: int | None
    byte_size: int
    captured_at: int
    root_path: str
    rel_path: str


EXPORT_COLUMNS = """i.id, i.filename, i.width, i.height, d.device_id, i.split, i.split_locked,
 i.updated_at, i.evicted_at, i.sha256, i.crc32, i.byte_size, i.captured_at,
 r.path AS root_path, i.storage_key AS rel_path"""


class ListedRow(NamedTuple):
    """An image as the list serializes it (``listing.sql.ROW_COLUMNS``), then the columns
    only the plan reads: JSON Lines. ``ExportRow``'s fields, and more."""

    id: int
    filename: str
    storage_key: str
    width: int
    height: int
    device_id: str
    batch: int
    batch_name: str
    project_name: str | None
    annotation_status: str
    split: str
    split_locked: bool
    version_name: str | None
    created_at: int
    updated_at: int
    sync_state: str
    synced_at: int | None
    evicted_at: int | None
    pinned: bool
    sha256: str
    crc32: int | None
    byte_size: int
    captured_at: int
    root_path: str
    rel_path: str


LISTED_COLUMNS = (
    f"{ROW_COLUMNS}, i.sha256, i.crc32, i.byte_size, i.captured_at, r.path AS root_path,"
    " i.storage_key AS rel_path"
)


class LabelAnnotation(NamedTuple):
    """An annotation as a YOLO label line needs it. ``geometry`` is a polygon's points and
    None for a box (``type`` 'bbox'), whose line is its normalized values: neither its type
    nor its pixel corners become strings here."""

    image: int
    class_value: str
    geometry: str | None
    x_center: float
    y_center: float
    width: float
    height: float


class ExportAnnotation(NamedTuple):
    """An annotation as COCO and CSV write it: the list's but its z order and times."""

    id: int
    image: int
    class_value: str
    type: str
    geometry: str
    x_center: float
    y_center: float
    width: float
    height: float
    confidence: float | None
    source: str


class ListedAnnotation(NamedTuple):
    """An annotation as the list serializes it (``listing.sql.ANNOTATION_SELECT_A``)."""

    id: int
    image: int
    class_value: str
    type: str
    geometry: str
    x_center: float
    y_center: float
    width: float
    height: float
    confidence: float | None
    source: str
    z_order: int
    created_at: int
    updated_at: int


Row = ExportRow | ListedRow
Annotation = LabelAnnotation | ExportAnnotation | ListedAnnotation


class Shape(NamedTuple):
    """What a format reads of each image: a row type and an annotation type, each with the
    select list it is read with (its columns, named as its fields, in their order)."""

    row: type[Row]
    row_columns: str
    annotation: type[Annotation]
    annotation_select: str


LABELS = Shape(
    ExportRow,
    EXPORT_COLUMNS,
    LabelAnnotation,
    "SELECT a.image_id AS image, a.class_value,"
    " CASE WHEN a.type = 'bbox' THEN NULL ELSE a.geometry END AS geometry,"
    " a.x_center, a.y_center, a.width, a.height",
)
OBJECTS = Shape(
    ExportRow,
    EXPORT_COLUMNS,
    ExportAnnotation,
    "SELECT a.id, a.image_id AS image, a.class_value, a.type, a.geometry, a.x_center,"
    " a.y_center, a.width, a.height, a.confidence, a.source",
)
LISTED = Shape(ListedRow, LISTED_COLUMNS, ListedAnnotation, ANNOTATION_SELECT_A)


def matching_ids(filters: Mapping[str, Any]) -> array:
    """The ids of the images the filters select, ascending (8 bytes each)."""
    conds = IMAGES.conditions(ImageQuery(filters=filters))
    statement = compose("SELECT t.id FROM image t{} ORDER BY t.id", where(conds.render()))
    cursor = database.execute_sql(statement.text, statement.args)
    ids = array("q")
    while rows := cursor.fetchmany(10_000):
        ids.extend(row[0] for row in rows)
    return ids


def read_view(ids: array, shape: Shape) -> Iterator[tuple[Row, list[Annotation]]]:
    """Each image of ``ids`` (in that order) with its annotations (in z order), as
    ``shape``'s tuples, ``CHUNK`` images per read."""
    make_row, make_annotation = _maker(shape.row), _maker(shape.annotation)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK].tolist()
        # The joins of the list's row (a left join no column reads costs nothing).
        statement = compose(
            f"SELECT {shape.row_columns} FROM {ROW_JOINS} JOIN file_root r ON r.id = i.root_id"
            " WHERE i.id IN (SELECT t.id FROM image t{}) ORDER BY i.id",
            where([ids_cond(chunk)]),
        )
        cursor = database.execute_sql(statement.text, statement.args)
        _check_columns(cursor, shape.row)
        rows = cursor.fetchall()
        annotations = annotation_cursor(chunk, shape.annotation_select)
        _check_columns(annotations, shape.annotation)
        # The annotations come in the rows' order, read as the rows are: one group per image
        # with any, taken whole when its row comes.
        groups = groupby(map(make_annotation, annotations), key=attrgetter("image"))
        image, group = next(groups, _NO_GROUP)
        for row in map(make_row, rows):
            if image != row.id:
                yield row, []
            else:
                yield row, list(group)
                image, group = next(groups, _NO_GROUP)


_NO_GROUP = (None, ())  # past the last annotation: no row's id is None


def _maker(kind: type) -> Any:
    """``kind._make`` without its Python frame (and its length check: ``_check_columns``
    makes it once per statement), a fraction of a microsecond a row."""
    return partial(tuple.__new__, kind)


def _check_columns(cursor: Any, kind: type) -> None:
    """The statement's columns are the tuple's fields, in order (a column added to one and
    not the other would otherwise shift every name after it)."""
    names = tuple(col[0] for col in cursor.description)
    fields = kind._fields  # type: ignore[attr-defined]
    if names != fields:
        raise RuntimeError(f"{kind.__name__} has fields {fields}, the statement {names}")


def class_names() -> list[str]:
    """Every class the catalog has had, sorted by code point: the same index for a class in
    every export of this catalog (``class_set_member`` keeps a class once any image had it;
    a few rows, where a distinct over ``annotation`` reads all of them)."""
    rows = database.execute_sql("SELECT DISTINCT class_value FROM class_set_member").fetchall()
    return sorted(row[0] for row in rows)
