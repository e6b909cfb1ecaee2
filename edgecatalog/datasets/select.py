"""Reading the images an export holds: the list's filters (``listing``'s parser and
conditions, so a view means the same in both), every matching image in id order with the
columns an archive needs and its annotations, a chunk at a time. No Flask.

``read_view`` runs inside ``engines.read_snapshot``: its statements see the catalog as it was
at the first one, so the archive is one consistent state even while images arrive.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from typing import Any

from ..listing import IMAGES, ImageQuery
from ..listing.sql import (
    ROW_COLUMNS,
    ROW_JOINS,
    annotations_in_order,
    compose,
    fetch_dicts,
    ids_cond,
    paired,
    where,
)
from ..models import database

CHUNK = 500  # images read (with their annotations) per statement pair

EXPORT_COLUMNS = f"{ROW_COLUMNS}, i.sha256, i.crc32, i.byte_size, i.captured_at, r.path AS root_path, i.path AS rel_path"


def matching_ids(filters: Mapping[str, Any]) -> array:
    """The ids of the images the filters select, ascending (8 bytes each)."""
    conds = IMAGES.conditions(ImageQuery(filters=filters))
    statement = compose("SELECT t.id FROM image t{} ORDER BY t.id", where(conds.render()))
    cursor = database.execute_sql(statement.text, statement.args)
    ids = array("q")
    while rows := cursor.fetchmany(10_000):
        ids.extend(row[0] for row in rows)
    return ids


def read_view(ids: array) -> Iterator[dict[str, Any]]:
    """Each image of ``ids`` (in that order) as a row with its ``annotations`` (in z order),
    ``CHUNK`` images per read."""
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK].tolist()
        rows = fetch_dicts(
            compose(
                f"SELECT {EXPORT_COLUMNS} FROM {ROW_JOINS} JOIN file_root r ON r.id = i.root_id"
                " WHERE i.id IN (SELECT t.id FROM image t{}) ORDER BY i.id",
                where([ids_cond(chunk)]),
            )
        )
        for row, mine in paired(rows, annotations_in_order(chunk)):
            row["annotations"] = mine
            yield row


def class_names() -> list[str]:
    """Every class the catalog has had, sorted by code point: the same index for a class in
    every export of this catalog (``class_set_member`` keeps a class once any image had it;
    a few rows, where a distinct over ``annotation`` reads all of them)."""
    rows = database.execute_sql("SELECT DISTINCT class_value FROM class_set_member").fetchall()
    return sorted(row[0] for row in rows)
