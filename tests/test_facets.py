"""GET /data/images/facets: every facet of every filter combination equals an oracle that
counts the plain rows in Python (each facet without its own filter), meta.total equals the
list's, and after each kind of write through another connection every count reads back at
once (nothing cached that can go stale). Bad options are a 400 naming the parameter."""

from __future__ import annotations

import pytest
import requests
import timed_catalog
from conftest import seed_image
from count_checks import assert_counts_match_rows
from test_list_errors import assert_error

from edgecatalog.catalog import NewAnnotation
from edgecatalog.listing import FACETS
from edgecatalog.models import database

pytestmark = pytest.mark.both_engines
START, HOUR = timed_catalog.START_US, timed_catalog.HOUR_US
VALUE = {
    "class_value": None,
    "device_id": "device_id",
    "annotation_status": "annotation_status",
    "split": "split",
    "sync_state": "sync_state",
    "batch_id": "batch_id",
    "project_id": "project_id",
    "stage": "stage",
    "source": "source",
    "model_version": "model_version",
}


def oracle(query: dict, size: int = 30) -> dict:
    rows = timed_catalog.rows()
    out = {}
    for facet in FACETS:
        mine = {k: v for k, v in query.items() if k not in facet.excludes}
        kept = [r for r in rows if timed_catalog.matches(r, mine)]
        counted: dict = {}
        annotations: dict = {}
        for r in kept:
            if facet.name == "class_value":
                for c in r["classes"]:
                    counted[c] = counted.get(c, 0) + 1
                for c, _ in r["annotations"]:
                    annotations[c] = annotations.get(c, 0) + 1
            else:
                v = r[VALUE[facet.name]]
                counted[v] = counted.get(v, 0) + 1
        ranked = sorted(
            counted.items(), key=lambda kv: (-kv[1], kv[0] is None, "" if kv[0] is None else kv[0])
        )
        values = [{"value": v, "count": n} for v, n in ranked[:size]]
        if facet.name == "class_value":
            for item in values:
                item["annotations"] = annotations[item["value"]]
        out[facet.name] = {
            "values": values,
            "truncated": len(ranked) > size,
            "other": sum(n for _, n in ranked[size:]),
            "excludes_own_filter": any(p in query for p in facet.excludes),
        }
    return out


@pytest.fixture
def timed(settings, client, auth_headers):
    timed_catalog.build(settings)
    database.connect(reuse_if_open=True)
    batches = [r[0] for r in database.execute_sql("SELECT id FROM batch ORDER BY id")]
    projects = dict(database.execute_sql("SELECT name, id FROM project").fetchall())
    return client, auth_headers(), batches, projects


def _queries(batches: list[int], projects: dict) -> list[dict]:
    after = (str((START + 60 * HOUR) // 1000), (START + 60 * HOUR) // 1000 * 1000)
    before = ("2026-04-02T12:00:00+02:00", START + (7 * 24 + 10) * HOUR)
    minute = HOUR // 60
    cut_after = (str((START + 24 * HOUR + 10 * minute) // 1000), START + 24 * HOUR + 10 * minute)
    cut_before = (str((START + 96 * HOUR + 40 * minute) // 1000), START + 96 * HOUR + 40 * minute)
    return [
        {},
        {"device_id": "cam02"},
        {"split": "val", "annotation_status": "pending"},
        {"split": "all", "sync_state": "synced"},
        {"class_values": "crack"},
        {"class_values": "scratch,rust", "device_id": "cam01"},
        {"class_values": "dent", "sync_state": "local_only", "split": "train"},
        {"batch_id": str(batches[1])},
        {"project_id": str(projects["Alpha"])},
        {"project_id": "null"},
        {"project_id": str(projects["Beta"]), "stage": "annotating"},
        {"project_id": str(projects["Alpha"]), "stage": "complete", "class_values": "crack"},
        {"search": "line1"},
        {"search": "_01", "class_values": "crack,dent"},
        {"captured_after": after},
        {"captured_after": after, "captured_before": before, "device_id": "cam03"},
        {"created_before": before, "class_values": "rust", "annotation_status": "completed"},
        {"filename": "line2_005.jpg"},
        # Ranges cutting hours that hold captures: whole hours from the hour tables, the cut
        # ones from the rows.
        {"captured_after": cut_after},
        {"captured_after": cut_after, "captured_before": cut_before},
        {"captured_before": cut_before, "device_id": "cam02", "split": "val"},
        {"captured_after": cut_after, "project_id": str(projects["Alpha"])},
        {"captured_after": cut_after, "class_values": "crack"},
        # The review queue of images without annotations: no class at all.
        {"has_annotations": "false"},
        {"has_annotations": "false", "device_id": "cam02"},
        {"has_annotations": "true", "split": "val"},
    ]


def _sent(query: dict) -> dict:
    return {k: v[0] if isinstance(v, tuple) else v for k, v in query.items()}


def _facets(get, headers, query: dict, **extra) -> dict:
    resp = get("/data/images/facets", query_string={**_sent(query), **extra}, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_every_facet_of_every_filter_combination_matches_the_oracle(timed):
    client, headers, batches, projects = timed
    for query in _queries(batches, projects):
        body = _facets(client.get, headers, query)
        assert body["data"]["facets"] == oracle(query), query
        listed = client.get("/data/images", query_string=_sent(query), headers=headers)
        assert body["meta"] == {"total": listed.get_json()["meta"]["total"]}, query
        assert body["meta"]["total"] == sum(
            timed_catalog.matches(r, query) for r in timed_catalog.rows()
        )


def test_facet_size_truncates_and_counts_the_rest(timed):
    client, headers, _, _ = timed
    query = {"annotation_status": "completed"}
    body = _facets(client.get, headers, query, facet_size="2", facets="split,class_value,batch_id")
    want = oracle(query, size=2)
    assert body["data"]["facets"] == {k: want[k] for k in ("split", "class_value", "batch_id")}
    assert body["data"]["facets"]["split"]["truncated"] is True
    assert body["data"]["facets"]["split"]["other"] > 0


def _write_each_kind(settings, batches):
    """One write of each kind the counts follow, each through the test's own connection."""
    ids = [r["id"] for r in timed_catalog.rows()]
    yield (
        "insert",
        lambda: seed_image(
            settings,
            filename="new_line1.jpg",
            device_id="cam04",
            seed=500,
            captured_at=START + 5 * HOUR,
            annotations=(NewAnnotation("crack", "bbox", timed_catalog.BOX, confidence=0.9),),
        ),
    )
    yield (
        "status",
        lambda: database.execute_sql(
            "UPDATE image SET annotation_status = 'completed', split = 'test' WHERE id = ?",
            (ids[3],),
        ),
    )
    yield (
        "origin",
        lambda: database.execute_sql(
            "UPDATE image SET source = 'upload', model_version = 'v9' WHERE id = ?", (ids[4],)
        ),
    )
    yield (
        "class",
        lambda: database.execute_sql(
            "UPDATE annotation SET class_value = 'rust' WHERE image_id = ?", (ids[6],)
        ),
    )
    yield (
        "project",
        lambda: database.execute_sql(
            "UPDATE batch SET project_id = NULL, stage = 'complete' WHERE id = ?", (batches[0],)
        ),
    )
    yield "delete", lambda: database.execute_sql("DELETE FROM image WHERE id = ?", (ids[9],))


def test_every_count_reads_back_at_once_after_a_write_through_another_connection(
    timed, settings, live_server
):
    """The service's connections (waitress threads) are not the test's: each write commits on
    the test's connection, and the very next request answers every facet as the rows now
    are."""
    _, headers, batches, projects = timed
    queries = [
        {},
        {"device_id": "cam01"},
        {"class_values": "crack"},
        {"project_id": str(projects["Alpha"])},
        {"search": "line"},
    ]
    for name, write in _write_each_kind(settings, batches):
        with database.atomic():
            write()
        assert_counts_match_rows()
        for query in queries:
            resp = requests.get(
                f"{live_server.url}/data/images/facets", params=query, headers=headers, timeout=10
            )
            assert resp.status_code == 200, resp.text
            assert resp.json()["data"]["facets"] == oracle(query), (name, query)


BAD = [
    ("facets", "colour"),
    ("facets", "split,nosuch"),
    ("facets", ","),
    ("facet_size", "0"),
    ("facet_size", "1001"),
    ("facet_size", "many"),
    ("histogram", "captured_at"),
    ("histogram", "updated_at:day"),
    ("histogram", "captured_at:month"),
    ("tz", "Mars/Olympus"),
    ("tz", "../../etc/passwd"),
    ("confidence_bins", "0"),
    ("confidence_bins", "101"),
    ("histogram_by", "device_id"),
    ("captured_after", "2026-03-26T10:00:00"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_option_is_a_400_naming_it(client, auth_headers, name, value):
    extra = {"histogram": "captured_at:day"} if name in ("tz", "histogram_by") else {}
    resp = client.get(
        "/data/images/facets", query_string={**extra, name: value}, headers=auth_headers()
    )
    assert_error(resp, 400, "VALIDATION_ERROR", name)


def test_histogram_by_needs_a_histogram(client, auth_headers):
    resp = client.get(
        "/data/images/facets", query_string={"histogram_by": "class_value"}, headers=auth_headers()
    )
    assert_error(resp, 400, "VALIDATION_ERROR", "histogram_by")


def test_an_unknown_device_is_a_404(client, auth_headers):
    resp = client.get(
        "/data/images/facets", query_string={"device_id": "nosuch"}, headers=auth_headers()
    )
    assert_error(resp, 404, "NOT_FOUND", "device_id")
