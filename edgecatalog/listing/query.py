"""Parse: a list request's query string into a typed query. The filters of the image list
are declared here once, as data: their parameter, parser, SQL condition, help text, and the
count-table key columns their condition reads (what the planner needs to pick a count table).

``parse_image_query`` checks everything a client sends (each value given once, bounded,
of its type); ``parse_filtered_page`` does the same for the other lists (batches, projects)
from their own declarations. No Flask, no SQL execution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import param_types, params
from ..models import ANNOTATION_STATUSES, SPLITS, STAGES, SYNC_STATES
from .sql import (
    ANNOTATION_SOURCES,
    annotated_cond,
    column_cond,
    search_cond,
    source_cond,
    time_cond,
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


# No count table can answer a filter that declares this (a substring, an exact filename).
UNCOUNTED = None


@dataclass(frozen=True)
class Filter:
    """One filter parameter: how to parse its text and the condition it adds.

    ``condition`` is a ``Sql`` fragment over the alias ``t`` (the image list; it also reads the
    count tables, whose key columns share the image's names) or a peewee expression (the
    batch list). ``counted_by``: the count-table key columns the condition reads, or
    ``UNCOUNTED``. ``weak_index``: a 3-4 valued column whose index the planner must not pick
    over a batch's (see ``plan``)."""

    param: str
    parse: Callable[[str, str], Any]
    condition: Callable[[Any], Any]
    help: str
    counted_by: tuple[str, ...] | None = ()
    weak_index: bool = False


def _column(name: str, *, weak_index: bool = False, counted: bool = True):
    return {
        "condition": lambda v: column_cond(name, v),
        "counted_by": (name,) if counted else UNCOUNTED,
        "weak_index": weak_index,
    }


def _time_range(column: str) -> tuple[Filter, Filter]:
    """``<stem>_after`` (inclusive) and ``<stem>_before`` (exclusive) on a timestamp column.
    A captured_at range's whole hours are counted from the tables keyed by the capture's hour
    (``listing.hours``), its cut hours and any created_at range from the rows: ``created_at``
    through its index (and the (column, created_at) indexes beside another filter)
    (docs/performance.md has the figures)."""
    stem = column.removesuffix("_at")
    form = "ISO 8601 with an offset or Z, or epoch milliseconds"
    return (
        Filter(
            f"{stem}_after",
            param_types.INSTANT,
            lambda v: time_cond(column, ">=", v),
            f"edge catalog extension: {column} at or after this instant ({form})",
            counted_by=UNCOUNTED,
        ),
        Filter(
            f"{stem}_before",
            param_types.INSTANT,
            lambda v: time_cond(column, "<", v),
            f"edge catalog extension: {column} before this instant ({form})",
            counted_by=UNCOUNTED,
        ),
    )


# Every filter of GET /data/images. Adding one is one row here, a test row and a line in
# docs/api.md; its parser (``param_types``) declares the type the OpenAPI document gives it,
# and a key column in ``counts`` (with its migration) when a count table should answer it.
# project_id and stage have no condition of their own: they combine into one (``plan``).
FILTERS: tuple[Filter, ...] = (
    Filter(
        "project_id",
        param_types.NULLABLE_ID,
        lambda v: None,
        "integer project id, or null for images whose batch has no project",
        counted_by=("batch_id",),
    ),
    Filter("batch_id", param_types.ID, help="integer batch id", **_column("batch_id")),
    Filter(
        "device_id",
        param_types.TEXT,
        help="exact device id; 404 when the catalog does not know the device",
        **_column("device_id"),
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
        help="pending, in_progress or completed",
        **_column("annotation_status", weak_index=True),
    ),
    Filter(
        "split",
        param_types.choice(SPLITS + ("all",)),
        lambda v: None if v == "all" else column_cond("split", v),
        "train, val, test, none, or all (no filter)",
        counted_by=("split",),
        weak_index=True,
    ),
    # The view passes [limits] max_class_values; this bound only lets the parser stand alone.
    # The planner renders the class condition itself (an IN list or a probe per row).
    Filter(
        "class_values",
        param_types.csv(10**6),
        lambda v: None,
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
        counted_by=UNCOUNTED,
    ),
    Filter(
        "filename", param_types.TEXT, help="exact filename", **_column("filename", counted=False)
    ),
    Filter(
        "sync_state",
        param_types.choice(SYNC_STATES),
        help="edge catalog extension: pending, synced, quarantined, local_only, skipped (the "
        "selection rules keep it local) or deferred (past a quota)",
        **_column("sync_state", weak_index=True),
    ),
    *_time_range("captured_at"),
    *_time_range("created_at"),
    # "Changed since the last export": the review queue of edits (``updated_at``, indexed).
    *_time_range("updated_at"),
    # The review queues. The two confidence bounds combine into one condition (``plan``),
    # with the classes when class_values is given: one annotation must meet them all.
    Filter(
        "min_confidence",
        param_types.UNIT,
        lambda v: None,
        "edge catalog extension: images with an annotation (of class_values, when given) "
        "whose confidence is at least this (0..1)",
        counted_by=UNCOUNTED,
    ),
    Filter(
        "max_confidence",
        param_types.UNIT,
        lambda v: None,
        "edge catalog extension: images with an annotation (of class_values, when given) "
        "whose confidence is at most this (0..1); with min_confidence, the same annotation",
        counted_by=UNCOUNTED,
    ),
    Filter(
        "has_annotations",
        param_types.BOOL,
        annotated_cond,
        "edge catalog extension: true, images with at least one annotation; false, none",
        counted_by=("class_set_id",),
    ),
    Filter(
        "annotation_source",
        param_types.choice(ANNOTATION_SOURCES),
        source_cond,
        "edge catalog extension: images with an annotation from a model (any inference), "
        "drawn or checked by hand (manual) or imported with a dataset (import)",
        counted_by=UNCOUNTED,
    ),
    Filter(
        "model_version",
        param_types.TEXT,
        help="edge catalog extension: exact model_version the image was captured with",
        **_column("model_version"),
    ),
    Filter(
        "pinned",
        param_types.BOOL,
        help="edge catalog extension: true, images kept by retention whatever the disk; false, "
        "the others",
        **_column("pinned", counted=False),
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
    args: Any,
    *,
    max_class_values: int = 50,
    max_chars: int = 1024,
    filters: tuple[Filter, ...] = FILTERS,
) -> ImageQuery:
    names = [f.param for f in filters] + list(OPTION_PARAMS)
    given = params.single_values(args, names, max_chars=max_chars)
    parsed = parse_filter_values(given, max_class_values=max_class_values, filters=filters)
    # Above the maximum is clamped (as upstream); below 1 is an error.
    limit, offset = params.parse_page(given, default_limit=DEFAULT_LIMIT, max_limit=MAX_LIMIT)
    return ImageQuery(
        filters=parsed,
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


def parse_filter_values(
    given: Mapping[str, str], *, max_class_values: int = 50, filters: tuple[Filter, ...] = FILTERS
) -> dict[str, Any]:
    """The filters among ``given`` (the single values of a query string) parsed, as
    ``ImageQuery.filters`` holds them: for the list, and for every request that selects the
    list's images by the same filters (``datasets.export``)."""
    parsed = {f.param: f.parse(f.param, given[f.param]) for f in filters if f.param in given}
    if "class_values" in given:
        parsed["class_values"] = params.parse_csv(
            "class_values", given["class_values"], max_items=max_class_values
        )
    return parsed


@dataclass(frozen=True)
class FilteredPage:
    """A list request of the other lists: its filters (parsed values) and its page."""

    filters: Mapping[str, Any] = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def parse_filtered_page(
    args: Any, filters: tuple[Filter, ...] = (), *, max_chars: int = 1024
) -> FilteredPage:
    """The filters declared for a list (none: a page alone) and ``limit``/``offset``."""
    names = [f.param for f in filters] + list(params.PAGE_PARAMS)
    given = params.single_values(args, names, max_chars=max_chars)
    parsed = {f.param: f.parse(f.param, given[f.param]) for f in filters if f.param in given}
    limit, offset = params.parse_page(given)
    return FilteredPage(parsed, limit, offset)
