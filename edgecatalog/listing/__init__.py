"""The image list's one owner: parse, plan, render, and the count tables behind its totals.

- ``query``: parse. The filters and options declared as data; a query string into a typed
  ``ImageQuery`` (and the other lists' filters and page, ``parse_filtered_page``).
- ``counts``: the count tables declared once (table, key columns, what they count); the
  migrations, the bulk-load statements and the planner's choice are derived from them.
- ``plan``: plan and run. Which count table answers the total, how classes and searches are
  narrowed, and the ``Page`` with the choices in words (``edgecatalog explain``).
- ``sql``: render. Conditions and statements as ``Sql`` fragments that carry their values.
- ``scan_cache``: the results of the statements that scan, kept until a write, and a search's
  matches per zone, carried across inserts.
- ``facets``, ``histograms``, ``stats``: how many of each value, when (``facet_query`` parses
  the request: the list's filters and ``FACET_OPTIONS``), from the count tables where they
  cover the filters.
- ``zones``: the zones declared (runs of ids with bounds of their sort keys, kept by triggers);
  ``zone_page``: a page found zone by zone, in the order of those bounds.

What differs per engine (trigger text, the substring index, the gate, ids as one value) is
asked of ``edgecatalog.engines``. No Flask.
"""

from __future__ import annotations

from .facet_query import FACET_OPTIONS, FacetRequest, parse_facet_request
from .facets import FACET_NAMES, FACETS
from .plan import IMAGES, ImageList, Page, get_image_row, known_device_pk, select_images
from .query import (
    DEFAULT_LIMIT,
    FILTERS,
    MAX_LIMIT,
    OPTION_PARAMS,
    OPTIONS,
    SORTS,
    Filter,
    FilteredPage,
    ImageQuery,
    parse_filter_values,
    parse_filtered_page,
    parse_image_query,
)
from .sql import ANNOTATION_COLUMNS
from .stats import answer_stats, stats_table

__all__ = [
    "ANNOTATION_COLUMNS",
    "DEFAULT_LIMIT",
    "FACETS",
    "FACET_NAMES",
    "FACET_OPTIONS",
    "FILTERS",
    "IMAGES",
    "MAX_LIMIT",
    "OPTIONS",
    "OPTION_PARAMS",
    "SORTS",
    "FacetRequest",
    "Filter",
    "FilteredPage",
    "ImageList",
    "ImageQuery",
    "Page",
    "answer_stats",
    "get_image_row",
    "known_device_pk",
    "parse_facet_request",
    "parse_filter_values",
    "parse_filtered_page",
    "parse_image_query",
    "select_images",
    "stats_table",
]
