"""Timestamps: stored as integer microseconds since the Unix epoch (UTC), sent as RFC 3339.

Integers keep rows small and indexes fast at a million images; the wire format is
``2026-11-28T10:00:00Z`` or ``2026-11-28T10:00:00.123456Z`` when there are microseconds.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def now_us() -> int:
    return time.time_ns() // 1000


@functools.lru_cache(maxsize=1024)
def _minute(minutes: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minutes * 60))


def format_ts(us: int | None) -> str:
    """Microseconds to RFC 3339 UTC. A list page formats ~150 of them, mostly close together,
    so the part up to the minute is cached (about half the cost of strftime per call)."""
    if us is None:
        return ""
    seconds, micros = divmod(us, 1_000_000)
    minutes, secs = divmod(seconds, 60)
    if micros:
        return f"{_minute(minutes)}{secs:02d}.{micros:06d}Z"
    return f"{_minute(minutes)}{secs:02d}Z"


def parse_ts(text: str) -> int:
    """Parse an ISO-8601/RFC 3339 timestamp; naive times are taken as UTC. Raises ValueError."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
