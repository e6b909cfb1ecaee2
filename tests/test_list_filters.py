"""Every filter of GET /data/images, alone and combined, against an independent oracle.

Each row of CASES is one query; the expected ids (in contract order) come from
``seeded_catalog.expected``, which filters the seed plan in plain Python.
"""

from __future__ import annotations

import pytest
from conftest import ENGINES, engine_database
from seeded_catalog import DEVICES, FILENAMES, build_catalog, expected

# Placeholders {Alpha}, {Beta}, {Gamma} (project ids) and {b0}..{b7} (batch ids) are filled in
# from the seeded catalog.
ALONE = [
    {"project_id": "{Alpha}"},
    {"project_id": "{Beta}"},
    {"project_id": "{Gamma}"},
    {"project_id": "null"},
    {"project_id": "999999"},
    {"batch_id": "{b0}"},
    {"batch_id": "{b1}"},
    {"batch_id": "{b6}"},
    {"batch_id": "999999"},
    *({"device_id": d} for d in DEVICES),
    # stage alone is not applied (as upstream): every image comes back.
    {"stage": "complete"},
    {"stage": "annotating"},
    *({"annotation_status": s} for s in ("pending", "in_progress", "completed")),
    *({"split": s} for s in ("train", "val", "test", "none", "all")),
    {"class_values": "cat"},
    {"class_values": "dog"},
    {"class_values": "Cat"},
    {"class_values": "cat,dog"},
    {"class_values": " cat , ,bird "},
    {"class_values": "nosuch"},
    {"class_values": ",,"},
    {"class_values": "person,Cat"},
    {"search": "%"},
    {"search": "_"},
    {"search": "\\"},
    {"search": "a%b"},
    {"search": "a_b"},
    {"search": "a\\b"},
    {"search": "%%"},
    {"search": "__"},
    {"search": "mixed_case"},
    {"search": "MIXED"},
    {"search": "JPG"},
    {"search": ""},
    {"search": "x"},
    {"search": "frame 0"},
    {"search": "nothing-like-this"},
    {"filename": "a_b.jpg"},
    {"filename": "a%b.jpg"},
    {"filename": "a\\b.jpg"},
    {"filename": "dup.jpg"},
    {"filename": "Dup.jpg"},
    {"filename": "DUP.JPG"},
    {"filename": "ÉCLAIR.jpg"},
    {"filename": "dup"},
]
COMBINED = [
    *(
        {"project_id": "{Alpha}", "stage": s}
        for s in ("collecting", "complete", "unassigned", "annotating")
    ),
    *({"project_id": "{Beta}", "stage": s} for s in ("annotating", "unassigned", "complete")),
    {"project_id": "null", "stage": "complete"},
    {"project_id": "null", "stage": "collecting"},
    {"device_id": "cam02", "annotation_status": "completed"},
    {"split": "train", "class_values": "cat"},
    {"split": "all", "class_values": "dog,bird"},
    {"search": "a", "device_id": "cam01", "split": "val"},
    {
        "project_id": "{Alpha}",
        "stage": "complete",
        "class_values": "cat,dog",
        "annotation_status": "pending",
    },
    {"batch_id": "{b2}", "search": "JPG"},
    {"filename": "dup.jpg", "device_id": "cam01"},
    {"filename": "dup.jpg", "split": "val"},
    {"project_id": "{Beta}", "batch_id": "{b3}"},
    {"project_id": "{Beta}", "batch_id": "{b1}"},
    {
        "project_id": "{Alpha}",
        "stage": "annotating",
        "batch_id": "{b5}",
        "device_id": "cam03",
        "annotation_status": "in_progress",
        "split": "all",
        "class_values": "cat,Cat,person",
        "search": "",
        "filename": "",
    },
    {
        "project_id": "{Alpha}",
        "device_id": "cam02",
        "annotation_status": "pending",
        "split": "none",
        "class_values": "cat",
        "search": "_",
    },
    # Unknown parameters are ignored, as upstream does.
    {"split": "test", "colour": "blue", "page": "7"},
]


@pytest.fixture(scope="module", params=ENGINES)
def cat(request, tmp_path_factory):
    catalog = build_catalog(
        tmp_path_factory.mktemp("filters"), engine_database(request, request.param)
    )
    yield catalog
    from edgecatalog.models import database

    database.close()


def _fill(query: dict[str, str], cat) -> dict[str, str]:
    names = dict(cat.projects)
    names.update({f"b{i}": b for i, b in enumerate(cat.batches)})
    return {k: v.format(**names) if "{" in v else v for k, v in query.items()}


def _ids(cat, query: dict[str, str], **extra: str) -> tuple[list[int], dict]:
    resp = cat.client.get(
        "/data/images", query_string={**query, "limit": "100", **extra}, headers=cat.headers
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    return [row["id"] for row in body["data"]], body["meta"]


@pytest.mark.parametrize("query", ALONE + COMBINED, ids=lambda q: repr(q)[:70])
def test_filter_matches_oracle(cat, query):
    query = _fill(query, cat)
    want = expected(cat.records, query)
    got, meta = _ids(cat, query)
    assert got == want
    assert meta == {"count": len(want), "limit": 100, "offset": 0, "total": len(want)}


def test_table_covers_every_filter_and_every_value(cat):
    from edgecatalog.listing import FILTERS

    used = {k for q in ALONE + COMBINED for k in q}
    contract = {
        "project_id",
        "batch_id",
        "device_id",
        "stage",
        "annotation_status",
        "split",
        "class_values",
        "search",
        "filename",
    }
    assert contract <= used
    # Filters added later (e.g. sync_state) must be contract filters or tested elsewhere.
    assert contract <= {f.param for f in FILTERS}
    # The seed is rich enough to make the cases discriminating: no filter value above
    # matches everything or nothing by accident of the seed.
    assert len({r.stage for r in cat.records}) == 4
    assert {r.project_id for r in cat.records} >= {
        None,
        cat.projects["Alpha"],
        cat.projects["Beta"],
    }


def test_wildcards_are_literal(cat):
    by_name = {r.id: r.filename for r in cat.records}
    got, _ = _ids(cat, {"search": "a_b"})
    assert sorted(by_name[i] for i in got) == ["a_b.jpg"]  # not axb.jpg, not a%b.jpg
    got, _ = _ids(cat, {"search": "a%b"})
    assert sorted(by_name[i] for i in got) == ["a%b.jpg"]  # not a%%b.jpg, not ab.jpg
    got, _ = _ids(cat, {"search": "k\\s"})
    assert sorted(by_name[i] for i in got) == ["back\\slash.png"]


def test_search_is_case_insensitive(cat):
    by_name = {r.id: r.filename for r in cat.records}
    got, _ = _ids(cat, {"search": "mIxEd_CaSe"})
    assert sorted(by_name[i] for i in got) == ["MIXED_case.jpg", "Mixed_Case.JPG"]


def test_stage_needs_project(cat):
    everything, _ = _ids(cat, {})
    staged, _ = _ids(cat, {"stage": "unassigned"})
    assert staged == everything and len(everything) == len(FILENAMES)


def test_rows_have_contract_shape(cat):
    resp = cat.client.get("/data/images?limit=100&include_annotations=true", headers=cat.headers)
    rows = resp.get_json()["data"]
    by_id = {r.id: r for r in cat.records}
    strings = (
        "filename",
        "storage_key",
        "device_id",
        "batch_name",
        "project_name",
        "annotation_status",
        "split",
        "version_name",
        "created_at",
        "updated_at",
    )
    for row in rows:
        rec = by_id[row["id"]]
        for key in strings:
            assert isinstance(row[key], str), key
        assert isinstance(row["batch_id"], int) and row["batch_id"] == rec.batch_id
        assert isinstance(row["split_locked"], bool) and row["split_locked"] == rec.split_locked
        assert "image_url" not in row
        assert row["project_name"] == (
            ""
            if rec.project_id is None
            else {v: k for k, v in cat.projects.items()}[rec.project_id]
        )
        assert {a["class_value"] for a in row["annotations"]} == rec.classes
        for ann in row["annotations"]:
            assert ann["image_id"] == row["id"]
            assert ann["geometry"] == [256, 192, 384, 288]  # 0.4..0.6 of 640 x 480
            assert all(isinstance(v, int) for v in ann["geometry"])
        # RFC 3339 UTC, from the planned clock.
        assert row["created_at"].startswith("2026-09-2") and row["created_at"].endswith("Z")
    without = cat.client.get("/data/images?limit=1", headers=cat.headers).get_json()["data"][0]
    assert "annotations" not in without
