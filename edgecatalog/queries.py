"""The image list query: filters as a table, one parser for the query string, one executor.

``parse_image_query`` turns request arguments into an ``ImageQuery``; ``select_images`` runs
it and returns a ``Page`` of plain dicts (no model instances) plus the exact total. A page
costs a fixed number of SQL statements whatever its size: the count, the rows, and (when
annotations are asked for) one statement for all of the page's annotations. No Flask here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from peewee import JOIN, SQL, Expression, fn

from . import params
from .errors import NotFound
from .models import (
    ANNOTATION_STATUSES,
    SPLITS,
    STAGES,
    SYNC_STATES,
    Annotation,
    Batch,
    DatasetVersion,
    Device,
    Image,
    Project,
)

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
    rows: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class Filter:
    """One filter parameter: how to parse its text and the SQL condition it adds."""

    param: str
    parse: Callable[[str, str], Any]
    condition: Callable[[Any], Expression | None]
    help: str


def _batches_of_project(project_id: int | None, stage: str | None) -> Expression:
    batches = Batch.select(Batch.id)
    where = Batch.project.is_null() if project_id is None else (Batch.project == project_id)
    if stage is not None:
        where &= Batch.stage == stage
    return Image.batch.in_(batches.where(where))


def _class_condition(values: tuple[str, ...]) -> Expression | None:
    if not values:
        return None
    tagged = Annotation.select(Annotation.image).where(Annotation.class_value.in_(list(values)))
    return Image.id.in_(tagged)


def _device_condition(device_pk: int) -> Expression:
    return Image.device == device_pk


# Every filter of GET /data/images. Adding one is one row here, a test row and a README line.
FILTERS: tuple[Filter, ...] = (
    Filter("project_id", params.parse_nullable_id, lambda v: None,
           "integer project id, or null for images whose batch has no project"),
    Filter("batch_id", params.parse_id, lambda v: Image.batch == v, "integer batch id"),
    Filter("device_id", lambda n, t: t, _device_condition, "exact device id"),
    Filter("stage", lambda n, t: params.parse_choice(n, t, STAGES), lambda v: None,
           "batch stage; applied only together with project_id"),
    Filter("annotation_status",
           lambda n, t: params.parse_choice(n, t, ANNOTATION_STATUSES),
           lambda v: Image.annotation_status == v, "pending, in_progress or completed"),
    Filter("split", lambda n, t: params.parse_choice(n, t, SPLITS + ("all",)),
           lambda v: None if v == "all" else Image.split == v,
           "train, val, test, none, or all (no filter)"),
    Filter("class_values", lambda n, t: params.parse_csv(n, t, max_items=10**6), _class_condition,
           "comma-separated class values; any annotation matching any value"),
    # contains() escapes '%', '_' and '\' and adds ESCAPE '\', so they are literal characters
    # (a bare LIKE has no escape character in SQLite). LIKE folds ASCII case only.
    Filter("search", lambda n, t: t, lambda v: Image.filename.contains(v),
           "case-insensitive filename substring; wildcards are literal"),
    Filter("filename", lambda n, t: t, lambda v: Image.filename == v, "exact filename"),
    Filter("sync_state", lambda n, t: params.parse_choice(n, t, SYNC_STATES),
           lambda v: Image.sync_state == v, "pending, synced, quarantined or local_only"),
)


OPTION_PARAMS = ("include_annotations", "include_image_url", "limit", "offset", "sort", "order")


def parse_image_query(args: Any, *, max_class_values: int = 50, max_chars: int = 1024) -> ImageQuery:
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
        if "include_annotations" in given else False,
        include_image_url=params.parse_bool("include_image_url", given["include_image_url"])
        if "include_image_url" in given else False,
        limit=limit,
        offset=offset,
        sort=params.parse_choice("sort", given["sort"], SORTS) if "sort" in given else "created_at",
        order=params.parse_choice("order", given["order"], ORDERS) if "order" in given else "desc",
    )


def _conditions(query: ImageQuery) -> list[Expression]:
    filters = dict(query.filters)
    if "device_id" in filters:
        device = Device.get_or_none(Device.device_id == filters["device_id"])
        if device is None:
            raise NotFound(f"device {filters['device_id']!r} is not known to this catalog",
                           "device_id")
        filters["device_id"] = device.id
    conditions = []
    for flt in FILTERS:
        if flt.param in filters:
            condition = flt.condition(filters[flt.param])
            if condition is not None:
                conditions.append(condition)
    if "project_id" in filters:
        # As upstream: stage narrows by batch stage only when a project is given.
        conditions.append(_batches_of_project(filters["project_id"], filters.get("stage")))
    return conditions


ROW_FIELDS = (
    Image.id, Image.filename, Image.storage_key, Image.width, Image.height,
    Device.device_id, Image.batch, Batch.name.alias("batch_name"),
    Project.name.alias("project_name"), Image.annotation_status, Image.split,
    Image.split_locked, DatasetVersion.version_name, Image.created_at, Image.updated_at,
    Image.sync_state, Image.synced_at, Image.evicted_at,
)


def image_rows():
    """The select every image read shares: the row plus the names it is shown with."""
    return (
        Image.select(*ROW_FIELDS)
        .join(Device, on=(Image.device == Device.id))
        .switch(Image).join(Batch, on=(Image.batch == Batch.id))
        .join(Project, JOIN.LEFT_OUTER, on=(Batch.project == Project.id))
        .switch(Image).join(DatasetVersion, JOIN.LEFT_OUTER, on=(Image.version == DatasetVersion.id))
    )


def select_images(query: ImageQuery) -> Page:
    conditions = _conditions(query)
    # COUNT(*) straight on the table: peewee's .count() wraps the query in a subquery,
    # which costs about 10x on a million rows.
    counted = Image.select(fn.COUNT(SQL("*")))
    rows = image_rows()
    for condition in conditions:
        counted = counted.where(condition)
        rows = rows.where(condition)
    total = counted.scalar() or 0
    sort_field = getattr(Image, query.sort)
    if query.order == "desc":
        ordering = (sort_field.desc(), Image.id.desc())
    else:
        ordering = (sort_field.asc(), Image.id.asc())
    page_rows = list(rows.order_by(*ordering).limit(query.limit).offset(query.offset).dicts())
    if query.include_annotations:
        attach_annotations(page_rows)
    return Page(page_rows, total, query.limit, query.offset)


ANNOTATION_FIELDS = (
    Annotation.id, Annotation.image, Annotation.class_value, Annotation.type, Annotation.geometry,
    Annotation.x_center, Annotation.y_center, Annotation.width, Annotation.height,
    Annotation.confidence, Annotation.source, Annotation.z_order, Annotation.created_at,
    Annotation.updated_at,
)


def attach_annotations(rows: list[dict[str, Any]]) -> None:
    """Give every row its full annotation list, with one statement for the whole page."""
    by_image: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
    if by_image:
        found = (
            Annotation.select(*ANNOTATION_FIELDS)
            .where(Annotation.image.in_(list(by_image)))
            .order_by(Annotation.image, Annotation.z_order, Annotation.id)
            .dicts()
        )
        for ann in found:
            by_image[ann["image"]].append(ann)
    for row in rows:
        row["annotations"] = by_image[row["id"]]


def get_image_row(image_id: int) -> dict[str, Any]:
    row = image_rows().where(Image.id == image_id).dicts().first()
    if row is None:
        raise NotFound(f"image {image_id} does not exist", "id")
    attach_annotations([row])
    return row
