"""A page found zone by zone: the zones that hold a search's matches (or a filter's
``created_at`` window, ``window``), visited in the order of their bounds, instead of a walk of
the sort index from one end.

A walk by ``created_at`` finds a term whose matches sit together three weeks back only after
reading every newer row (~0.5 s at a million images). The carried per-zone counts of the term
(``scan_cache.search_zones``) say which zones hold matches; ``image_zone``'s bounds
(``listing.zones``) say which of them can hold the first rows of the sort order. Each visit
reads one run of ids through the primary key with every condition, keeps the best
``offset + limit`` rows so far, and stops when the next zone's bound cannot beat the last of
them: exact, whatever the ids' order (bounds only ever widen), and fast when ids follow time,
as inserts make them. ``cost`` says what the visit would read, so the planner can prefer a
filter's own index when that reads fewer rows; ``created_window`` bounds ``created_at`` by the
zones holding matches, so such an index reads only their time span. No Flask.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from ..models import database
from . import zones
from .sql import Sql, compose, where

ZONE_ROWS = 1 << zones.ZONE_BITS


def cost(matches: Mapping[int, int]) -> int:
    """The most rows the visit reads: every id of every zone holding a match."""
    return ZONE_ROWS * sum(1 for n in matches.values() if n)


def page_ids(
    matches: Mapping[int, int],
    conds: list[Sql],
    sort: str,
    order: str,
    limit: int,
    offset: int,
    *,
    exact: bool = False,
) -> list[int]:
    """The ids of the page (``limit`` rows after ``offset``) in order, among the rows of the
    zones in ``matches`` (zone -> the term's matches there) that meet every condition of
    ``conds`` (the term's among them). ``exact``: ``matches`` counts exactly the rows meeting
    ``conds`` (a search alone), so a deep offset skips whole zones by their counts."""
    desc = order == "desc"
    lo, hi = zones.BOUNDS[sort]
    holding = sorted(z for z, n in matches.items() if n)
    if not holding or limit <= 0:
        return []
    # The bounds of the zones holding matches, best first (a zone with matches has bounds;
    # one without, from a catalog whose zone triggers were off, counts as unbounded).
    rows = database.execute_sql(
        f"SELECT zone, {lo}, {hi} FROM {zones.TABLE} WHERE zone BETWEEN ? AND ?",
        (holding[0], holding[-1]),
    ).fetchall()
    known = {int(z): (int(a), int(b)) for z, a, b in rows}
    inf = float("inf")
    span = {z: known.get(z, (-inf, inf)) for z in holding}
    # Ordered by the bound a row of the zone can reach first: its greatest key for desc.
    first = (lambda z: span[z][1]) if desc else (lambda z: span[z][0])
    queue = sorted(holding, key=first, reverse=desc)
    start = _skipped(queue, span, matches, offset, desc) if exact else 0
    offset -= sum(matches[z] for z in queue[:start])
    wanted = offset + limit
    # Rows as (key, id) so that the best row is the largest (desc) or, negated, the smallest.
    best: list[tuple[int, int]] = []
    visited, step = start, 1
    while visited < len(queue):
        if len(best) >= wanted:
            last = best[0]  # the worst of the best, as the heap keeps it
            bound = first(queue[visited])
            if (desc and bound < last[0]) or (not desc and -bound < last[0]):
                break
        # Visit the next zones together: one statement reads as many zones as the term's
        # counts say could fill the page, then twice as many each time.
        group, need = [], max(wanted - len(best), 1)
        while visited < len(queue) and (len(group) < step or need > 0):
            zone = queue[visited]
            group.append(zone)
            need -= matches[zone]
            visited += 1
        step *= 2
        for key, image_id in _rows(group, conds, sort, desc, wanted):
            item = (key, image_id) if desc else (-key, -image_id)
            if len(best) < wanted:
                heapq.heappush(best, item)
            elif item > best[0]:
                heapq.heapreplace(best, item)
    ordered = sorted(best, reverse=True)
    ids = [i if desc else -i for _, i in ordered]
    return ids[offset:wanted]


def _skipped(
    queue: list[int],
    span: Mapping[int, tuple[float, float]],
    matches: Mapping[int, int],
    offset: int,
    desc: bool,
) -> int:
    """How many zones at the front of ``queue`` the offset passes whole: each one's rows all
    sort before every row of the zones after it (its bounds do not overlap theirs), and its
    matches fit in what remains of the offset."""
    # The bound the later zones reach first: for desc the greatest key after each position.
    after: list[float] = [0.0] * len(queue)
    reach = -float("inf") if desc else float("inf")
    for i in range(len(queue) - 1, -1, -1):
        after[i] = reach
        lo, hi = span[queue[i]]
        reach = max(reach, hi) if desc else min(reach, lo)
    skipped = 0
    for i, zone in enumerate(queue):
        lo, hi = span[zone]
        apart = lo > after[i] if desc else hi < after[i]
        if not apart or matches[zone] > offset:
            break
        offset -= matches[zone]
        skipped += 1
    return skipped


def window(conds: list[Sql]) -> dict[int, int]:
    """The zones whose ``created_at`` bounds overlap those of the rows meeting ``conds`` (two
    index probes where a (column, created_at) index serves the conditions), each counted as
    full: where a filter's rows sit together in time, the only zones that can hold them."""
    first = compose("(SELECT min(t.created_at) FROM image t{})", where(conds))
    last = compose("(SELECT max(t.created_at) FROM image t{})", where(conds))
    lo, hi = zones.BOUNDS["created_at"]
    statement = compose(
        f"SELECT zone FROM {zones.TABLE} WHERE {hi} >= {{}} AND {lo} <= {{}}", first, last
    )
    return {int(z): ZONE_ROWS for (z,) in database.execute_sql(*statement).fetchall()}


def captured_window(after: int | None, before: int | None) -> Sql:
    """The created_at window a captured_at range implies: every row captured in [after,
    before) sits in a zone whose captured bounds meet the range, so its created_at lies within
    those zones' created_at bounds (bounds only widen: exact, whatever the ids' order). Added
    beside the range, it lets a created_at index serve both the count and the page (no zone
    meets the range: the bounds are NULL and nothing matches, as it should)."""
    lo, hi = zones.BOUNDS["created_at"]
    c_lo, c_hi = zones.BOUNDS["captured_at"]
    meets = [Sql(f"{c_hi} >= ?", (after,))] if after is not None else []
    if before is not None:
        meets.append(Sql(f"{c_lo} < ?", (before,)))
    first = compose(f"(SELECT min({lo}) FROM {zones.TABLE}{{}})", where(meets))
    last = compose(f"(SELECT max({hi}) FROM {zones.TABLE}{{}})", where(meets))
    return compose("t.created_at >= {} AND t.created_at <= {}", first, last)


def created_window(matches: Mapping[int, int]) -> Sql:
    """A condition on ``t.created_at``: within the created_at bounds of the zones holding a
    match, which hold every row of those zones (bounds only widen). Beside ``within``, it lets
    a (column, created_at) index read only the matches' time span of its column's rows (a
    split's rows over the ten days a term's matches fill, not all of them)."""
    ranges = _runs(z for z, n in matches.items() if n)
    if not ranges:
        return Sql("1 = 0")
    lo, hi = zones.BOUNDS["created_at"]
    runs = Sql(
        " WHERE " + " OR ".join("zone BETWEEN ? AND ?" for _ in ranges),
        tuple(v for r in ranges for v in r),
    )
    first = compose(f"(SELECT min({lo}) FROM {zones.TABLE}{{}})", runs)
    last = compose(f"(SELECT max({hi}) FROM {zones.TABLE}{{}})", runs)
    return compose("t.created_at >= {} AND t.created_at <= {}", first, last)


def _runs(group: Iterable[int]) -> list[tuple[int, int]]:
    """Zones as runs of consecutive ones, (first, last) each."""
    runs: list[tuple[int, int]] = []
    for zone in sorted(group):
        if runs and runs[-1][1] + 1 == zone:
            runs[-1] = (runs[-1][0], zone)
        else:
            runs.append((zone, zone))
    return runs


def within(matches: Mapping[int, int]) -> Sql:
    """A condition on ``t.id``: in a zone holding a match (runs of consecutive zones as one
    id range each)."""
    return _in_zones(z for z, n in matches.items() if n)


def _in_zones(group: Iterable[int]) -> Sql:
    ranges = [(zones.id_range(a)[0], zones.id_range(b)[1]) for a, b in _runs(group)]
    if not ranges:
        return Sql("1 = 0")
    return Sql(
        "(" + " OR ".join("t.id BETWEEN ? AND ?" for _ in ranges) + ")",
        tuple(v for r in ranges for v in r),
    )


def _rows(
    group: list[int], conds: list[Sql], sort: str, desc: bool, wanted: int
) -> list[tuple[int, int]]:
    """(sort key, id) of the best ``wanted`` rows of the zones in ``group`` meeting ``conds``:
    the engine keeps the top rows (a zone of a common term holds thousands of matches, which
    Python would otherwise sort under the GIL)."""
    direction = "DESC" if desc else "ASC"
    statement = compose(
        f"SELECT t.{sort}, t.id FROM image t{{}} ORDER BY t.{sort} {direction}, t.id "
        f"{direction} LIMIT {{}}",
        where([_in_zones(group), *conds]),
        Sql("?", (wanted,)),
    )
    return [(int(k), int(i)) for k, i in database.execute_sql(*statement).fetchall()]
