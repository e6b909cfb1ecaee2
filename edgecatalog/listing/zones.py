"""Zones, declared: the image ids cut into runs of ``2 ** ZONE_BITS`` (an image's zone is
``id >> ZONE_BITS``), each with bounds of the sort keys of its rows.

``image_zone`` holds, per zone, the least and greatest ``created_at`` and ``updated_at`` any of
its rows has had. Triggers widen a zone's bounds on every insert and on every change of either
column and never narrow them (a deleted row leaves them as they were), so a bound always holds:
no row of a zone sorts outside it. The engines render the table, its triggers, its backfill and
a bulk chunk's grouped statement from this declaration (``engines.sqlite``,
``engines.postgres``); ``listing.zone_page`` reads it. Ids follow insertion, and an insert's
``created_at`` is its time, so the zones of a catalog come out nearly sorted by both keys.
No Flask, no engine, no models: pure declaration, which the engines import.
"""

from __future__ import annotations

ZONE_BITS = 12  # 4,096 ids: ~245 zones at a million images, one statement's worth of rows
TABLE = "image_zone"
# A sort key -> its (least, greatest) bound columns in ``image_zone``.
BOUNDS: dict[str, tuple[str, str]] = {
    "created_at": ("created_lo", "created_hi"),
    "updated_at": ("updated_lo", "updated_hi"),
}


def columns() -> tuple[str, ...]:
    return tuple(c for pair in BOUNDS.values() for c in pair)


def id_range(zone: int) -> tuple[int, int]:
    """The first and last id of ``zone``."""
    return zone << ZONE_BITS, ((zone + 1) << ZONE_BITS) - 1
