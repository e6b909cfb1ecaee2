"""The image list query: filters as a table, one parser for the query string, one executor.

``parse_image_query`` turns request arguments into an ``ImageQuery``; ``select_images`` runs
it and returns a ``Page`` of plain dicts (no model instances) plus the exact total. A page
costs a fixed number of SQL statements whatever its size: the count, the rows, and (when
annotations are asked for, through ``Page.items``) one statement for all of the page's
annotations, read from its cursor as the page is written out. No Flask here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import image_sql, param_types, params, scan_cache
from .errors import NotFound
from .image_sql import Cond, class_cond, column_cond, project_cond, search_cond
from .models import ANNOTATION_STATUSES, SPLITS, STAGES, SYNC_STATES, Annotation, Device

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
SORTS = ("created_at", "updated_at", "filename")
ORDERS = ("asc", "desc")


@dataclass(frozen=True)
class ImageQuery:
    filters: Mapping[str, Any] = field(default_factory=dict)
    include_annotations: bool = False
    include_image_url: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    sort: str = "created_at"
    order: str = "desc"


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]  # without their annotations: see ``items``
    total: int
    limit: int
    offset: int
    include_annotations: bool = False

    def items(self) -> Iterator[dict[str, Any]]:
        """The page's rows, each with its annotations when the query asked for them, read
        from one statement's cursor as the rows are consumed: a page of images at the
        annotation caps is never all in memory at once (the view writes each image out as it
        comes)."""
        if not self.include_annotations:
            yield from self.rows
            return
        annotations = image_sql.annotations_in_order([row["id"] for row in self.rows])
        upcoming = next(annotations, None)
        for row in self.rows:
            mine = []
            while upcoming is not None and upcoming["image"] == row["id"]:
                mine.append(upcoming)
                upcoming = next(annotations, None)
            row["annotations"] = mine
            yield row
            del row["annotations"]  # written out: let it go


@dataclass(frozen=True)
class Filter:
    """One filter parameter: how to parse its text and the SQL condition it adds."""

    param: str
    parse: Callable[[str, str], Any]
    # A SQL fragment with its bound values over the alias ``t`` here; a peewee expression
    # in the batch list, which shares the type.
    condition: Callable[[Any], Any]
    help: str


# Every filter of GET /data/images. Adding one is one row here, a test row and a line in
# docs/api.md; its parser (``param_types``) declares the type the OpenAPI document gives it.
# project_id and stage have no condition of their own: they combine into one (_conditions).
FILTERS: tuple[Filter, ...] = (
    Filter(
        "project_id",
        param_types.NULLABLE_ID,
        lambda v: None,
        "integer project id, or null for images whose batch has no project",
    ),
    Filter("batch_id", param_types.ID, lambda v: column_cond("batch_id", v), "integer batch id"),
    Filter(
        "device_id",
        param_types.TEXT,
        lambda v: column_cond("device_id", v),
        "exact device id; 404 when the catalog does not know the device",
    ),
    Filter(
        "stage",
        param_types.choice(STAGES),
        lambda v: None,
        "batch stage; applied only together with project_id",
    ),
    Filter(
        "annotation_status",
        param_types.choice(ANNOTATION_STATUSES),
        lambda v: column_cond("annotation_status", v),
        "pending, in_progress or completed",
    ),
    Filter(
        "split",
        param_types.choice(SPLITS + ("all",)),
        lambda v: None if v == "all" else column_cond("split", v),
        "train, val, test, none, or all (no filter)",
    ),
    # The view passes [limits] max_class_values; this bound only lets the parser stand alone.
    Filter(
        "class_values",
        param_types.csv(10**6),
        lambda v: class_cond(v, probe=False) if v else None,
        "comma-separated class values ([limits] max_class_values at most); any annotation "
        "matching any value",
    ),
    # '%', '_' and '\' are escaped and LIKE gets ESCAPE '\', so they are literal characters
    # (a bare LIKE has no escape character in SQLite). LIKE folds ASCII case only.
    Filter(
        "search",
        param_types.TEXT,
        search_cond,
        "case-insensitive filename substring; wildcards are literal",
    ),
    Filter("filename", param_types.TEXT, lambda v: column_cond("filename", v), "exact filename"),
    Filter(
        "sync_state",
        param_types.choice(SYNC_STATES),
        lambda v: column_cond("sync_state", v),
        "edge catalog extension: pending, synced, quarantined or local_only",
    ),
)


# The options of GET /data/images besides its filters, as the OpenAPI document states them;
# parse_image_query reads them by name.
OPTIONS: tuple[param_types.Param, ...] = (
    param_types.Param(
        "include_annotations",
        param_types.BOOL,
        "include each image's annotations (true, false, 1 or 0)",
    ),
    param_types.Param(
        "include_image_url",
        param_types.BOOL,
        "include a signed image_url per image (true, false, 1 or 0)",
    ),
    *param_types.page_params(DEFAULT_LIMIT, MAX_LIMIT),
    param_types.Param(
        "sort", param_types.choice(SORTS), "sort field", extra={"default": "created_at"}
    ),
    param_types.Param(
        "order", param_types.choice(ORDERS), "sort direction", extra={"default": "desc"}
    ),
)
OPTION_PARAMS = tuple(option.param for option in OPTIONS)


def parse_image_query(
    args: Any, *, max_class_values: int = 50, max_chars: int = 1024
) -> ImageQuery:
    names = [f.param for f in FILTERS] + list(OPTION_PARAMS)
    given = params.single_values(args, names, max_chars=max_chars)
    filters = {f.param: f.parse(f.param, given[f.param]) for f in FILTERS if f.param in given}
    if "class_values" in given:
        filters["class_values"] = params.parse_csv(
            "class_values", given["class_values"], max_items=max_class_values
        )
    # Above the maximum is clamped (as upstream); below 1 is an error.
    limit, offset = params.parse_page(given, default_limit=DEFAULT_LIMIT, max_limit=MAX_LIMIT)
    return ImageQuery(
        filters=filters,
        include_annotations=params.parse_bool("include_annotations", given["include_annotations"])
        if "include_annotations" in given
        else False,
        include_image_url=params.parse_bool("include_image_url", given["include_image_url"])
        if "include_image_url" in given
        else False,
        limit=limit,
        offset=offset,
        sort=params.parse_choice("sort", given["sort"], SORTS) if "sort" in given else "created_at",
        order=params.parse_choice("order", given["order"], ORDERS) if "order" in given else "desc",
    )


def known_device_pk(device_id: str) -> int:
    """The row id of a device filter; an unknown device is a 404 naming it, not an empty page."""
    device = Device.get_or_none(Device.device_id == device_id)
    if device is None:
        raise NotFound(f"device {device_id!r} is not known to this catalog", "device_id")
    return device.id


def _resolved(query: ImageQuery) -> dict[str, Any]:
    filters = dict(query.filters)
    if "device_id" in filters:
        filters["device_id"] = known_device_pk(filters["device_id"])
    return filters


def _conditions(
    filters: dict[str, Any], *, probe: bool = False, omit: frozenset[str] = frozenset()
) -> list[Cond]:
    conditions = []
    for flt in FILTERS:
        if flt.param in filters and flt.param not in omit:
            condition = flt.condition(filters[flt.param])
            if flt.param == "class_values" and condition is not None:
                condition = class_cond(filters[flt.param], probe)
            if condition is not None:
                conditions.append(condition)
    if "project_id" in filters and "project_id" not in omit:
        # As upstream: stage narrows by batch stage only when a project is given.
        conditions.append(project_cond(filters["project_id"], filters.get("stage")))
    return conditions


# Filters whose conditions are all columns of image_facet_count (or the batch it names).
FACET_FILTERS = frozenset(
    {"project_id", "stage", "batch_id", "device_id", "annotation_status", "split", "sync_state"}
)


def select_images(query: ImageQuery) -> Page:
    """The page and its exact total: a fixed number of statements (device lookup, total,
    rows, and annotations when asked), whatever the page size."""
    filters = _resolved(query)
    ids = None
    if "search" in filters:
        ids = image_sql.fts_ids(filters["search"], _conditions(filters, omit=frozenset({"search"})))
    if ids is not None:
        total, conds = len(ids), [image_sql.ids_cond(ids)]
    else:
        total, conds = _total(filters, query)
    rows: list[dict[str, Any]] = []
    if total > query.offset:
        rows = image_sql.page_rows(conds, query.sort, query.order, query.limit, query.offset)
    return Page(rows, total, query.limit, query.offset, query.include_annotations)


def _total(filters: dict[str, Any], query: ImageQuery) -> tuple[int, list[Cond]]:
    """The exact total, and the conditions the page is then best selected with."""
    given = {k for k, v in filters.items() if not (k == "split" and v == "all")}
    if given == {"search"}:  # carried forward across inserts (scan_cache.search_total)
        return (
            scan_cache.search_total(image_sql.like_pattern(filters["search"])),
            _conditions(filters),
        )
    classes = filters.get("class_values") or None
    others = given - {"class_values"}
    facet = (
        _conditions(filters, omit=frozenset({"class_values"})) if others <= FACET_FILTERS else None
    )
    conds = _conditions(filters)
    sql, args = image_sql.count_sql(facet, classes, conds)
    if "search" in filters:  # a LIKE over the filename index: remembered until a write
        total, _size, other, class_images = scan_cache.fetchone(sql, args)
    else:
        total, _size, other, class_images = image_sql.database.execute_sql(sql, args).fetchone()
    # With a class: walking the sort index and probing each row finds the page after about
    # (offset+limit)*other/total rows; the class's IN list costs about class_images rows.
    wanted = query.offset + query.limit
    if classes is not None and total and wanted * other < total * class_images:
        conds = _conditions(filters, probe=True)
    return total, conds


ANNOTATION_FIELDS = (
    Annotation.id,
    Annotation.image,
    Annotation.class_value,
    Annotation.type,
    Annotation.geometry,
    Annotation.x_center,
    Annotation.y_center,
    Annotation.width,
    Annotation.height,
    Annotation.confidence,
    Annotation.source,
    Annotation.z_order,
    Annotation.created_at,
    Annotation.updated_at,
)


def attach_annotations(rows: list[dict[str, Any]]) -> None:
    """Give every row its full annotation list, with one statement for the whole page."""
    by_image: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
    for ann in image_sql.annotations_of(list(by_image)):
        by_image[ann["image"]].append(ann)
    for row in rows:
        row["annotations"] = by_image[row["id"]]


def get_image_row(image_id: int) -> dict[str, Any]:
    row = image_sql.image_row(image_id)
    if row is None:
        raise NotFound(f"image {image_id} does not exist", "id")
    attach_annotations([row])
    return row
