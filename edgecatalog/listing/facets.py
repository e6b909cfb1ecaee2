"""Facets: how many images of the list's filters have each value of a field, exactly.

``FACETS`` declares each facet once: the filters it answers without (its own: a UI shows the
alternatives to the value it filters by; ``excludes_own_filter`` says so), the count-table key
column that groups it and the value it shows. Each facet is one grouped statement:

- over the first declared count table (``counts.source_for``) whose keys cover its key and
  every other filter's columns (with classes: a class-set table, summed over the sets that
  hold any of them; the class facet: a per-class table). Kept by triggers in the writing
  transaction, so never stale, and nothing is cached between requests;
- otherwise (a search, a filename, a time range, or a combination no table keys) a grouped
  count over the image rows that meet every other condition: exact, at the cost of reading
  them (docs/performance.md).

The class facet counts images carrying at least one annotation of each class and, beside it,
the annotations of each class among the same images. No Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..models import database
from . import counts
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
    out = []
    for facet in FACETS:
        if facet.name not in names:
            continue
        given = {p for p in facet.excludes if p in query.filters}
        mine = {k: v for k, v in query.filters.items() if k not in facet.excludes}
        conds = images.conditions(replace(query, filters=mine))
        grouped = _grouped(facet, conds, images)
        ranked = sorted(grouped.items(), key=_rank)
        kept = ranked[:size]
        values = [{"value": v, "count": n} for v, n in kept]
        if facet.key is None:
            per_class = _annotations(conds)
            for item in values:
                item["annotations"] = per_class.get(item["value"], 0)
        left = sum(n for _, n in ranked[size:])
        out.append(FacetAnswer(facet.name, values, len(ranked) > size, left, bool(given)))
    return out


def _rank(item: tuple[Any, int]) -> tuple:
    value, count = item
    return (-count, value is None, "" if value is None else value)


def _grouped(facet: Facet, conds: _Conditions, images: ImageList) -> dict[Any, int]:
    table = _table(facet, conds, images)
    others = conds.others()
    if table is not None:
        if conds.classes is not None and facet.key is not None:
            others.append(_in_class_sets(conds.classes))
        statement = compose(
            f"SELECT {facet.value}, sum(t.n) FROM {table.name} t{facet.joins}{{}} "
            f"GROUP BY {facet.value} HAVING sum(t.n) > 0",
            where(others),
        )
    elif facet.key is None:
        statement = compose(
            "SELECT a.class_value, count(DISTINCT a.image_id) FROM annotation a "
            "JOIN image t ON t.id = a.image_id{} GROUP BY a.class_value",
            where(conds.render()),
        )
    else:
        statement = compose(
            f"SELECT {facet.value}, count(*) FROM image t{facet.joins}{{}} GROUP BY {facet.value}",
            where(conds.render()),
        )
    return _pairs(statement)


def _table(facet: Facet, conds: _Conditions, images: ImageList) -> counts.CountTable | None:
    """The count table that answers the facet under ``conds``, or None (over the rows)."""
    if conds.columns is None:
        return None
    tables = images.count_tables
    if facet.key is None:
        return counts.source_for(conds.columns, per_class=True, tables=tables)
    wanted = {*conds.columns, facet.key}
    if conds.classes is not None:
        wanted.add("class_set_id")
    return counts.source_for(wanted, per_class=False, tables=tables)


def _in_class_sets(classes: tuple[str, ...]) -> Sql:
    marks = ",".join("?" * len(classes))
    return Sql(
        f"t.class_set_id IN (SELECT set_id FROM class_set_member WHERE class_value IN ({marks}))",
        classes,
    )


def _annotations(conds: _Conditions) -> dict[str, int]:
    """Annotations per class among the images ``conds`` select (all of them: one grouped
    read of the class index)."""
    if not conds.entries:
        return _pairs(Sql("SELECT class_value, count(*) FROM annotation GROUP BY class_value"))
    return _pairs(
        compose(
            "SELECT a.class_value, count(*) FROM annotation a JOIN image t ON t.id = a.image_id{} "
            "GROUP BY a.class_value",
            where(conds.render()),
        )
    )


def _pairs(statement: Sql) -> dict[Any, int]:
    # int(): a sum is a NUMERIC on PostgreSQL.
    return {v: int(n) for v, n in database.execute_sql(*statement).fetchall()}
