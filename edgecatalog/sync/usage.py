"""What the selection rules have sent: images and bytes per rule per minute in ``sync_usage``
(written in the transaction that records the uploads as sent, so a replayed pass never counts
twice), read back as quota use, recent throughput and per-rule totals.

Periods are wall-clock minutes (microseconds). After the clock is set back, minutes recorded
"in the future" still count towards the current hour and day: a quota errs on the side of
sending less, never more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from peewee import EXCLUDED, fn

from ..models import SyncUsage
from ..timeutil import now_us

MINUTE_US = 60_000_000
TOTAL = 0  # the period that holds the totals since the catalog began
KEEP_US = 2 * 24 * 3600 * 1_000_000  # minutes older than this are dropped (a day's quota + 1)
THROUGHPUT_SECONDS = 300  # the "recent" of recent throughput


@dataclass(frozen=True)
class Spent:
    images: int = 0
    bytes: int = 0


def record_sent(sent: Iterable[tuple[str, int]], now: int | None = None) -> None:
    """Count uploads (rule, bytes) as sent now; call inside the transaction that marks them."""
    per_rule: dict[str, list[int]] = {}
    for rule, size in sent:
        tally = per_rule.setdefault(rule, [0, 0])
        tally[0] += 1
        tally[1] += size
    if not per_rule:
        return
    minute = (now or now_us()) // MINUTE_US * MINUTE_US
    rows = [
        {"rule": rule, "period": period, "images": images, "bytes": size}
        for rule, (images, size) in per_rule.items()
        for period in (minute, TOTAL)
    ]
    SyncUsage.insert_many(rows).on_conflict(
        conflict_target=[SyncUsage.rule, SyncUsage.period],
        update={
            SyncUsage.images: SyncUsage.images + EXCLUDED.images,
            SyncUsage.bytes: SyncUsage.bytes + EXCLUDED.bytes,
        },
    ).execute()


def prune(now: int | None = None) -> None:
    """Drop minutes no quota or throughput figure reads any more (totals stay)."""
    SyncUsage.delete().where(
        (SyncUsage.period != TOTAL) & (SyncUsage.period < (now or now_us()) - KEEP_US)
    ).execute()


def spent_since(since_us: int) -> dict[str, Spent]:
    """Per rule, what was sent in the minutes from ``since_us`` on."""
    rows = (
        SyncUsage.select(SyncUsage.rule, fn.SUM(SyncUsage.images), fn.SUM(SyncUsage.bytes))
        .where(
            (SyncUsage.period != TOTAL) & (SyncUsage.period >= since_us // MINUTE_US * MINUTE_US)
        )
        .group_by(SyncUsage.rule)
        .tuples()
    )
    return {rule: Spent(int(images or 0), int(size or 0)) for rule, images, size in rows}


def totals() -> dict[str, Spent]:
    rows = SyncUsage.select(SyncUsage.rule, SyncUsage.images, SyncUsage.bytes).where(
        SyncUsage.period == TOTAL
    )
    return {row.rule: Spent(row.images, row.bytes) for row in rows}


def recent(now: int | None = None) -> tuple[Spent, float]:
    """Everything sent in about the last THROUGHPUT_SECONDS (whole minutes, the current one
    too), and the seconds that covers: from the first minute that sent anything to now, so a
    drain that began a minute ago is not averaged over five."""
    now = now or now_us()
    since = (now - THROUGHPUT_SECONDS * 1_000_000) // MINUTE_US * MINUTE_US
    images, size, first = (
        SyncUsage.select(
            fn.SUM(SyncUsage.images), fn.SUM(SyncUsage.bytes), fn.MIN(SyncUsage.period)
        )
        .where((SyncUsage.period != TOTAL) & (SyncUsage.period >= since))
        .tuples()
        .get()
    )
    seconds = min(max((now - (first or now)) / 1e6, 1.0), THROUGHPUT_SECONDS + 60.0)
    return Spent(int(images or 0), int(size or 0)), seconds
