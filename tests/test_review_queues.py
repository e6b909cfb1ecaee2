"""The review queues' list filters (min_confidence/max_confidence with class_values,
has_annotations, annotation_source, model_version, pinned), alone and combined with the
others, against oracles written in plain SQL over the stored rows: ids in the contract's
order, and the exact total."""

from __future__ import annotations

import math

import pytest
from conftest import ENGINES, engine_database, make_settings, seed_image
from hypothesis import given
from hypothesis import strategies as st

from edgecatalog import confidence_bits, create_app
from edgecatalog.auth import Authenticator
from edgecatalog.catalog import NewAnnotation
from edgecatalog.models import Image, database

# Per image, cycling: (class, confidence, source) of each annotation.
ANNOTATIONS = (
    (),
    (("cat", 0.45, "model"),),
    (("dog", 0.55, "yolo-v8n"), ("cat", 0.95, "model")),
    (("cat", 0.4, "model"),),
    (("dog", 0.6, "model"), ("bird", 0.1, "model")),
    (("cat", None, "manual"),),
    (("dog", 0.61, "model"),),
    (("cat", 0.3, "import"), ("dog", 0.5, "manual")),
    (("bird", 0.59, "model"),),
)
VERSIONS = ("", "v1", "v2")


@pytest.fixture(scope="module", params=ENGINES)
def queue(request, tmp_path_factory):
    settings = make_settings(
        tmp_path_factory.mktemp("queues"), database__url=engine_database(request, request.param)
    )
    app = create_app(settings)
    for i in range(45):
        anns = tuple(
            NewAnnotation(
                class_value=c,
                type="bbox",
                geometry=(0.5, 0.5, 0.2, 0.2),
                confidence=conf,
                z_order=k,
                source=src,
            )
            for k, (c, conf, src) in enumerate(ANNOTATIONS[i % len(ANNOTATIONS)])
        )
        image = seed_image(
            settings,
            filename=f"q{i}.jpg",
            device_id=("cam01", "cam02")[i % 2],
            annotations=anns,
            data=f"queue-{i}".encode(),
        )
        Image.update(
            model_version=VERSIONS[i % 3],
            pinned=i % 4 == 0,
            annotation_status=("pending", "completed")[i % 5 == 0],
            created_at=1_790_000_000_000_000 + (i // 2) * 1000,  # pairs tie on created_at
        ).where(Image.id == image.id).execute()
    auth = Authenticator(settings).issue_token("reviewer", "read")
    yield app.test_client(), {"Authorization": f"Bearer {auth}"}
    database.close()


def _sql(text: str, args: tuple = ()) -> set[int]:
    return {row[0] for row in database.execute_sql(text, args).fetchall()}


def _in(values: tuple) -> str:
    return ",".join("?" * len(values))


# Each case: the query, and the oracle's matching ids as one plain SQL statement.
CASES = [
    (
        {"min_confidence": "0.4", "max_confidence": "0.6"},
        "SELECT image_id FROM annotation WHERE confidence >= CAST(0.4 AS REAL) AND confidence <= CAST(0.6 AS REAL)",
    ),
    (
        {"min_confidence": "0.6"},
        "SELECT image_id FROM annotation WHERE confidence >= CAST(0.6 AS REAL)",
    ),
    # Bounds inside buckets (both ends rechecked), one bucket, one value, an empty range.
    (
        {"min_confidence": "0.42", "max_confidence": "0.58"},
        "SELECT image_id FROM annotation WHERE confidence >= CAST(0.42 AS REAL) AND confidence <= CAST(0.58 AS REAL)",
    ),
    (
        {"min_confidence": "0.55", "max_confidence": "0.55"},
        "SELECT image_id FROM annotation WHERE confidence = CAST(0.55 AS REAL)",
    ),
    (
        {"min_confidence": "0.56", "max_confidence": "0.6"},
        "SELECT image_id FROM annotation WHERE confidence >= CAST(0.56 AS REAL) AND confidence <= CAST(0.6 AS REAL)",
    ),
    (
        {"min_confidence": "0.7", "max_confidence": "0.2"},
        "SELECT image_id FROM annotation WHERE 1 = 0",
    ),
    (
        {"max_confidence": "0.3"},
        "SELECT image_id FROM annotation WHERE confidence <= CAST(0.3 AS REAL)",
    ),
    (
        {"min_confidence": "0.4", "max_confidence": "0.6", "class_values": "cat"},
        (
            "SELECT image_id FROM annotation WHERE confidence BETWEEN CAST(0.4 AS REAL) AND CAST(0.6 AS REAL) "
            "AND class_value = 'cat'"
        ),
    ),
    (
        {"min_confidence": "0.5", "max_confidence": "0.6", "class_values": "dog,bird"},
        (
            "SELECT image_id FROM annotation WHERE confidence BETWEEN CAST(0.5 AS REAL) AND CAST(0.6 AS REAL) "
            "AND class_value IN ('dog', 'bird')"
        ),
    ),
    ({"has_annotations": "true"}, "SELECT image_id FROM annotation"),
    (
        {"has_annotations": "false"},
        "SELECT id FROM image WHERE id NOT IN (SELECT image_id FROM annotation)",
    ),
    (
        {"annotation_source": "model"},
        "SELECT image_id FROM annotation WHERE source NOT IN ('manual', 'import')",
    ),
    ({"annotation_source": "manual"}, "SELECT image_id FROM annotation WHERE source = 'manual'"),
    ({"annotation_source": "import"}, "SELECT image_id FROM annotation WHERE source = 'import'"),
    ({"model_version": "v1"}, "SELECT id FROM image WHERE model_version = 'v1'"),
    ({"model_version": "v9"}, "SELECT id FROM image WHERE model_version = 'v9'"),
    ({"pinned": "true"}, "SELECT id FROM image WHERE pinned = (1 = 1)"),
    ({"pinned": "0"}, "SELECT id FROM image WHERE pinned = (1 = 0)"),
    # Combined with each other and with the older filters.
    (
        {"min_confidence": "0.4", "max_confidence": "0.6", "device_id": "cam02"},
        (
            "SELECT a.image_id FROM annotation a JOIN image i ON i.id = a.image_id JOIN device d "
            "ON d.id = i.device_id WHERE a.confidence BETWEEN CAST(0.4 AS REAL) AND CAST(0.6 AS REAL) AND d.device_id = 'cam02'"
        ),
    ),
    (
        {"has_annotations": "true", "annotation_status": "pending", "pinned": "true"},
        (
            "SELECT i.id FROM image i WHERE i.annotation_status = 'pending' AND i.pinned = (1 = 1) "
            "AND i.id IN (SELECT image_id FROM annotation)"
        ),
    ),
    (
        {"has_annotations": "false", "class_values": "cat"},
        "SELECT id FROM image WHERE 1 = 0",
    ),
    (
        {"annotation_source": "manual", "model_version": "v2", "search": "q1"},
        (
            "SELECT i.id FROM image i WHERE i.model_version = 'v2' AND i.filename LIKE '%q1%' "
            "AND i.id IN (SELECT image_id FROM annotation WHERE source = 'manual')"
        ),
    ),
    (
        {"max_confidence": "0.6", "annotation_source": "model", "has_annotations": "1"},
        (
            "SELECT image_id FROM annotation WHERE confidence <= CAST(0.6 AS REAL) AND image_id IN "
            "(SELECT image_id FROM annotation WHERE source NOT IN ('manual', 'import'))"
        ),
    ),
]


@pytest.mark.parametrize("query, oracle", CASES, ids=lambda c: repr(c)[:60])
@pytest.mark.parametrize("sort", ["created_at", "filename"])
def test_queue_matches_the_sql_oracle(queue, query, oracle, sort):
    client, headers = queue
    ids = _sql(oracle)
    order = database.execute_sql(f"SELECT id FROM image ORDER BY {sort} DESC, id DESC").fetchall()
    want = [row[0] for row in order if row[0] in ids]
    got, total, offset = [], None, 0
    while True:  # every page, so the walk is checked too
        resp = client.get(
            "/data/images",
            query_string={**query, "sort": sort, "limit": "7", "offset": str(offset)},
            headers=headers,
        )
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        got += [row["id"] for row in body["data"]]
        total = body["meta"]["total"]
        offset += 7
        if offset >= total:
            break
    assert got == want and total == len(want)
    assert (
        0 < len(want) < 45
        or "v9" in query.values()
        or "0.7" in query.values()
        or (query.get("has_annotations") == "false" and "class_values" in query)
    )


def test_pinned_is_a_field_of_the_list(queue):
    client, headers = queue
    rows = client.get("/data/images?limit=100", headers=headers).get_json()["data"]
    pinned = _sql("SELECT id FROM image WHERE pinned = (1 = 1)")
    assert {row["id"] for row in rows if row["pinned"] is True} == pinned
    assert all(isinstance(row["pinned"], bool) for row in rows)


@pytest.mark.parametrize(
    "query, field",
    [
        ({"min_confidence": "1.5"}, "min_confidence"),
        ({"max_confidence": "-0.1"}, "max_confidence"),
        ({"max_confidence": "nan"}, "max_confidence"),
        ({"min_confidence": "lots"}, "min_confidence"),
        ({"has_annotations": "maybe"}, "has_annotations"),
        ({"annotation_source": "robot"}, "annotation_source"),
        ({"pinned": "yes please"}, "pinned"),
    ],
)
def test_bad_queue_values_name_the_parameter(queue, query, field):
    client, headers = queue
    resp = client.get("/data/images", query_string=query, headers=headers)
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"] == field


@pytest.mark.both_engines
def test_the_queue_follows_annotation_edits(client, auth_headers, settings):
    """Boxes added, re-scored, moved and deleted through the API: the uncertainty queue's
    total (from the confidence bits and their count table) stays the plain SQL count."""
    images = [
        seed_image(
            settings,
            filename=f"e{i}.jpg",
            seed=i,
            annotations=(NewAnnotation("cat", "bbox", (0.5, 0.5, 0.2, 0.2), confidence=0.1 * i),),
        )
        for i in range(1, 10)
    ]
    write = auth_headers("write")
    anns = [row[0] for row in database.execute_sql("SELECT id FROM annotation ORDER BY id")]

    def check():
        for low, high in (("0.4", "0.6"), ("0.35", "0.55"), ("0.0", "0.3"), ("0.5", "1")):
            want = len(
                _sql(
                    "SELECT image_id FROM annotation WHERE confidence >= CAST(? AS REAL) "
                    "AND confidence <= CAST(? AS REAL)",
                    (float(low), float(high)),
                )
            )
            resp = client.get(
                "/data/images",
                query_string={"min_confidence": low, "max_confidence": high, "limit": 1},
                headers=auth_headers(),
            )
            assert resp.get_json()["meta"]["total"] == want, (low, high)

    check()
    for ann_id, score in ((anns[0], 0.5), (anns[4], 0.05), (anns[6], None)):
        resp = client.patch(
            f"/data/annotations/{ann_id}", json={"confidence": score}, headers=write
        )
        assert resp.status_code == 200, resp.get_json()
        check()
    assert client.delete(f"/data/annotations/{anns[3]}", headers=write).status_code in (200, 204)
    check()
    box = {
        "image_id": images[8].id,
        "class_value": "dog",
        "type": "bbox",
        "geometry": [0.5, 0.5, 0.1, 0.1],
    }
    assert client.post("/data/annotations", json=box, headers=write).status_code == 201
    check()
    with database.atomic():  # a direct move of an annotation to another image
        database.execute_sql(
            "UPDATE annotation SET image_id = ? WHERE id = ?", (images[0].id, anns[5])
        )
    check()


@pytest.mark.both_engines
def test_changed_since_the_last_export(client, auth_headers, settings):
    """Each whole archive served is remembered (a resumed range is not); the images updated
    after the newest one are the "changed since the last export" queue."""
    images = [seed_image(settings, filename=f"x{i}.jpg", seed=i) for i in range(4)]
    assert client.get("/data/exports", headers=auth_headers()).get_json()["data"] == []
    resp = client.get("/data/exports/jsonl?split=all", headers=auth_headers())
    assert resp.status_code == 200
    resp.get_data()
    again = client.get("/data/exports/jsonl", headers={**auth_headers(), "Range": "bytes=0-9"})
    assert again.status_code == 206
    again.get_data()
    listed = client.get("/data/exports", headers=auth_headers()).get_json()
    assert listed["meta"]["total"] == 1
    (last,) = listed["data"]
    assert last["format"] == "jsonl" and last["filters"] == {"split": "all"}
    write = auth_headers("write")
    for image in images[1:3]:
        resp = client.patch(f"/data/images/{image.id}", json={"pinned": True}, headers=write)
        assert resp.status_code == 200
    changed = client.get(
        "/data/images",
        query_string={"updated_after": last["created_at"]},
        headers=auth_headers(),
    ).get_json()
    want = _sql(
        "SELECT i.id FROM image i WHERE i.updated_at >= "
        "(SELECT max(planned_at) FROM dataset_export)"
    )
    assert {row["id"] for row in changed["data"]} == want == {i.id for i in images[1:3]}
    assert changed["meta"]["total"] == 2


_UNIT = st.floats(min_value=0, max_value=1, allow_nan=False)
_ROUND = st.integers(min_value=0, max_value=20).map(lambda k: k / 20)


@given(
    values=st.lists(
        st.one_of(_UNIT, _ROUND, _UNIT.map(lambda v: math.nextafter(v, 2))), max_size=30
    ),
    low=st.one_of(_UNIT, _ROUND),
    high=st.one_of(_UNIT, _ROUND),
)
def test_a_range_split_into_buckets_is_exact(values, low, high):
    """Whole buckets need no recheck: a value in one is in the range; a value in the range is
    in a whole bucket or in a rechecked end bucket within its index range."""
    values = [min(v, 1.0) for v in values]
    split = confidence_bits.split(low, high)
    parts = {k: (lo, hi) for k, lo, hi in split.partial}
    for v in values:
        k = confidence_bits.bucket(v)
        whole = bool(split.full >> k & 1)
        inside = low <= v <= high
        if whole:
            assert inside, (v, k)
        elif inside:
            assert k in parts and parts[k][0] <= v <= parts[k][1], (v, k, parts)


@pytest.mark.parametrize("query, oracle", CASES[:3] + CASES[8:12], ids=lambda c: repr(c)[:40])
def test_facets_take_the_queue_filters(queue, query, oracle):
    client, headers = queue
    want = _sql(oracle)
    facets = client.get("/data/images/facets", query_string=query, headers=headers).get_json()
    assert facets["meta"]["total"] == len(want)
    statuses = facets["data"]["facets"]["annotation_status"]["values"]
    assert sum(row["count"] for row in statuses) == len(want)
