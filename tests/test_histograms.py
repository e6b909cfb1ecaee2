"""The histograms of GET /data/images/facets: captures per hour, day and week in a zone's
calendar (across Europe's change to summer time on 2026-03-29 and New York's of 2026-03-08,
and a 30-minute-offset zone), empty buckets included, per class; and annotation confidences in
bins. The oracle buckets each plain row by its own local wall clock in Python."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import timed_catalog

pytestmark = pytest.mark.both_engines
START, HOUR = timed_catalog.START_US, timed_catalog.HOUR_US


def _local_start(us: int, unit: str, tz: ZoneInfo) -> datetime:
    local = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).astimezone(tz)
    if unit == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    if unit == "week":
        day -= timedelta(days=day.weekday())
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def oracle(rows: list[dict], column: str, unit: str, zone: str) -> list[dict]:
    tz = ZoneInfo(zone)
    counted: dict[str, int] = {}
    for r in rows:
        key = _local_start(r[column], unit, tz).isoformat()
        counted[key] = counted.get(key, 0) + 1
    if not rows:
        return []
    # Every bucket between: walk the rows' span an hour of elapsed time at a time.
    first = min(r[column] for r in rows) // 1_000_000
    last = max(r[column] for r in rows) // 1_000_000
    keys: list[str] = []
    for second in range(first - first % 900, last + 1, 900):
        key = _local_start(second * 1_000_000, unit, tz).isoformat()
        if not keys or keys[-1] != key:
            keys.append(key)
    return [{"start": k, "count": counted.get(k, 0)} for k in keys]


# 10 minutes into hour 24 and 40 minutes into hour 96 of the catalog (captures at 24h+18min
# and 96h+12min): both cut hours hold an image.
CUT_AFTER = timed_catalog.START_US + 24 * timed_catalog.HOUR_US + 600_000_000
CUT_BEFORE = timed_catalog.START_US + 96 * timed_catalog.HOUR_US + 2_400_000_000


@pytest.fixture
def timed(settings, client, auth_headers):
    timed_catalog.build(settings)
    return client, auth_headers()


def _get(client, headers, params: dict) -> dict:
    resp = client.get("/data/images/facets", query_string=params, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["data"]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("unit", ["hour", "day", "week"])
def test_time_histogram_matches_the_wall_clock(timed, zone, unit):
    client, headers = timed
    rows = timed_catalog.rows()
    for column, query, kept in (
        ("captured_at", {}, rows),
        ("created_at", {"device_id": "cam02"}, [r for r in rows if r["device_id"] == "cam02"]),
        # A range cutting hours that hold captures: whole hours from the hour tables.
        (
            "captured_at",
            {"captured_after": str(CUT_AFTER // 1000), "captured_before": str(CUT_BEFORE // 1000)},
            [r for r in rows if CUT_AFTER <= r["captured_at"] < CUT_BEFORE],
        ),
        (
            "captured_at",
            {"captured_after": str(CUT_AFTER // 1000), "device_id": "cam01"},
            [r for r in rows if CUT_AFTER <= r["captured_at"] and r["device_id"] == "cam01"],
        ),
    ):
        params = {**query, "histogram": f"{column}:{unit}", "facets": "split"}
        if zone != "UTC":
            params["tz"] = zone
        hist = _get(client, headers, params)["histogram"]
        assert hist["field"] == column and hist["unit"] == unit and hist["tz"] == zone
        assert hist["buckets"] == oracle(kept, column, unit, zone)
        assert sum(b["count"] for b in hist["buckets"]) == len(kept)


def test_the_day_summer_time_begins_has_23_hours(timed):
    client, headers = timed
    hist = _get(
        client,
        headers,
        {"histogram": "captured_at:hour", "tz": "Europe/Berlin", "facets": "split"},
    )["histogram"]["buckets"]
    starts = [b["start"] for b in hist]
    assert "2026-03-29T01:00:00+01:00" in starts and "2026-03-29T03:00:00+02:00" in starts
    assert not any(s.startswith("2026-03-29T02:") for s in starts)
    days = _get(
        client, headers, {"histogram": "captured_at:day", "tz": "Europe/Berlin", "facets": "split"}
    )["histogram"]["buckets"]
    assert [d["start"] for d in days[2:5]] == [
        "2026-03-28T00:00:00+01:00",
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
    ]


def test_histogram_by_class_splits_each_bucket(timed):
    client, headers = timed
    rows = timed_catalog.rows()
    for size in (30, 2):
        hist = _get(
            client,
            headers,
            {
                "histogram": "captured_at:day",
                "histogram_by": "class_value",
                "facet_size": str(size),
                "facets": "class_value",
            },
        )["histogram"]["buckets"]
        overall: dict[str, int] = {}
        for r in rows:
            for c in r["classes"]:
                overall[c] = overall.get(c, 0) + 1
        top = sorted(overall, key=lambda c: (-overall[c], c))[:size]
        tz = ZoneInfo("UTC")
        for bucket in hist:
            inside = [
                r
                for r in rows
                if _local_start(r["captured_at"], "day", tz).isoformat() == bucket["start"]
            ]
            want = [{"value": c, "count": sum(c in r["classes"] for r in inside)} for c in top]
            if len(overall) > size:
                rest = sum(len(r["classes"] - set(top)) for r in inside)
                want.append({"value": "other", "count": rest})
            assert bucket["classes"] == want, bucket["start"]


def _bins(confidences: list[float], bins: int) -> list[int]:
    counts = [0] * bins
    for c in confidences:
        k = max(k for k in range(bins) if c >= k / bins)
        counts[k] += 1
    return counts


@pytest.mark.parametrize("bins", [1, 4, 10])
def test_confidence_bins(timed, bins):
    client, headers = timed
    rows = timed_catalog.rows()
    data = _get(client, headers, {"confidence_bins": str(bins), "device_id": "cam01"})
    mine = [c for r in rows if r["device_id"] == "cam01" for _, c in r["annotations"]]
    got = data["confidence"]
    assert [b["count"] for b in got["bins"]] == _bins([c for c in mine if c is not None], bins)
    assert got["without_confidence"] == sum(c is None for c in mine)
    assert got["bins"][0]["start"] == 0 and got["bins"][-1]["end"] == 1
    per_class = _get(client, headers, {"confidence_bins": str(bins), "class_values": "crack,rust"})[
        "confidence"
    ]["by_class"]
    for value in ("crack", "rust"):
        theirs = [
            c
            for r in rows
            if r["classes"] & {"crack", "rust"}
            for cls, c in r["annotations"]
            if cls == value
        ]
        assert [b["count"] for b in per_class[value]["bins"]] == _bins(theirs, bins)
