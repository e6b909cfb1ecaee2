"""Facets: how many images of the list's filters have each value of a field, exactly.

``FACETS`` declares each facet once: the filters it answers without (its own: a UI shows the
alternatives to the value it filters by; ``excludes_own_filter`` says so), the count-table key
column that groups it and the value it shows. Each facet is one grouped statement:

- over the first declared count table (``counts.source_for``) whose keys cover its key and
  every other filter's columns (with classes: a class-set table, summed over the sets that
  hold any of them; the class facet: a per-class table). Kept by triggers in the writing
  transaction, so never stale, and nothing is cached between requests;
- a captured_at range: its whole hours from a table keyed by the capture's hour, plus the
  rows of the one or two hours it cuts (``hours``);
- otherwise (a search, a filename, a created_at range, classes with a time range, a review
  queue, or a combination no table keys) a grouped count over the image rows that meet every
  other condition: exact, at the cost of reading them (docs/performance.md); a rare search
  term's rows are found by their ids first (``ImageList.search_matches``).

The class facet counts images carrying at least one annotation of each class and, beside it,
the annotations of each class among the same images (from the same per-class table when one
answers the filters: it counts both). No Flask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..models import database
from . import counts, hours
from .plan import IMAGES, ImageList, _Conditions
from .query import ImageQuery
from .sql import Sql, compose, where


@dataclass(frozen=True)
class Facet:
    """One facet: ``excludes`` the filters it is answered without; ``key`` the count-table
    column it is grouped by (None: the class); ``value`` its SQL over ``t`` (an image or a
    count-table row) and ``joins`` what that needs."""

    name: str
    excludes: tuple[str, ...]
    key: str | None
    value: str
    joins: str = ""


_BATCH = " JOIN batch b ON b.id = t.batch_id"
FACETS: tuple[Facet, ...] = (
    Facet("class_value", ("class_values",), None, "t.class_value"),
    Facet(
        "device_id",
        ("device_id",),
        "device_id",
        "d.device_id",
        " JOIN device d ON d.id = t.device_id",
    ),
    Facet("annotation_status", ("annotation_status",), "annotation_status", "t.annotation_status"),
    Facet("split", ("split",), "split", "t.split"),
    Facet("sync_state", ("sync_state",), "sync_state", "t.sync_state"),
    Facet("batch_id", ("batch_id",), "batch_id", "t.batch_id"),
    # The project's filter combines project and stage: each facet answers without its own.
    Facet("project_id", ("project_id",), "batch_id", "b.project_id", _BATCH),
    Facet("stage", ("stage",), "batch_id", "b.stage", _BATCH),
    Facet("source", (), "source", "t.source"),
    Facet("model_version", (), "model_version", "t.model_version"),
)
FACET_NAMES = tuple(f.name for f in FACETS)


@dataclass(frozen=True)
class FacetAnswer:
    """One facet's values (value, count, and for classes their annotations), best first."""

    name: str
    values: list[dict[str, Any]]
    truncated: bool
    other: int
    excludes_own_filter: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "truncated": self.truncated,
            "other": self.other,
            "excludes_own_filter": self.excludes_own_filter,
        }


def facet_counts(
    query: ImageQuery, names: tuple[str, ...], size: int, images: ImageList = IMAGES
) -> list[FacetAnswer]:
    """The facets ``names`` (in declaration order) of ``query``'s filters, each with its
    ``size`` best values; ``other`` counts what the values left out hold."""
    chosen = [f for f in FACETS if f.name in names]
    # Each facet under the filters other than its own. Facets under the same filters that the
    # same count table answers share one grouped statement, and so do those only the rows can
    # answer (a time range or a search reads the rows once, not nine times).
    mine = {f.name: {k: v for k, v in query.filters.items() if k not in f.excludes} for f in chosen}
    conds = {f.name: images.conditions(replace(query, filters=mine[f.name])) for f in chosen}
    term = query.filters.get("search")
    found = images.search_matches(term) if term is not None else None
    if found is not None:  # a rare term: its matching rows by id, not a LIKE over them all
        conds = {name: c.with_search_ids(found) for name, c in conds.items()}
    grouped: dict[str, dict[Any, int]] = {}
    annotated: dict[str, dict[Any, int] | None] = {}  # the class facet's, when its table has them
    together: dict[tuple, list[Facet]] = {}
    tables: dict[tuple, counts.CountTable | None] = {}
    for facet in chosen:
        if facet.key is None and mine[facet.name].get("has_annotations") is False:
            # Images without an annotation have no class: nothing to count (at 1M images,
            # 240 ms of probing the annotations of 32,000 images for none).
            grouped[facet.name], annotated[facet.name] = {}, {}
            continue
        if facet.key is None:  # the class facet: its own per-class table or the annotations
            table = _table(None, conds[facet.name], images)
            grouped[facet.name], annotated[facet.name] = _grouped_classes(conds[facet.name], table)
            continue
        table = _table({facet.key}, conds[facet.name], images)
        shared = (_frozen(mine[facet.name]), table.name if table else None)
        together.setdefault(shared, []).append(facet)
        tables[shared] = table
    for shared, facets in together.items():
        grouped.update(_grouped(facets, conds[facets[0].name], tables[shared]))
    out = []
    for facet in chosen:
        ranked = sorted(grouped[facet.name].items(), key=_rank)
        values = [{"value": v, "count": n} for v, n in ranked[:size]]
        if facet.key is None:
            per_class = annotated[facet.name]
            if per_class is None:  # its table counts images only (or none answers)
                per_class = _over_rows(conds[facet.name].render())[1]
            for item in values:
                item["annotations"] = per_class.get(item["value"], 0)
        left = sum(n for _, n in ranked[size:])
        given = any(p in query.filters for p in facet.excludes)
        out.append(FacetAnswer(facet.name, values, len(ranked) > size, left, given))
    return out


def _frozen(filters: Mapping[str, Any]) -> tuple:
    return tuple(sorted(filters.items()))


def _rank(item: tuple[Any, int]) -> tuple:
    value, count = item
    return (-count, value is None, "" if value is None else value)


def _hourly(table: counts.CountTable | None) -> bool:
    """Whether ``table`` is keyed by the capture's hour (``_table`` picks one only for a
    captured_at range it answers)."""
    return table is not None and hours.COLUMN in table.key_names


def _table_conds(conds: _Conditions, table: counts.CountTable) -> list[Sql]:
    """``conds`` over a count table (a range as its whole hours over an hour table)."""
    return conds.hour_others() if _hourly(table) else conds.others()


def _grouped_classes(
    conds: _Conditions, table: counts.CountTable | None
) -> tuple[dict[Any, int], dict[Any, int] | None]:
    """The class facet from its per-class count table (with its annotations, when the table
    counts them; a range's cut hours from their rows), or over the rows."""
    if table is None:
        return _over_rows(conds.render())
    annotations = ", sum(t.annotations)" if table.annotations else ""
    others = _table_conds(conds, table)
    if table.keys and others:
        # Every class named: the rows are led by the class, so a filter on the next key
        # (a project's batches) is then a seek per class, not a read of the whole table.
        every = counts.source_for((), per_class=True)
        others.append(Sql(f"t.class_value IN (SELECT class_value FROM {every.name})"))
    statement = compose(
        f"SELECT t.class_value, sum(t.n){annotations} FROM {table.name} t{{}} "
        "GROUP BY t.class_value HAVING sum(t.n) > 0",
        where(others),
    )
    rows = database.execute_sql(*statement).fetchall()
    # int(): a sum is a NUMERIC on PostgreSQL.
    images = {row[0]: int(row[1]) for row in rows}
    counted = {row[0]: int(row[2]) for row in rows} if table.annotations else None
    for edge in conds.edge_rows() if _hourly(table) else []:
        more, more_counted = _over_rows(edge)
        _add(images, more)
        if counted is not None:
            _add(counted, more_counted)
    return images, counted


def _add(into: dict[Any, int], more: Mapping[Any, int]) -> None:
    for value, n in more.items():
        into[value] = into.get(value, 0) + n


def _over_rows(every: list[Sql]) -> tuple[dict[Any, int], dict[Any, int]]:
    """Images and annotations per class among the images ``every`` selects, in one statement
    driven by those images (each one's annotations by the image_id index), not by every
    annotation joined to its image."""
    statement = compose(
        "SELECT a.class_value, count(DISTINCT a.image_id), count(*) FROM annotation a "
        "WHERE a.image_id IN (SELECT t.id FROM image t{}) GROUP BY a.class_value",
        where(every),
    )
    rows = database.execute_sql(*statement).fetchall()
    return {r[0]: int(r[1]) for r in rows}, {r[0]: int(r[2]) for r in rows}


def _grouped(
    facets: list[Facet], conds: _Conditions, table: counts.CountTable | None
) -> dict[str, dict[Any, int]]:
    """Facets under the same conditions from one statement, grouped by all their keys at
    once (over ``table``, or over the image rows when None), then summed per facet. Over a
    table, the joins that give a key its value (a device's name, a batch's project and stage)
    run on the grouped rows, not on every row counted; over an hour table, a range's cut
    hours are grouped from their rows beside it."""
    values = ", ".join(f.value for f in facets)
    joins = "".join(dict.fromkeys(f.joins for f in facets))
    statements = []
    if table is not None:
        keys = ", ".join(f"t.{k}" for k in dict.fromkeys(f.key for f in facets))
        others = _table_conds(conds, table)
        if table.per_class:  # one class (``_table``)
            others.append(Sql("t.class_value = ?", tuple(conds.classes or ())))
        elif conds.classes is not None:
            others.append(_in_class_sets(conds.classes))
        grouped = compose(
            f"SELECT {keys}, sum(t.n) AS n FROM {table.name} t{{}} GROUP BY {keys} "
            "HAVING sum(t.n) > 0",
            where(others),
        )
        statements.append(Sql(f"SELECT {values}, t.n FROM ({grouped.text}) t{joins}", grouped.args))
    # With a time range or a batch, the rows are found through their index: each probes the
    # classes (a common class's IN list would be read whole).
    probe = conds.window is not None or conds.names_batch
    if _hourly(table):
        rows = conds.edge_rows(probe=True)
    else:
        rows = [conds.render(probe=probe, batch_first=True)] if table is None else []
    for every in rows:
        # Over the rows grouped by the values at once: grouped by their keys first, SQLite
        # would walk an index to do it.
        statements.append(
            compose(
                f"SELECT {values}, count(*) FROM image t{joins}{{}} GROUP BY {values}",
                where(every),
            )
        )
    out: dict[str, dict[Any, int]] = {f.name: {} for f in facets}
    for statement in statements:
        for row in database.execute_sql(*statement):
            count = int(row[-1])
            for facet, value in zip(facets, row):
                mine = out[facet.name]
                mine[value] = mine.get(value, 0) + count
    return out


def _table(
    keys: set[str] | None, conds: _Conditions, images: ImageList
) -> counts.CountTable | None:
    """The first count table keyed by ``keys`` (None: the class) and every column ``conds``
    read (a captured_at range: a table keyed by the hour), or None (counted over the
    rows)."""
    tables = images.count_tables
    if conds.columns is None:
        wanted = conds.hour_columns
        if wanted is None:
            return None
        if keys is None:  # the class facet: per class and hour
            return counts.source_for(wanted, per_class=True, tables=tables)
        if conds.classes is not None:  # no hour table holds the class sets
            return None
        return counts.source_for({*wanted, *keys}, per_class=False, tables=tables)
    if keys is None:
        return counts.source_for(conds.columns, per_class=True, tables=tables)
    wanted = {*conds.columns, *keys}
    if conds.classes is not None and len(conds.classes) == 1:
        # One class: its own rows of a per-class table (a range of its key), where one has
        # the keys; the class sets would be probed per set over the whole table (~35 ms at 1M).
        table = counts.source_for(wanted, per_class=True, tables=tables)
        if table is not None:
            return table
    if conds.classes is not None:
        wanted.add("class_set_id")
    return counts.source_for(wanted, per_class=False, tables=tables)


def _in_class_sets(classes: tuple[str, ...]) -> Sql:
    marks = ",".join("?" * len(classes))
    return Sql(
        f"t.class_set_id IN (SELECT set_id FROM class_set_member WHERE class_value IN ({marks}))",
        classes,
    )
