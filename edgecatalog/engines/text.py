"""SQL text every engine's module shares: the portable parts of what they render. No imports
of the package's own at runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..listing.counts import CountTable


def like_pattern(term: str) -> str:
    """'%term%' with '%', '_' and '\\' escaped (used with ESCAPE '\\'): they are literal."""
    escaped = term.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return f"%{escaped}%"


def cols(names: tuple[str, ...], prefix: str = "") -> str:
    return ", ".join(prefix + n for n in names)


def grouped_select(table: CountTable, where: str) -> str:
    """A count table's rows counted from the ``image`` (and ``annotation``) rows; ``where`` is
    a condition on the image id, written ``{id}``."""
    keys = table.key_names
    if not table.per_class:
        return (
            f"SELECT {cols(keys)}, count(*) FROM image WHERE {where.format(id='id')} "
            f"GROUP BY {cols(keys)}"
        )
    image_keys = f", {cols(keys, 'i.')}" if keys else ""
    annotations = ", count(*)" if table.annotations else ""
    return (
        f"SELECT a.class_value{image_keys}, count(DISTINCT i.id){annotations} FROM annotation a "
        f"JOIN image i ON i.id = a.image_id WHERE {where.format(id='a.image_id')} "
        f"GROUP BY a.class_value{image_keys}"
    )


def count_columns(table: CountTable, *, big: bool = False) -> str:
    """The count columns after a table's keys: ``n``, and ``annotations`` when it has it."""
    kind = "BIGINT" if big else "INTEGER"
    extra = f", annotations {kind} NOT NULL" if table.annotations else ""
    return f"n {kind} NOT NULL{extra}"


def count_update(table: CountTable, n: str, annotations: str | None, prefix: str = "") -> str:
    """An upsert's SET: ``n`` (and ``annotations``, when the table has it) plus the values."""
    out = f"n = {prefix}n + {n}"
    if table.annotations:
        out += f", annotations = {prefix}annotations + {annotations}"
    return out


def class_annotations(table: str, image: str) -> str:
    """How many annotations of a count-table row's class the image ``image`` carries."""
    return (
        f"(SELECT count(*) FROM annotation x WHERE x.image_id = {image} "
        f"AND x.class_value = {table}.class_value)"
    )


def backfill(table: CountTable) -> list[str]:
    """Statements that rebuild ``table`` from the rows (the same on every engine)."""
    return [
        f"DELETE FROM {table.name}",
        f"INSERT INTO {table.name} {grouped_select(table, 'true')}",
    ]


# -- zones (``listing.zones``, passed in): portable text; the engines add their triggers ------


def zone_select(zones: Any, where: str, keys: Mapping[str, tuple[str, str]]) -> str:
    """Each zone's bounds of ``keys`` (column -> its bound columns), computed from the image
    rows matching ``where``."""
    bounds = ", ".join(f"min({key}), max({key})" for key in keys)
    zone = f"id >> {zones.ZONE_BITS}"
    return f"SELECT {zone}, {bounds} FROM image WHERE {where} GROUP BY {zone}"


def zone_values(zones: Any, row: str, keys: Mapping[str, tuple[str, str]]) -> str:
    """One image row (``new`` in a trigger) as its zone's bounds of ``keys``."""
    bounds = ", ".join(f"{row}.{key}, {row}.{key}" for key in keys)
    return f"VALUES ({row}.id >> {zones.ZONE_BITS}, {bounds})"


def zone_widen(zones: Any, source: str, keys: Mapping[str, tuple[str, str]]) -> str:
    """Add the bounds ``source`` gives (``zone_select`` or ``zone_values`` of the same
    ``keys``) to the zones: a zone's bounds widen, never narrow; a row that widens nothing
    writes nothing."""
    t, sets, wider = zones.TABLE, [], []
    for lo, hi in keys.values():
        sets += [
            f"{lo} = CASE WHEN excluded.{lo} < {t}.{lo} THEN excluded.{lo} ELSE {t}.{lo} END",
            f"{hi} = CASE WHEN excluded.{hi} > {t}.{hi} THEN excluded.{hi} ELSE {t}.{hi} END",
        ]
        wider += [f"excluded.{lo} < {t}.{lo}", f"excluded.{hi} > {t}.{hi}"]
    return (
        f"INSERT INTO {t} (zone, {cols(zones.columns(keys))}) {source} ON CONFLICT (zone) DO UPDATE "
        f"SET {', '.join(sets)} WHERE {' OR '.join(wider)}"
    )


def confidence_bits(img: str, bit: str) -> str:
    """The confidence bits (``confidence_bits``) of image ``img`` from its annotations, as
    one scalar subquery; ``bit``: the engine's bit of ``confidence``. A sum of distinct
    powers of two is their bitwise OR (neither engine's OR aggregate is portable)."""
    return (
        f"(SELECT coalesce(sum(b), 0) FROM (SELECT DISTINCT {bit} AS b FROM annotation "
        f"WHERE image_id = {img} AND confidence IS NOT NULL) d)"
    )
