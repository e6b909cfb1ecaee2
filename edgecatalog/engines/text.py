"""SQL text every engine's module shares: the portable parts of what they render. No imports
of the package's own at runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    return (
        f"SELECT a.class_value{image_keys}, count(DISTINCT i.id) FROM annotation a "
        f"JOIN image i ON i.id = a.image_id WHERE {where.format(id='a.image_id')} "
        f"GROUP BY a.class_value{image_keys}"
    )


def backfill(table: CountTable) -> list[str]:
    """Statements that rebuild ``table`` from the rows (the same on every engine)."""
    return [
        f"DELETE FROM {table.name}",
        f"INSERT INTO {table.name} {grouped_select(table, 'true')}",
    ]
