"""Histograms of the list's filtered images: captures (or creations) per hour, day or week in
a time zone's calendar, optionally per class, and their annotations' confidences in bins.

Captures are counted per UTC hour from a count table keyed by the hour when one covers the
other filters and the zone is a whole number of hours from UTC (a range's cut hours from their
rows); otherwise the rows are counted per UTC quarter-hour in one grouped statement (every
zone's offset from UTC is a whole number of quarter-hours, so no quarter-hour straddles a
local hour, day or week). Python then adds the hours and quarter-hours into the zone's
buckets, stepping the calendar with ``zoneinfo``: a day across a change to or from summer time
is 23 or 25 hours, and the hour repeated in autumn is two buckets with their own offsets. Exact; nothing cached. No Flask.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ..errors import ValidationError
from ..models import database
from . import counts, hours
from .plan import IMAGES, ImageList, _Conditions
from .query import ImageQuery
from .sql import Sql, compose, where

QUARTER_US = 900_000_000
MAX_BUCKETS = 20_000  # ~2.3 years by hour: a larger span asks for a larger unit


def _start(us: int, unit: str, tz: ZoneInfo) -> datetime:
    """The local start of the bucket holding instant ``us``."""
    local = datetime.fromtimestamp(us / 1e6, tz=timezone.utc).astimezone(tz)
    if unit == "hour":
        return local - timedelta(
            minutes=local.minute, seconds=local.second, microseconds=local.microsecond
        )
    day = local.date() - timedelta(days=local.weekday() if unit == "week" else 0)
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _next(start: datetime, unit: str, tz: ZoneInfo) -> datetime:
    if unit == "hour":  # an hour of elapsed time, whatever the wall clock does
        return (start.astimezone(timezone.utc) + timedelta(hours=1)).astimezone(tz)
    day = start.date() + timedelta(days=7 if unit == "week" else 1)
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _us(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


def _buckets(first: int, last: int, unit: str, tz: ZoneInfo) -> Iterator[datetime]:
    moment, end, n = _start(first, unit, tz), _us(_start(last, unit, tz)), 0
    while _us(moment) <= end:
        n += 1
        if n > MAX_BUCKETS:
            raise ValidationError(
                "histogram", f"the range holds more than {MAX_BUCKETS} buckets: take a larger unit"
            )
        yield moment
        moment = _next(moment, unit, tz)


def time_histogram(
    query: ImageQuery,
    column: str,
    unit: str,
    tz: ZoneInfo,
    *,
    by_class: bool = False,
    size: int = 30,
    images: ImageList = IMAGES,
) -> list[dict[str, Any]]:
    """``[{start, count}]`` from the first bucket holding an image to the last, empty ones
    included; ``by_class``: each with ``classes`` ``[{value, count}]`` (images carrying the
    class; the ``size`` commonest over the range, the rest summed as ``other``)."""
    conditions = images.conditions(query)
    conds = conditions.render()
    quarter = f"t.{column} / {QUARTER_US}"
    # Each instant (a quarter-hour's or a whole hour's start) with its images.
    instants = (
        _from_hours(conditions, images, tz) if column == "captured_at" and not by_class else None
    )
    if instants is None:
        counted = compose(
            f"SELECT {quarter}, count(*) FROM image t{{}} GROUP BY {quarter}", where(conds)
        )
        instants = {
            int(q) * QUARTER_US: int(n) for q, n in database.execute_sql(*counted).fetchall()
        }
    if not instants:
        return []
    totals: dict[int, int] = {}
    for instant, n in instants.items():
        key = _us(_start(instant, unit, tz))
        totals[key] = totals.get(key, 0) + n
    out = [
        {"start": moment.isoformat(), "count": totals.get(_us(moment), 0)}
        for moment in _buckets(min(instants), max(instants), unit, tz)
    ]
    if by_class:
        _split_by_class(out, conds, quarter, unit, tz, size)
    return out


def _from_hours(conds: _Conditions, images: ImageList, tz: ZoneInfo) -> dict[int, int] | None:
    """Captures per UTC hour from a count table keyed by the hour (a range's cut hours per
    quarter-hour from their rows), or None when no table covers the other filters or ``tz``
    is not a whole number of hours from UTC over them (a local hour, day or week would then
    start inside a UTC hour)."""
    if conds.classes is not None:
        return None
    if conds.hours is not None:
        wanted = conds.hour_columns
    else:
        wanted = None if conds.columns is None else {*conds.columns, hours.COLUMN}
    table = (
        None
        if wanted is None
        else counts.source_for(wanted, tables=images.count_tables, per_class=False)
    )
    if table is None:
        return None
    if conds.hours is not None:
        others, edges = conds.hour_others(), conds.edge_rows()
    else:
        others, edges = conds.others(), []
    statement = compose(
        f"SELECT t.{hours.COLUMN}, sum(t.n) FROM {table.name} t{{}} GROUP BY t.{hours.COLUMN} "
        "HAVING sum(t.n) > 0",
        where(others),
    )
    out = {int(h) * hours.HOUR_US: int(n) for h, n in database.execute_sql(*statement)}
    for instant in out:
        offset = datetime.fromtimestamp(instant / 1e6, tz=timezone.utc).astimezone(tz).utcoffset()
        if offset is None or offset.total_seconds() % 3600:
            return None
    quarter = f"t.captured_at / {QUARTER_US}"
    for edge in edges:
        counted = compose(
            f"SELECT {quarter}, count(*) FROM image t{{}} GROUP BY {quarter}", where(edge)
        )
        for q, n in database.execute_sql(*counted).fetchall():
            out[int(q) * QUARTER_US] = out.get(int(q) * QUARTER_US, 0) + int(n)
    return out


def _split_by_class(
    out: list[dict[str, Any]], conds: list[Sql], quarter: str, unit: str, tz: ZoneInfo, size: int
) -> None:
    statement = compose(
        f"SELECT {quarter}, a.class_value, count(DISTINCT t.id) FROM image t JOIN annotation a "
        f"ON a.image_id = t.id{{}} GROUP BY {quarter}, a.class_value",
        where(conds),
    )
    per: dict[int, dict[str, int]] = {}
    overall: dict[str, int] = {}
    for q, value, n in database.execute_sql(*statement).fetchall():
        key = _us(_start(int(q) * QUARTER_US, unit, tz))
        bucket = per.setdefault(key, {})
        bucket[value] = bucket.get(value, 0) + int(n)
        overall[value] = overall.get(value, 0) + int(n)
    top = sorted(overall, key=lambda v: (-overall[v], v))[:size]
    for item in out:
        counts = per.get(_us(datetime.fromisoformat(item["start"])), {})
        classes = [{"value": v, "count": counts.get(v, 0)} for v in top]
        rest = sum(n for v, n in counts.items() if v not in top)
        if len(overall) > size:
            classes.append({"value": "other", "count": rest})
        item["classes"] = classes


def confidence_histogram(
    query: ImageQuery, bins: int, images: ImageList = IMAGES
) -> dict[str, Any]:
    """The confidences of the filtered images' annotations in ``bins`` equal bins of [0, 1]
    (bin k: k/bins <= confidence < (k+1)/bins; the last also holds 1), per class when the
    query names classes (their annotations only), with how many had no confidence (manual).
    One statement: each bin's lower bound compared, portable on both engines."""
    conds = images.conditions(query)
    classes = conds.classes
    rendered = conds.render()
    if classes:
        rendered.append(Sql(f"a.class_value IN ({','.join('?' * len(classes))})", classes))
    above = ", ".join(
        # The bound in the column's own type: PostgreSQL keeps a 4-byte REAL (0.7 is stored
        # as 0.69999999, which the API answers as 0.7), so 0.7 must land in the bin from 0.7.
        # SQLite's REAL is 8 bytes: the same comparison as written.
        "sum(CASE WHEN a.confidence >= CAST(? AS REAL) THEN 1 ELSE 0 END)"
        for _ in range(1, bins)
    )
    group = "a.class_value" if classes else "''"
    statement = compose(
        f"{{}}SELECT {group}, count(*), count(a.confidence){', ' + above if above else ''} "
        f"FROM annotation a JOIN image t ON t.id = a.image_id{{}}"
        f"{' GROUP BY a.class_value' if classes else ''}",
        Sql("", tuple(k / bins for k in range(1, bins))),
        where(rendered),
    )
    found = {row[0]: [int(v or 0) for v in row[1:]] for row in database.execute_sql(*statement)}
    if not classes:
        return _binned(found.get("", [0, 0]), bins)
    # Every class named, those without annotations here too (all bins 0).
    return {"by_class": {c: _binned(found.get(c, [0, 0]), bins) for c in sorted(classes)}}


def _binned(row: list[int], bins: int) -> dict[str, Any]:
    """(all annotations, those with a confidence, then how many reach each bin's lower bound
    after the first) as the bins' counts."""
    total, with_conf, *at_least = row
    edges = [with_conf, *(at_least or [0] * (bins - 1)), 0]
    return {
        "bins": [
            {"start": k / bins, "end": (k + 1) / bins, "count": edges[k] - edges[k + 1]}
            for k in range(bins)
        ],
        "without_confidence": total - with_conf,
    }
