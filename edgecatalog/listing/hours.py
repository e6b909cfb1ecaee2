"""A captured_at range as whole hours and the rest: the count tables keyed by the capture's
hour (``image.captured_hour``, UTC, computed by the engine; ``counts.CAPTURED_HOUR``) answer
the whole hours; the rows of the one or two hours the range covers in part are counted from
``image`` (at most two hours of captures: ~2,800 rows at a million images over 30 days).

``split`` turns the range into both; the planner (``plan``), the facets and the histograms
use them when a table keyed by the hour covers the request's other filters. Exact: a row is in
a whole hour of the range or in a part-covered one, never both. No Flask.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sql import Sql

HOUR_US = 3_600_000_000
COLUMN = "captured_hour"


@dataclass(frozen=True)
class Hours:
    """Hours ``first`` to ``end`` (exclusive) lie wholly in the range [``after``, ``before``)
    (None: unbounded on that side)."""

    first: int | None
    end: int | None
    after: int | None
    before: int | None

    def whole(self) -> list[Sql]:
        """Conditions on a count table's hour key: the whole hours."""
        out = []
        if self.first is not None:
            out.append(Sql(f"t.{COLUMN} >= ?", (self.first,)))
        if self.end is not None:
            out.append(Sql(f"t.{COLUMN} < ?", (self.end,)))
        return out

    def edges(self) -> list[tuple[int, int]]:
        """The captured_at ranges [lo, hi) of the hours the range covers in part: none, one
        or two, each inside one hour."""
        out = []
        if self.after is not None and self.first is not None and self.first * HOUR_US != self.after:
            out.append((self.after, self.first * HOUR_US))
        if self.before is not None and self.end is not None and self.end * HOUR_US != self.before:
            out.append((self.end * HOUR_US, self.before))
        return out


def split(after: int | None, before: int | None) -> Hours | None:
    """The range [after, before) in microseconds as whole hours and cut ones; None when it
    holds no whole hour (its rows are then few enough to count)."""
    first = None if after is None else -(-after // HOUR_US)
    end = None if before is None else before // HOUR_US
    if first is not None and end is not None and first >= end:
        return None
    return Hours(first, end, after, before)
