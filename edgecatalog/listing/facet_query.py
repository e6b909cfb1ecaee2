"""Parse: a facets request (``GET /data/images/facets``, ``edgecatalog stats``): the list's
filters (the same parser, the same meaning) and the options of the facets and histograms,
declared once as ``FACET_OPTIONS`` (the OpenAPI document and docs/api.md follow them).
No Flask, no SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import param_types, params
from ..errors import ValidationError
from .facets import FACET_NAMES
from .query import FILTERS, ImageQuery, parse_filter_values

DEFAULT_FACET_SIZE, MAX_FACET_SIZE = 30, 1000
UNITS = ("hour", "day", "week")
HISTOGRAM_FIELDS = ("captured_at", "created_at")
MAX_CONFIDENCE_BINS = 100


def _facet_names(name: str, text: str) -> tuple[str, ...]:
    names = params.parse_csv(name, text, max_items=len(FACET_NAMES))
    for item in names:
        params.parse_choice(name, item, FACET_NAMES)
    if not names:
        raise ValidationError(name, f"{name} must name at least one of {', '.join(FACET_NAMES)}")
    return names


def _histogram(name: str, text: str) -> tuple[str, str]:
    column, _, unit = text.partition(":")
    if column not in HISTOGRAM_FIELDS or unit not in UNITS:
        raise ValidationError(
            name,
            f"{name} must be FIELD:UNIT with FIELD one of {', '.join(HISTOGRAM_FIELDS)} and "
            f"UNIT one of {', '.join(UNITS)}, got {text[:40]!r}",
        )
    return column, unit


def _zone(name: str, text: str) -> ZoneInfo:
    try:
        if not text or text.startswith(("/", ".")) or ".." in text:
            raise ValueError(text)
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            name, f"{name} must be an IANA time zone such as Europe/Berlin, got {text[:40]!r}"
        ) from None


FACET_OPTIONS: tuple[param_types.Param, ...] = (
    param_types.Param(
        "facets",
        param_types.TypedParser(_facet_names, {"type": "string"}),
        f"comma-separated facets, any of {', '.join(FACET_NAMES)} (default: all)",
    ),
    param_types.Param(
        "facet_size",
        param_types.TypedParser(
            lambda n, t: params.parse_int(n, t, minimum=1, maximum=MAX_FACET_SIZE),
            {"type": "integer", "minimum": 1, "maximum": MAX_FACET_SIZE},
        ),
        f"values per facet (default {DEFAULT_FACET_SIZE}, at most {MAX_FACET_SIZE}); the "
        "rest are counted in other",
        extra={"default": DEFAULT_FACET_SIZE},
    ),
    param_types.Param(
        "histogram",
        param_types.TypedParser(
            _histogram, {"type": "string", "pattern": "^(captured_at|created_at):(hour|day|week)$"}
        ),
        "a time histogram of the filtered images: captured_at or created_at, by hour, day or "
        "week (e.g. captured_at:day)",
    ),
    param_types.Param(
        "tz",
        param_types.TypedParser(_zone, {"type": "string"}),
        "the IANA zone whose calendar the histogram's buckets follow (default UTC)",
        extra={"default": "UTC"},
    ),
    param_types.Param(
        "histogram_by",
        param_types.choice(("class_value",)),
        "class_value: each bucket split per class (the facet_size commonest, the rest as other)",
    ),
    param_types.Param(
        "confidence_bins",
        param_types.TypedParser(
            lambda n, t: params.parse_int(n, t, minimum=1, maximum=MAX_CONFIDENCE_BINS),
            {"type": "integer", "minimum": 1, "maximum": MAX_CONFIDENCE_BINS},
        ),
        "a histogram of the filtered images' annotation confidences in this many equal bins "
        "of [0, 1] (per class when class_values names classes)",
    ),
)


@dataclass(frozen=True)
class FacetRequest:
    query: ImageQuery
    facets: tuple[str, ...] = FACET_NAMES
    facet_size: int = DEFAULT_FACET_SIZE
    histogram: tuple[str, str] | None = None
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    histogram_by: str | None = None
    confidence_bins: int | None = None


def parse_facet_request(
    args: Any, *, max_class_values: int = 50, max_chars: int = 1024
) -> FacetRequest:
    names = [f.param for f in FILTERS] + [o.param for o in FACET_OPTIONS]
    given = params.single_values(args, names, max_chars=max_chars)
    filters = parse_filter_values(given, max_class_values=max_class_values)
    options: Mapping[str, Any] = {
        o.param: o.parse(o.param, given[o.param]) for o in FACET_OPTIONS if o.param in given
    }
    if "histogram_by" in options and "histogram" not in options:
        raise ValidationError("histogram_by", "histogram_by needs histogram")
    return FacetRequest(ImageQuery(filters=filters), **options)
