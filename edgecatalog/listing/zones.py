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
# A key -> its (least, greatest) bound columns in ``image_zone``. created_at and updated_at
# are the sort keys a page is found by (``zone_page``); captured_at (migration 0015) is a
# filter's: a captured_at range is only in the zones whose captured bounds meet it, so their
# created_at bounds imply an exact created_at window that the created_at indexes serve.
BOUNDS: dict[str, tuple[str, str]] = {
    "created_at": ("created_lo", "created_hi"),
    "updated_at": ("updated_lo", "updated_hi"),
    "captured_at": ("captured_lo", "captured_hi"),
}


def columns(keys: dict[str, tuple[str, str]] | None = None) -> tuple[str, ...]:
    return tuple(c for pair in (BOUNDS if keys is None else keys).values() for c in pair)


def id_range(zone: int) -> tuple[int, int]:
    """The first and last id of ``zone``."""
    return zone << ZONE_BITS, ((zone + 1) << ZONE_BITS) - 1
