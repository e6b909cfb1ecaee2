"""The hand-written SQL of the image list and image reads, and how each filter set is answered.

Owns the strategy, not the parameters (``queries`` parses those). Every condition is a SQL
fragment over the alias ``t`` with its values bound, never formatted in. The choices:

- ``total``: a sum over ``image_total_count`` when every filter is a column of it, over
  ``image_facet_count`` when a batch or project (and stage, through ``batch``) is among them;
  ``image_class_count`` for one class alone; ``image_class_facet`` for one class with such
  filters; otherwise ``COUNT(*)``. The count tables are kept by triggers in the writing
  transaction (migrations 0004, 0005): never stale, nothing to invalidate.
- page: the page's ids from ``image`` alone (the planner walks the sort index), then the joins
  for those ids only (a deferred join).
- class: an ``EXISTS`` probe per row when the class is common (the sort-index walk finds a page
  after a few rows), the ``IN`` list when it is rare; decided from the exact counts.
- search: the FTS5 trigram index gives candidates, bounded by ``FTS_PROBE``, which the exact
  LIKE rechecks (count and page ids in one statement). A common term (more candidates), a 1-2
  character term or one without 3 literal characters in a row takes the exact LIKE alone: a
  scan of the filename index for the count (bounded by the catalog's size, ~70-100 ms at 1M),
  while its page comes from the sort-index walk at once. Both search statements are
  remembered by ``scan_cache`` until the database changes (the only results kept across
  requests).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from . import scan_cache
from .models import database

Cond = tuple[str, tuple]

# Above this many trigram candidates, the exact LIKE over the filename index costs less than
# rechecking them (measured at 1M images: a 2,001-row probe of a common term costs 1-9 ms).
FTS_PROBE = 2_000
ROW_SELECT = """SELECT i.id, i.filename, i.storage_key, i.width, i.height, d.device_id,
 i.batch_id AS batch, b.name AS batch_name, p.name AS project_name, i.annotation_status,
 i.split, i.split_locked, v.version_name, i.created_at, i.updated_at, i.sync_state,
 i.synced_at, i.evicted_at
 FROM image i JOIN device d ON d.id = i.device_id JOIN batch b ON b.id = i.batch_id
 LEFT JOIN project p ON p.id = b.project_id LEFT JOIN dataset_version v ON v.id = i.version_id"""
ANNOTATION_SELECT = """SELECT id, image_id AS image, class_value, type, geometry, x_center,
 y_center, width, height, confidence, source, z_order, created_at, updated_at FROM annotation"""
ANNOTATION_SELECT_A = """SELECT a.id, a.image_id AS image, a.class_value, a.type, a.geometry,
 a.x_center, a.y_center, a.width, a.height, a.confidence, a.source, a.z_order, a.created_at,
 a.updated_at"""


def fetch_dicts(sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
    cursor = database.execute_sql(sql, tuple(params))
    names = [col[0] for col in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def like_pattern(term: str) -> str:
    """'%term%' with '%', '_' and '\\' escaped (used with ESCAPE '\\'): they are literal."""
    escaped = term.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return f"%{escaped}%"


def column_cond(column: str, value: Any) -> Cond:
    return f"t.{column} = ?", (value,)


def project_cond(project_id: int | None, stage: str | None) -> Cond:
    sql = "project_id IS NULL" if project_id is None else "project_id = ?"
    args: tuple = () if project_id is None else (project_id,)
    if stage is not None:
        sql, args = f"{sql} AND stage = ?", args + (stage,)
    return f"t.batch_id IN (SELECT id FROM batch WHERE {sql})", args


def class_cond(values: tuple[str, ...], probe: bool) -> Cond:
    marks = ",".join("?" * len(values))
    if probe:
        sql = (
            f"EXISTS (SELECT 1 FROM annotation a WHERE a.class_value IN ({marks}) "
            f"AND a.image_id = t.id)"
        )
        return sql, values
    return f"t.id IN (SELECT image_id FROM annotation WHERE class_value IN ({marks}))", values


def search_cond(term: str) -> Cond:
    return "t.filename LIKE ? ESCAPE '\\'", (like_pattern(term),)


def ids_cond(ids: list[int]) -> Cond:
    return "t.id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)


def fts_ids(term: str, conds: list[Cond]) -> list[int] | None:
    """The ids matching ``term`` and ``conds`` exactly, found through the trigram index when it
    gives at most FTS_PROBE candidates; None when it gives more (a common term, whose page the
    sort-index walk finds at once) or cannot narrow the term at all (no run of 3+ characters
    without '%' or '_'). The index answers the unescaped LIKE with a superset (its wildcards
    match more, it folds more case); the exact, escaped LIKE then decides."""
    if max(len(run) for run in re.split(r"[%_]", term)) < 3:
        return None
    clause, args = where(conds + [("t.id IN cand", ()), search_cond(term)])
    # Used twice, the CTE is materialized once (SQLite >= 3.35); LIMIT bounds the probe.
    sql = (
        f"WITH cand(id) AS (SELECT rowid FROM image_fts WHERE filename LIKE ? "
        f"LIMIT {FTS_PROBE + 1}) SELECT (SELECT count(*) FROM cand), "
        f"(SELECT json_group_array(t.id) FROM image t{clause})"
    )
    found, ids = scan_cache.fetchone(sql, (f"%{term}%",) + args)
    return None if found > FTS_PROBE else json.loads(ids)


def where(conds: list[Cond]) -> tuple[str, tuple]:
    if not conds:
        return "", ()
    return " WHERE " + " AND ".join(c for c, _ in conds), tuple(a for _, p in conds for a in p)


def _sum_facets(conds: list[Cond]) -> tuple[str, tuple]:
    """The facet filters' total: over ``image_total_count`` (a few rows per device) when no
    condition names a batch (batch and project filters do), else over ``image_facet_count``."""
    clause, args = where(conds)
    table = "image_facet_count" if _names_batch(conds) else "image_total_count"
    return f"(SELECT coalesce(sum(t.n), 0) FROM {table} t{clause})", args


def _names_batch(conds: list[Cond]) -> bool:
    return any(c.lstrip("+").startswith("t.batch_id") for c, _ in conds)


def _class_images(classes: tuple[str, ...]) -> tuple[str, tuple]:
    """Images per class summed over the classes: exact for one, an upper bound for more."""
    marks = ",".join("?" * len(classes))
    sql = f"(SELECT coalesce(sum(n), 0) FROM image_class_count WHERE class_value IN ({marks}))"
    return sql, classes


LOW_CARDINALITY = frozenset({"t.annotation_status", "t.split", "t.sync_state"})


def _prefer_batch_index(conds: list[Cond]) -> list[Cond]:
    """Without statistics the planner walks a 3-4 valued column's index (every 'val' image)
    rather than the batch index when both apply; a unary '+' takes those columns out of the
    index choice when a batch condition is there (the batch filters of benchmarks/queries.py
    at 1M images show the difference; docs/performance.md has the figures)."""
    if not _names_batch(conds):
        return conds
    return [(f"+{c}" if c.split(" ")[0] in LOW_CARDINALITY else c, a) for c, a in conds]


def count_sql(
    facet: list[Cond] | None, classes: tuple[str, ...] | None, conds: list[Cond]
) -> tuple[str, tuple]:
    """One statement giving (total, size, other, class_images): the exact total; max(id) as the
    catalog's size; the images matching the filters other than the class; the class's images.

    ``facet``: the conditions of the filters other than the class when all of them are columns
    of image_facet_count, else None. ``conds``: every condition (the class as its IN list).
    """
    size = "(SELECT coalesce(max(id), 0) FROM image)"
    if classes is None:
        if facet is not None:
            total, args = _sum_facets(facet)
            return f"SELECT {total}, {size}, {total}, 0", args + args
        clause, args = where(conds)
        return f"SELECT (SELECT count(*) FROM image t{clause}), {size}, {size}, 0", args
    per_class, cargs = _class_images(classes)
    marks = ",".join("?" * len(classes))
    if facet == [] and len(classes) == 1:
        return f"SELECT {per_class}, {size}, {size}, {per_class}", cargs + cargs
    if facet == []:
        distinct = (
            f"(SELECT count(*) FROM (SELECT DISTINCT image_id FROM annotation "
            f"WHERE class_value IN ({marks})))"
        )
        return f"SELECT {distinct}, {size}, {size}, {per_class}", classes + cargs
    if facet is not None and len(classes) == 1:
        clause, args = where([("t.class_value = ?", classes)] + facet)
        total = f"(SELECT coalesce(sum(t.n), 0) FROM image_class_facet t{clause})"
        other, oargs = _sum_facets(facet)
        return f"SELECT {total}, {size}, {other}, {per_class}", args + oargs + cargs
    clause, args = where(conds)
    counted = f"(SELECT count(*) FROM image t{clause})"
    if facet is None:
        return f"SELECT {counted}, {size}, {size}, {per_class}", args + cargs
    # Several classes and facet filters: probe the classes per row of the other filters when they match
    # fewer images than the class has, else the class's IN list. CASE evaluates one branch.
    other, oargs = _sum_facets(facet)
    pclause, pargs = where(_prefer_batch_index(facet) + [class_cond(classes, probe=True)])
    probed = f"(SELECT count(*) FROM image t{pclause})"
    sql = (
        f"SELECT CASE WHEN {other} < {per_class} THEN {probed} ELSE {counted} END, {size}, "
        f"{other}, {per_class}"
    )
    return sql, oargs + cargs + pargs + args + oargs + cargs


def page_rows(
    conds: list[Cond], sort: str, order: str, limit: int, offset: int
) -> list[dict[str, Any]]:
    """The page, joined for its own ids only; ``sort`` and ``order`` are validated choices."""
    direction = "DESC" if order == "desc" else "ASC"
    clause, args = where(conds)
    sql = (
        f"{ROW_SELECT} WHERE i.id IN (SELECT t.id FROM image t{clause} "
        f"ORDER BY t.{sort} {direction}, t.id {direction} LIMIT ? OFFSET ?) "
        f"ORDER BY i.{sort} {direction}, i.id {direction}"
    )
    return fetch_dicts(sql, args + (limit, offset))


def image_row(image_id: int) -> dict[str, Any] | None:
    rows = fetch_dicts(f"{ROW_SELECT} WHERE i.id = ?", (image_id,))
    return rows[0] if rows else None


def annotations_in_order(image_ids: list[int]) -> Iterator[dict[str, Any]]:
    """The annotations of the given images, in the order of ``image_ids`` (then z_order),
    read from the cursor as they are consumed: one statement, never a page's worth of rows in
    Python at once."""
    if not image_ids:
        return
    cursor = database.execute_sql(
        f"{ANNOTATION_SELECT_A} FROM json_each(?) AS j JOIN annotation a ON a.image_id = j.value "
        "ORDER BY j.key, a.z_order, a.id",
        (json.dumps(image_ids),),
    )
    names = [col[0] for col in cursor.description]
    for values in cursor:
        yield dict(zip(names, values))


def annotations_of(image_ids: list[int]) -> list[dict[str, Any]]:
    """All annotations of the given images, in one statement (ids bound through json_each,
    so the statement text is the same whatever the page size)."""
    if not image_ids:
        return []
    return fetch_dicts(
        f"{ANNOTATION_SELECT} WHERE image_id IN (SELECT value FROM "
        f"json_each(?)) ORDER BY image_id, z_order, id",
        (json.dumps(image_ids),),
    )
