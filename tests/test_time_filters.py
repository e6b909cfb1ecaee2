"""The time-range filters of the list (an extension to the upstream contract):
``captured_after``/``captured_before`` and ``created_after``/``created_before``, inclusive
after and exclusive before, given as ISO 8601 with an offset or as epoch milliseconds, alone
and with every other kind of filter, every sort, against an oracle over the plain rows; a bad
value is a 400 naming the parameter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import timed_catalog
from test_list_errors import assert_error
from werkzeug.datastructures import MultiDict

from edgecatalog.listing.plan import select_images
from edgecatalog.listing.query import parse_image_query
from edgecatalog.models import database

pytestmark = pytest.mark.both_engines
HOUR = timed_catalog.HOUR_US
MINUTE = HOUR // 60
START = timed_catalog.START_US


def _iso(us: int, offset_hours: int = 0) -> str:
    zone = timezone(timedelta(hours=offset_hours))
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).astimezone(zone).isoformat()


def _bound(us: int, form: str) -> tuple[str, int]:
    """A bound as sent (text) and as meant (microseconds, ms precision for the ms form)."""
    if form == "ms":
        return str(us // 1000), us // 1000 * 1000
    if form == "offset":
        return _iso(us, 2), us
    return _iso(us).replace("+00:00", "Z"), us


RANGES = [
    {"captured_after": START + 24 * HOUR},
    {"captured_before": START + 72 * HOUR},
    {"captured_after": START + 48 * HOUR, "captured_before": START + 120 * HOUR},
    {"created_after": START + 100 * HOUR},
    {"created_after": START + 50 * HOUR, "created_before": START + 150 * HOUR},
    # Exactly on an image's created_at: inclusive after, exclusive before.
    {"created_after": START + 10 * HOUR, "created_before": START + 20 * HOUR},
    {"created_after": START + 40 * HOUR, "captured_before": START + 200 * HOUR},
    {"captured_after": START + 10_000 * HOUR},  # nothing
    # Cutting hours that hold captures (24h+18min, 96h+12min): whole hours from the hour
    # tables, the cut ones from the rows.
    {
        "captured_after": START + 24 * HOUR + 10 * MINUTE,
        "captured_before": START + 96 * HOUR + 40 * MINUTE,
    },
    {"captured_after": START + 24 * HOUR + 20 * MINUTE},
    {"captured_before": START + 96 * HOUR + 5 * MINUTE},
    {
        "captured_after": START + 24 * HOUR + 5 * MINUTE,
        "captured_before": START + 24 * HOUR + 50 * MINUTE,
    },
    {"created_before": START},  # nothing
]
OTHERS = [
    {},
    {"device_id": "cam02"},
    {"split": "val"},
    {"annotation_status": "completed", "device_id": "cam01"},
    {"class_values": "crack"},
    {"class_values": "scratch,rust"},
    {"search": "line1"},
    {"search": "1_0"},
]


@pytest.fixture
def timed(settings, client, auth_headers):
    timed_catalog.build(settings)
    return client, auth_headers()


def _oracle(query: dict, sort: str = "created_at", order: str = "desc") -> list[int]:
    kept = [r for r in timed_catalog.rows() if timed_catalog.matches(r, query)]
    kept.sort(key=lambda r: (r[sort], r["id"]), reverse=order == "desc")
    return [r["id"] for r in kept]


def _get(client, headers, params: dict) -> dict:
    resp = client.get("/data/images", query_string=params, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_every_range_with_every_other_filter_matches_the_oracle(timed):
    client, headers = timed
    forms = ("z", "ms", "offset")
    for n, rng in enumerate(RANGES):
        for m, others in enumerate(OTHERS):
            form = forms[(n + m) % 3]
            sent = {k: _bound(v, form) for k, v in rng.items()}
            query = {**others, **sent}
            want = _oracle(query)
            params = {**others, **{k: text for k, (text, _) in sent.items()}, "limit": "100"}
            body = _get(client, headers, params)
            assert [r["id"] for r in body["data"]] == want, (params, form)
            assert body["meta"]["total"] == len(want), params


def test_a_range_is_whole_hours_from_the_tables_and_its_cut_hours_from_the_rows(timed):
    """The oracle test above holds every total; this one holds which way it was counted."""
    database.connect(reuse_if_open=True)
    cut = {"captured_after": str((START + 24 * HOUR + 10 * MINUTE) // 1000)}
    cases = [
        ({**cut, "device_id": "cam02"}, "image_hour_facet over the range's whole hours plus"),
        ({**cut, "class_values": "crack"}, "image_hour_class (one class) over the range's"),
        (
            {"captured_after": str((START + 24 * HOUR) // 1000)},
            "image_hour_count over the range's whole hours",
        ),
        ({**cut, "search": "line1"}, "COUNT(*) over image"),
    ]
    for params, how in cases:
        page = select_images(parse_image_query(MultiDict(params)))
        assert page.plan["total"].startswith(f"count table kept by triggers: {how}") or (
            how.startswith("COUNT") and "trigram" in page.plan.get("search", "")
        ), (params, page.plan)
        assert page.total == len(_oracle(params_as_meant(params))), params


def params_as_meant(params: dict) -> dict:
    """The query as the oracle takes it: time bounds as (text, microseconds)."""
    return {k: (v, int(v) * 1000) if k.startswith("captured") else v for k, v in params.items()}


@pytest.mark.parametrize("sort", ["created_at", "updated_at", "filename"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pages_of_a_range_in_every_sort(timed, sort, order):
    client, headers = timed
    rng = {"captured_after": _bound(START + 30 * HOUR, "z")}
    rng["captured_before"] = _bound(START + 190 * HOUR, "ms")
    want = _oracle(rng, sort, order)
    assert 10 < len(want) < timed_catalog.IMAGES
    got = []
    for offset in range(0, len(want), 7):
        params = {k: t for k, (t, _) in rng.items()}
        params.update(sort=sort, order=order, limit="7", offset=str(offset))
        body = _get(client, headers, params)
        assert body["meta"]["total"] == len(want)
        got += [r["id"] for r in body["data"]]
    assert got == want


BAD = [
    ("captured_after", "yesterday"),
    ("captured_after", "2026-03-26T10:00:00"),  # no offset: refused, not guessed
    ("captured_before", "2026-03-26"),
    ("created_after", "2026-13-01T00:00:00Z"),
    ("created_before", "1.5"),
    ("created_before", ""),
    ("captured_before", "99999999999999999999"),
    ("captured_after", "2026-03-26T10:00:00+25:00"),
    ("created_after", "１２３"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_instant_is_a_400_naming_the_parameter(client, auth_headers, name, value):
    resp = client.get("/data/images", query_string={name: value}, headers=auth_headers())
    err = assert_error(resp, 400, "VALIDATION_ERROR", name)
    assert name in err["message"] and "offset or Z" in err["message"]


def test_a_changed_capture_time_is_found_at_once(timed, settings):
    """The captured range's created_at window comes from the zones' bounds: a row whose
    captured_at moves far away (or a new image captured long ago) widens them in the same
    write, so the range finds it at once."""
    from conftest import seed_image
    from count_checks import assert_zones_bound_rows

    from edgecatalog.models import database

    client, headers = timed
    far = START - 400 * 24 * HOUR
    moved = timed_catalog.rows()[7]["id"]
    database.execute_sql("UPDATE image SET captured_at = ? WHERE id = ?", (far, moved))
    new = seed_image(settings, filename="old_scan.jpg", seed=999, captured_at=far + HOUR).id
    assert_zones_bound_rows()
    rng = {"captured_after": _bound(far, "ms"), "captured_before": _bound(far + 2 * HOUR, "z")}
    want = _oracle(rng)
    assert sorted(want) == sorted([moved, new])
    body = _get(client, headers, {k: t for k, (t, _) in rng.items()})
    assert [r["id"] for r in body["data"]] == want and body["meta"]["total"] == 2
