"""Render: the list's SQL as fragments that carry their bound values, and the statements that
read a page, an image and annotations.

A ``Sql`` is text with ``?`` placeholders plus its values in order; fragments compose with
``compose`` (a template with ``{}`` slots), which concatenates their values in the order their
text appears, so a statement's values can never be out of step with its placeholders. Values
are always bound, never formatted in; the only formatted-in words are validated choices (sort
column, direction) and table names from the count declaration. Portable SQL only: what differs
per engine comes from ``engines``. No Flask.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import itemgetter
from typing import Any, NamedTuple

from ..engines import current as engine
from ..engines import like_pattern
from ..models import database


class Sql(NamedTuple):
    # A tuple, not a dataclass: a request composes a dozen of these, and a frozen dataclass
    # costs several times a tuple to build (measured on the cheapest list request: +7 %).
    text: str
    args: tuple = ()


def compose(template: str, *parts: Sql) -> Sql:
    """``template`` with each ``{}`` replaced by the next part's text; the values follow."""
    args: tuple = ()
    for part in parts:
        if part.args:
            args += tuple(part.args)
    return Sql(template.format(*[part.text for part in parts]), args)


def where(conds: list[Sql]) -> Sql:
    if not conds:
        return Sql("")
    return compose(" WHERE " + " AND ".join("{}" for _ in conds), *conds)


# An image as the list serializes it: its columns, and the joins that give them (alias i).
ROW_COLUMNS = """i.id, i.filename, i.storage_key, i.width, i.height, d.device_id,
 i.batch_id AS batch, b.name AS batch_name, p.name AS project_name, i.annotation_status,
 i.split, i.split_locked, v.version_name, i.created_at, i.updated_at, i.sync_state,
 i.synced_at, i.evicted_at, i.pinned"""
ROW_JOINS = """image i JOIN device d ON d.id = i.device_id JOIN batch b ON b.id = i.batch_id
 LEFT JOIN project p ON p.id = b.project_id LEFT JOIN dataset_version v ON v.id = i.version_id"""
ROW_SELECT = f"SELECT {ROW_COLUMNS}\n FROM {ROW_JOINS}"
ANNOTATION_SELECT_A = """SELECT a.id, a.image_id AS image, a.class_value, a.type, a.geometry,
 a.x_center, a.y_center, a.width, a.height, a.confidence, a.source, a.z_order, a.created_at,
 a.updated_at"""


def fetch_dicts(statement: Sql) -> list[dict[str, Any]]:
    cursor = database.execute_sql(statement.text, statement.args)
    names = [col[0] for col in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


# -- conditions, over the alias t -------------------------------------------------------------


def column_cond(column: str, value: Any) -> Sql:
    return Sql(f"t.{column} = ?", (value,))


def time_cond(column: str, op: str, value: int) -> Sql:
    """``column`` (a timestamp in microseconds) at or after (``>=``) or before (``<``) a value:
    ``op`` is one of the two, fixed by the filter's declaration."""
    return Sql(f"t.{column} {op} ?", (value,))


def project_cond(project_id: int | None, stage: str | None) -> Sql:
    text = "project_id IS NULL" if project_id is None else "project_id = ?"
    args: tuple = () if project_id is None else (project_id,)
    if stage is not None:
        text, args = f"{text} AND stage = ?", args + (stage,)
    return Sql(f"t.batch_id IN (SELECT id FROM batch WHERE {text})", args)


def _marks(values: tuple) -> str:
    return ",".join("?" * len(values))


def class_in(values: tuple[str, ...]) -> Sql:
    """The images with any of the classes, as their IN list (from the class index)."""
    marks = _marks(values)
    return Sql(f"t.id IN (SELECT image_id FROM annotation WHERE class_value IN ({marks}))", values)


def class_probe(values: tuple[str, ...]) -> Sql:
    """The same, probed per row (cheap while a walk of the sort index finds a page soon)."""
    marks = _marks(values)
    return Sql(
        f"EXISTS (SELECT 1 FROM annotation a WHERE a.class_value IN ({marks}) "
        f"AND a.image_id = t.id)",
        values,
    )


def confidence_cond(low: float | None, high: float | None, classes: tuple[str, ...] | None) -> Sql:
    """The images with an annotation (of ``classes``, when given) whose confidence is in
    [low, high]: the annotation's confidence index gives their ids (a range of it)."""
    text, args = "a.confidence >= ?", (0.0 if low is None else low,)
    if high is not None:
        text, args = f"{text} AND a.confidence <= ?", (*args, high)
    if classes:
        text, args = f"{text} AND a.class_value IN ({_marks(classes)})", (*args, *classes)
    return Sql(f"t.id IN (SELECT a.image_id FROM annotation a WHERE {text})", args)


def _partial_ids(parts: tuple[tuple[int, float, float], ...]) -> Sql:
    """The images with a confidence in a partly covered end bucket's part of the range: its
    index range, each confidence's bucket rechecked (``confidence_bits.split``)."""
    bucket = engine().confidence_bucket("a.confidence")
    tests = " OR ".join(
        f"(a.confidence >= ? AND a.confidence <= ? AND {bucket} = ?)" for _ in parts
    )
    args = tuple(v for k, lo, hi in parts for v in (lo, hi, k))
    return Sql(f"t.id IN (SELECT a.image_id FROM annotation a WHERE {tests})", args)


def bits_cond(full: int, parts: tuple[tuple[int, float, float], ...]) -> Sql:
    """A confidence range without classes from the image's own ``confidence_bits`` (the
    buckets wholly inside it) or, for the partly covered end buckets, the annotations."""
    whole = Sql("(t.confidence_bits & ?) <> 0", (full,))
    if not parts:
        return whole
    if not full:
        return _partial_ids(parts)
    return compose("({} OR {})", whole, _partial_ids(parts))


def bits_total(table: str, full: int, parts: tuple[tuple[int, float, float], ...]) -> Sql:
    """The exact total of a confidence range alone: the images with a bit of a bucket wholly
    inside it (summed from the count table ``table``, keyed by the bits), plus those without
    one that have a confidence in a partly covered end bucket's part of it."""
    whole = Sql(
        f"(SELECT coalesce(sum(t.n), 0) FROM {table} t WHERE (t.confidence_bits & ?) <> 0)",
        (full,),
    )
    if not parts:
        return whole
    partial = _partial_ids(parts)
    rest = Sql(
        f"(SELECT count(*) FROM image t WHERE (t.confidence_bits & ?) = 0 AND {partial.text})",
        (full, *partial.args),
    )
    return compose("({} + {})", whole, rest)


# What ``annotation_source`` names: "model" is every inference (the word itself or a model's
# own name), the other two are the reviewed sources (``catalog.REVIEWED_SOURCES``).
ANNOTATION_SOURCES = ("model", "manual", "import")


def source_cond(source: str) -> Sql:
    """The images with an annotation of that source, probed per row through the annotation's
    image index (no index on the source: every annotation written would pay for it)."""
    if source == "model":
        test, args = "a.source NOT IN (?, ?)", ("manual", "import")
    else:
        test, args = "a.source = ?", (source,)
    return Sql(f"EXISTS (SELECT 1 FROM annotation a WHERE a.image_id = t.id AND {test})", args)


def annotated_cond(annotated: bool) -> Sql:
    """Images with (or without) annotations: class set 0 is the empty set (``class_sets``),
    a key column of the class-set count tables, so the total is read from them."""
    return Sql("t.class_set_id <> 0" if annotated else "t.class_set_id = 0")


def search_cond(term: str) -> Sql:
    return Sql(engine().like("t.filename"), (like_pattern(term),))


def ids_cond(ids: list[int]) -> Sql:
    table, args = engine().values_table(ids, "j")
    return Sql(f"t.id IN (SELECT j.value FROM {table})", args)


def unindexed(cond: Sql) -> Sql:
    """The condition with its column taken out of the planner's index choice."""
    return Sql(engine().no_index(cond.text), cond.args)


# -- statements -------------------------------------------------------------------------------


def page_rows(
    conds: list[Sql], sort: str, order: str, limit: int, offset: int, *, sort_rows: bool = False
) -> list[dict]:
    """The page's ids from ``image`` alone (the planner walks the sort index; with
    ``sort_rows``, it sorts the rows the conditions select instead), then the joins for those
    ids only; ``sort`` and ``order`` are validated choices."""
    direction = "DESC" if order == "desc" else "ASC"
    key = f"t.{sort}"
    if sort_rows:
        key = engine().sort_key_unindexed(key, text=sort == "filename")
    statement = compose(
        f"{ROW_SELECT} WHERE i.id IN (SELECT t.id FROM image t{{}} "
        f"ORDER BY {key} {direction}, t.id {direction} LIMIT ? OFFSET ?) "
        f"ORDER BY i.{sort} {direction}, i.id {direction}",
        where(conds),
        Sql("", (limit, offset)),
    )
    return fetch_dicts(statement)


def walk_ids(conds: list[Sql], sort: str, order: str, wanted: int, budget: int) -> list[int]:
    """The first ``wanted`` ids meeting ``conds`` among the first ``budget`` rows of the sort
    order, in order: the true first ones when there are ``wanted`` of them (no row after the
    first ``budget`` sorts before them), too few otherwise."""
    direction = "DESC" if order == "desc" else "ASC"
    statement = compose(
        f"SELECT t.id FROM (SELECT * FROM image ORDER BY {sort} {direction}, id {direction} "
        f"LIMIT {{}}) t{{}} ORDER BY t.{sort} {direction}, t.id {direction} LIMIT {{}}",
        Sql("?", (budget,)),
        where(conds),
        Sql("?", (wanted,)),
    )
    return [int(r[0]) for r in database.execute_sql(*statement).fetchall()]


def image_row(image_id: int) -> dict[str, Any] | None:
    rows = fetch_dicts(Sql(f"{ROW_SELECT} WHERE i.id = ?", (image_id,)))
    return rows[0] if rows else None


# Images per statement of ``annotations_in_order``: the engine sorts a statement's rows
# whole before the first comes (by the page's order, then z order), on each thread's
# connection at once; a page of 100 images carrying 100 annotations each sorted 10,000 rows,
# ~2 MB a connection.
ANNOTATION_CHUNK = 20


def annotations_in_order(image_ids: list[int]) -> Iterator[dict[str, Any]]:
    """The annotations of the given images, in the order of ``image_ids`` (then z_order),
    read from the cursor as they are consumed, ``ANNOTATION_CHUNK`` images a statement: never
    a page's worth of rows in Python, nor in the engine's sorter, at once."""
    names = ANNOTATION_COLUMNS
    for values in annotation_tuples_in_order(image_ids):
        yield dict(zip(names, values))


# The names of ANNOTATION_SELECT_A's columns, in order: the fields of each tuple of
# ``annotation_tuples_in_order``.
ANNOTATION_COLUMNS = tuple(
    part.split(" AS ")[-1].strip().removeprefix("a.")
    for part in ANNOTATION_SELECT_A.removeprefix("SELECT").split(",")
)


def annotation_tuples_in_order(image_ids: list[int]) -> Iterator[tuple]:
    """``annotations_in_order`` as tuples of ``ANNOTATION_COLUMNS`` (no dict per row: a page
    can carry tens of thousands)."""
    for start in range(0, len(image_ids), ANNOTATION_CHUNK):
        cursor = annotation_cursor(image_ids[start : start + ANNOTATION_CHUNK])
        yield from cursor


def annotation_cursor(image_ids: list[int], select: str = ANNOTATION_SELECT_A) -> Any:
    """``annotations_in_order``'s statement, its cursor as it is: each annotation a tuple of
    the columns of ``select`` (of alias a; an export reads the few it needs, and makes no
    dict per row); ``image_ids`` not empty."""
    table, args = engine().values_table(image_ids, "j")
    return database.execute_sql(
        f"{select} FROM {table} JOIN annotation a ON a.image_id = j.value "
        "ORDER BY j.key, a.z_order, a.id",
        args,
    )


def paired(
    rows: list[dict[str, Any]], annotations: Iterator[Any], dicts: bool = True
) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """Each row with its annotations, ``annotations`` being ``annotations_in_order`` of the
    rows' ids (consumed as the rows are), or with ``dicts`` false
    ``annotation_tuples_in_order``."""
    # the image id of an annotation: its dict's "image", or a tuple's field of that name
    image = itemgetter("image") if dicts else itemgetter(ANNOTATION_COLUMNS.index("image"))
    upcoming = next(annotations, None)
    for row in rows:
        mine = []
        while upcoming is not None and image(upcoming) == row["id"]:
            mine.append(upcoming)
            upcoming = next(annotations, None)
        yield row, mine
