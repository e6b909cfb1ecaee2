"""Text helpers every engine's SQL shares. No imports of the package's own."""

from __future__ import annotations


def like_pattern(term: str) -> str:
    """'%term%' with '%', '_' and '\\' escaped (used with ESCAPE '\\'): they are literal."""
    escaped = term.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return f"%{escaped}%"
