"""Timestamps on the wire: ``format_ts`` (cached per minute) against datetime's own ISO
formatting, and ``parse_ts`` as its inverse."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from edgecatalog.timeutil import format_ts, parse_ts

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# 1900-01-01 .. 9999-12-31, whole seconds half of the time (they carry no fraction).
MICROS = st.integers(min_value=-2_208_988_800_000_000, max_value=253_402_300_799_999_999)
TIMES = st.one_of(MICROS, MICROS.map(lambda us: us // 1_000_000 * 1_000_000))


def oracle(us: int) -> str:
    # isoformat leaves out a zero fraction, as the contract's timestamps do.
    text = (EPOCH + timedelta(microseconds=us)).replace(tzinfo=None).isoformat()
    return text + "Z"


@given(TIMES)
def test_format_matches_datetime(us: int) -> None:
    assert format_ts(us) == oracle(us)
    assert parse_ts(format_ts(us)) == us


def test_same_minute_different_seconds_and_none() -> None:
    base = 1_764_325_200_000_000  # 2025-11-28T10:20:00Z
    assert [format_ts(base + s * 1_000_000) for s in (0, 59)] == [
        "2025-11-28T10:20:00Z",
        "2025-11-28T10:20:59Z",
    ]
    assert format_ts(base + 60_000_001) == "2025-11-28T10:21:00.000001Z"
    assert format_ts(None) == ""
