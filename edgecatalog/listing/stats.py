"""How many, of what, when: a facets request answered whole (the facets, the list's total for
the same filters, a time histogram and a confidence histogram when asked), for
``GET /data/images/facets`` and ``edgecatalog stats`` alike, and its terminal table. No Flask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .facet_query import FacetRequest
from .facets import facet_counts
from .histograms import confidence_histogram, time_histogram
from .plan import IMAGES, ImageList


def answer_stats(request: FacetRequest, images: ImageList = IMAGES) -> tuple[dict[str, Any], int]:
    """The response's data, and the list's exact total for the same filters."""
    query = request.query
    data: dict[str, Any] = {
        "facets": {
            f.name: f.to_dict()
            for f in facet_counts(query, request.facets, request.facet_size, images)
        }
    }
    if request.histogram is not None:
        column, unit = request.histogram
        data["histogram"] = {
            "field": column,
            "unit": unit,
            "tz": request.tz.key,
            "buckets": time_histogram(
                query,
                column,
                unit,
                request.tz,
                by_class=request.histogram_by == "class_value",
                size=request.facet_size,
                images=images,
            ),
        }
    if request.confidence_bins is not None:
        data["confidence"] = confidence_histogram(query, request.confidence_bins, images)
    return data, images.count(query)


def stats_table(data: Mapping[str, Any], total: int) -> str:
    """The answer as a terminal table."""
    lines = [f"images: {total}"]
    for name, facet in data["facets"].items():
        flag = " (counted without its own filter)" if facet["excludes_own_filter"] else ""
        lines.append(f"\n{name}{flag}")
        for item in facet["values"]:
            extra = f"  {item['annotations']} annotations" if "annotations" in item else ""
            value = "null" if item["value"] is None else str(item["value"])
            lines.append(f"  {value:<36} {item['count']:>10}{extra}")
        if facet["truncated"]:
            lines.append(f"  {'(other values)':<36} {facet['other']:>10}")
    if "histogram" in data:
        hist = data["histogram"]
        lines.append(f"\n{hist['field']} per {hist['unit']} ({hist['tz']})")
        lines += [f"  {b['start']:<36} {b['count']:>10}" for b in hist["buckets"]]
    if "confidence" in data:
        lines.append("\nconfidence")
        groups = data["confidence"].get("by_class", {"": data["confidence"]})
        for value, group in groups.items():
            for b in group.get("bins", []):
                label = f"{value} {b['start']:.2f}-{b['end']:.2f}".strip()
                lines.append(f"  {label:<36} {b['count']:>10}")
            lines.append(
                f"  {(value + ' no confidence').strip():<36} {group['without_confidence']:>10}"
            )
    return "\n".join(lines)
