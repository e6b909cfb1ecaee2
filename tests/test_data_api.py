"""The local data API besides images: projects, batches (list, get, assign, lifecycle) and
manual annotations, through the real app on a real SQLite file. Expectations come from the
test's own plan of what it created.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import make_settings, seed_image

from edgecatalog import create_app
from edgecatalog.catalog import NewAnnotation
from edgecatalog.models import Batch, Device, Image, Outbox, Project, database

pytestmark = pytest.mark.both_engines

W = "write"


@pytest.fixture
def api(client, auth_headers):
    """call(method, path, json=None, scope='write') -> response."""

    def call(method: str, path: str, body=None, scope: str = W):
        kw = {"headers": auth_headers(scope)}
        if body is not None:
            kw["data"] = json.dumps(body)
            kw["content_type"] = "application/json"
        return client.open(path, method=method, **kw)

    return call


# -- projects --------------------------------------------------------------------------------


def test_create_and_list_projects(api):
    made = [
        api("POST", "/data/projects", {"name": n, "description": f"about {n}"})
        for n in ("zeta", "alpha", "mid")
    ]
    assert [r.status_code for r in made] == [201, 201, 201]
    assert made[0].json["data"]["name"] == "zeta"
    assert made[0].json["data"]["description"] == "about zeta"
    page = api("GET", "/data/projects?limit=2", scope="read").json
    assert [p["name"] for p in page["data"]] == ["alpha", "mid"]
    assert page["meta"] == {"count": 2, "limit": 2, "offset": 0, "total": 3}
    rest = api("GET", "/data/projects?limit=2&offset=2", scope="read").json
    assert [p["name"] for p in rest["data"]] == ["zeta"]


@pytest.mark.parametrize(
    "body,details",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "ok", "colour": "red"}, "colour"),
        ({"name": "ok", "description": 3}, "description"),
        ([], "body"),
    ],
)
def test_bad_project_bodies(api, body, details):
    resp = api("POST", "/data/projects", body)
    assert resp.status_code == 400 and resp.json["error"]["details"] == details
    with database.connection_context():
        assert Project.select().count() == 0


def test_duplicate_project_name_is_a_conflict(api):
    assert api("POST", "/data/projects", {"name": "line-1"}).status_code == 201
    again = api("POST", "/data/projects", {"name": " line-1 "})
    assert again.status_code == 409
    assert again.json["error"] == {
        "code": "CONFLICT",
        "details": "name",
        "message": again.json["error"]["message"],
    }


def test_project_auth(client, api):
    assert client.get("/data/projects").status_code == 401
    assert client.post("/data/projects", json={"name": "a"}).status_code == 401
    assert api("POST", "/data/projects", {"name": "a"}, scope="read").status_code == 403


# -- batches ---------------------------------------------------------------------------------


@pytest.fixture
def plan(settings):
    """Nine batches over three devices, stages and projects, each with one image."""
    with database.connection_context():
        p1 = Project.create(name="p1", created_at=1, updated_at=1).id
        p2 = Project.create(name="p2", created_at=1, updated_at=1).id
        layout = [
            ("cam01", "complete", p1),
            ("cam02", "unassigned", None),
            ("cam01", "annotating", p2),
            ("cam03", "complete", None),
            ("cam02", "annotating", p1),
            ("cam01", "unassigned", None),
            ("cam03", "complete", p1),
            ("cam02", "complete", None),
            ("cam01", "collecting", None),
        ]
        batches = []
        for i, (device, stage, project) in enumerate(layout):
            image = seed_image(settings, filename=f"b{i}.jpg", device_id=device, seed=i)
            # Each seeded image opened a collecting batch; move it where the plan wants it.
            Batch.update(stage=stage, project=project).where(Batch.id == image.batch_id).execute()
            batches.append(
                {
                    "id": image.batch_id,
                    "device": device,
                    "stage": stage,
                    "project": project,
                    "image": image.id,
                }
            )
    return {"p1": p1, "p2": p2, "batches": batches}


def expected_ids(plan, keep) -> list[int]:
    return sorted((b["id"] for b in plan["batches"] if keep(b)), reverse=True)


@pytest.mark.parametrize(
    "query,keep",
    [
        ("", lambda b, p: True),
        ("project_id=null", lambda b, p: b["project"] is None),
        ("project_id={p1}", lambda b, p: b["project"] == p["p1"]),
        ("stage=complete", lambda b, p: b["stage"] == "complete"),
        ("device_id=cam02", lambda b, p: b["device"] == "cam02"),
        (
            "device_id=cam01&stage=unassigned",
            lambda b, p: b["device"] == "cam01" and b["stage"] == "unassigned",
        ),
        (
            "project_id={p1}&stage=annotating",
            lambda b, p: b["project"] == p["p1"] and b["stage"] == "annotating",
        ),
    ],
)
def test_batch_filters(api, plan, query, keep):
    body = api("GET", "/data/batches?limit=100&" + query.format(**plan), scope="read").json
    want = expected_ids(plan, lambda b: keep(b, plan))
    assert [b["id"] for b in body["data"]] == want
    assert body["meta"]["total"] == len(want)


def test_walking_batch_pages_sees_each_once(api, plan):
    seen, offset = [], 0
    while True:
        page = api("GET", f"/data/batches?limit=2&offset={offset}", scope="read").json
        seen += [b["id"] for b in page["data"]]
        if not page["data"]:
            break
        offset += 2
        assert offset < 100
    assert seen == expected_ids(plan, lambda b: True)


@pytest.mark.parametrize(
    "query,status,details",
    [
        ("limit=0", 400, "limit"),
        ("offset=-1", 400, "offset"),
        ("project_id=abc", 400, "project_id"),
        ("stage=done", 400, "stage"),
        ("device_id=nope", 404, "device_id"),
        ("stage=complete&stage=unassigned", 400, "stage"),
    ],
)
def test_bad_batch_queries(api, plan, query, status, details):
    resp = api("GET", "/data/batches?" + query, scope="read")
    assert resp.status_code == status and resp.json["error"]["details"] == details


def test_get_batch(api, plan):
    first = plan["batches"][0]
    got = api("GET", f"/data/batches/{first['id']}", scope="read").json["data"]
    assert (
        got["device_id"],
        got["stage"],
        got["project_id"],
        got["project_name"],
        got["image_count"],
    ) == ("cam01", "complete", plan["p1"], "p1", 1)
    missing = api("GET", "/data/batches/99999", scope="read")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "NOT_FOUND"


def image_updated(api, image_id: int) -> str:
    return api("GET", f"/data/images/{image_id}", scope="read").json["data"]["updated_at"]


def test_assign_and_unassign_project_touches_images(api, plan):
    batch = plan["batches"][1]  # cam02, unassigned, no project
    before = image_updated(api, batch["image"])
    time.sleep(0.002)
    resp = api("PATCH", f"/data/batches/{batch['id']}", {"project_id": plan["p2"]})
    assert resp.status_code == 200 and resp.json["data"]["project_name"] == "p2"
    image = api("GET", f"/data/images/{batch['image']}", scope="read").json["data"]
    assert image["project_name"] == "p2" and image["updated_at"] > before
    listed = api("GET", f"/data/images?project_id={plan['p2']}", scope="read").json["data"]
    assert batch["image"] in [row["id"] for row in listed]
    cleared = api("PATCH", f"/data/batches/{batch['id']}", {"project_id": None})
    assert cleared.json["data"]["project_id"] is None


def test_stage_lifecycle(api, settings):
    image = seed_image(settings, seed=99)
    url = f"/data/batches/{image.batch_id}"
    steps = [
        ({"stage": "unassigned"}, 409),
        ({"stage": "complete"}, 200),
        ({"stage": "collecting"}, 409),
        ({"stage": "annotating"}, 409),
        ({"stage": "unassigned"}, 200),
        ({"stage": "unassigned"}, 200),
        ({"stage": "annotating"}, 409),
    ]
    for body, status in steps:
        resp = api("PATCH", url, body)
        assert resp.status_code == status, (body, resp.json)
        if status == 409:
            assert resp.json["error"]["code"] == "CONFLICT"
    project = api("POST", "/data/projects", {"name": "lab"}).json["data"]["id"]
    done = api("PATCH", url, {"stage": "annotating", "project_id": project})
    assert done.status_code == 200 and done.json["data"]["stage"] == "annotating"
    assert done.json["data"]["closed_at"] != ""
    keep = api("PATCH", url, {"project_id": None})
    assert keep.status_code == 409 and keep.json["error"]["details"] == "project_id"
    assert api("PATCH", url, {"stage": "complete"}).status_code == 409


def test_closing_the_collecting_batch_opens_a_new_one(api, settings):
    first = seed_image(settings, seed=1)
    assert api("PATCH", f"/data/batches/{first.batch_id}", {"stage": "complete"}).status_code == 200
    second = seed_image(settings, seed=2)
    assert second.batch_id != first.batch_id


@pytest.mark.parametrize(
    "body,status,details",
    [
        ({}, 400, "body"),
        ({"project_id": "1"}, 400, "project_id"),
        ({"project_id": True}, 400, "project_id"),
        ({"project_id": 0}, 400, "project_id"),
        ({"project_id": 424242}, 400, "project_id"),
        ({"stage": "done"}, 400, "stage"),
        ({"stage": 3}, 400, "stage"),
        ({"name": "x"}, 400, "name"),
    ],
)
def test_bad_batch_patches(api, plan, body, status, details):
    batch = plan["batches"][0]
    resp = api("PATCH", f"/data/batches/{batch['id']}", body)
    assert resp.status_code == status and resp.json["error"]["details"] == details
    with database.connection_context():
        row = Batch.get_by_id(batch["id"])
    assert (row.stage, row.project_id) == (batch["stage"], batch["project"])


def test_batch_writes_need_write_scope(api, plan, client):
    url = f"/data/batches/{plan['batches'][0]['id']}"
    assert api("PATCH", url, {"stage": "unassigned"}, scope="read").status_code == 403
    assert client.patch(url, json={"stage": "unassigned"}).status_code == 401
    assert client.get("/data/batches").status_code == 401


# -- annotations -----------------------------------------------------------------------------


@pytest.fixture
def image(settings):
    return seed_image(
        settings,
        width=200,
        height=100,
        seed=5,
        annotations=(NewAnnotation("cat", "bbox", [0.5, 0.5, 0.2, 0.2], 0.8, 3),),
    )


def annotations_of(api, image_id: int) -> list[dict]:
    return api("GET", f"/data/images/{image_id}", scope="read").json["data"]["annotations"]


def test_create_manual_annotation(api, image):
    before = image_updated(api, image.id)
    time.sleep(0.002)
    resp = api(
        "POST",
        "/data/annotations",
        {
            "image_id": image.id,
            "class_value": "dog",
            "type": "bbox",
            "geometry": [0.25, 0.5, 0.1, 0.2],
        },
    )
    assert resp.status_code == 201, resp.json
    ann = resp.json["data"]
    # [0.25,0.5,0.1,0.2] on 200x100 -> x 40..60, y 40..60.
    assert ann["geometry"] == [40, 40, 60, 60] and ann["image_id"] == image.id
    assert (ann["source"], ann["confidence"], ann["z_order"]) == ("manual", None, 4)
    assert image_updated(api, image.id) > before
    assert [a["class_value"] for a in annotations_of(api, image.id)] == ["cat", "dog"]
    echoed = api(
        "POST",
        "/data/annotations",
        {
            "image_id": image.id,
            "class_value": "dog",
            "type": "bbox",
            "geometry": [0.5] * 4,
            "confidence": None,
        },
    )
    assert echoed.status_code == 201 and echoed.json["data"]["confidence"] is None
    poly = api(
        "POST",
        "/data/annotations",
        {
            "image_id": image.id,
            "class_value": "area",
            "type": "polygon",
            "z_order": -1,
            "geometry": [0.1, 0.2, 0.5, 0.2, 0.3, 0.9],
        },
    ).json["data"]
    assert poly["geometry"] == [20, 20, 100, 20, 60, 90] and poly["z_order"] == -1


DROP = object()


@pytest.mark.parametrize(
    "changes,status,details",
    [
        ({"image_id": DROP}, 400, "image_id"),
        ({"image_id": "1"}, 400, "image_id"),
        ({"image_id": 98765}, 404, "image_id"),
        ({"image_id": 0}, 400, "image_id"),
        ({"geometry": DROP}, 400, "geometry"),
        ({"type": "circle"}, 400, "type"),
        ({"geometry": [0.5] * 3}, 400, "geometry"),
        ({"geometry": [0.5, 0.5, 1.5, 0.1]}, 400, "geometry"),
        ({"geometry": [0.5, 0.5, "x", 0.1]}, 400, "geometry"),
        ({"class_value": ""}, 400, "class_value"),
        ({"class_value": 7}, 400, "class_value"),
        ({"confidence": 0.5}, 400, "confidence"),
        ({"z_order": 1.5}, 400, "z_order"),
        ({"z_order": 2**40}, 400, "z_order"),
    ],
)
def test_bad_annotation_bodies(api, image, changes, status, details):
    body = {"image_id": image.id, "class_value": "a", "type": "bbox", "geometry": [0.5] * 4}
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not DROP}
    resp = api("POST", "/data/annotations", body)
    assert resp.status_code == status and resp.json["error"]["details"] == details
    assert len(annotations_of(api, image.id)) == 1


def test_patch_annotation(api, image):
    ann_id = annotations_of(api, image.id)[0]["id"]
    renamed = api("PATCH", f"/data/annotations/{ann_id}", {"class_value": "lynx"}).json["data"]
    assert renamed["class_value"] == "lynx" and renamed["geometry"] == [80, 40, 120, 60]
    assert (renamed["confidence"], renamed["source"]) == (0.8, "model")  # kept as they were
    moved = api("PATCH", f"/data/annotations/{ann_id}", {"geometry": [0.1, 0.1, 0.2, 0.2]})
    assert moved.json["data"]["geometry"] == [0, 0, 40, 20]
    wrong = api("PATCH", f"/data/annotations/{ann_id}", {"type": "polygon"})
    assert wrong.status_code == 400 and wrong.json["error"]["details"] == "geometry"
    poly = api(
        "PATCH",
        f"/data/annotations/{ann_id}",
        {"type": "polygon", "geometry": [0.0, 0.0, 1.0, 0.0, 0.5, 1.0]},
    ).json["data"]
    assert poly["type"] == "polygon" and poly["geometry"] == [0, 0, 200, 0, 100, 100]
    again = api("PATCH", f"/data/annotations/{ann_id}", {"class_value": "fox"}).json["data"]
    assert again["geometry"] == [0, 0, 200, 0, 100, 100]
    assert api("PATCH", f"/data/annotations/{ann_id}", {"source": "x"}).status_code == 400
    bad = api("PATCH", f"/data/annotations/{ann_id}", {"confidence": 1.5})
    assert bad.status_code == 400 and bad.json["error"]["details"] == "confidence"
    cleared = api("PATCH", f"/data/annotations/{ann_id}", {"confidence": None}).json["data"]
    assert cleared["confidence"] is None and cleared["class_value"] == "fox"
    assert api("PATCH", f"/data/annotations/{ann_id}", {}).status_code == 400
    assert api("PATCH", "/data/annotations/424242", {"class_value": "a"}).status_code == 404


def test_delete_annotation(api, image):
    ann_id = annotations_of(api, image.id)[0]["id"]
    before = image_updated(api, image.id)
    time.sleep(0.002)
    resp = api("DELETE", f"/data/annotations/{ann_id}")
    assert resp.status_code == 200 and resp.json["data"] == {"id": ann_id, "deleted": True}
    assert annotations_of(api, image.id) == []
    assert image_updated(api, image.id) > before
    assert api("DELETE", f"/data/annotations/{ann_id}").status_code == 404


def test_annotation_writes_need_write_scope(api, image, client):
    body = {"image_id": image.id, "class_value": "a", "type": "bbox", "geometry": [0.5] * 4}
    assert api("POST", "/data/annotations", body, scope="read").status_code == 403
    assert client.post("/data/annotations", json=body).status_code == 401
    assert client.delete("/data/annotations/1").status_code == 401


def test_annotation_cap(tmp_path, auth_headers):
    settings = make_settings(tmp_path, ingest__max_annotations=2)
    client = create_app(settings).test_client()
    image = seed_image(settings, seed=3)
    body = {"image_id": image.id, "class_value": "a", "type": "bbox", "geometry": [0.5] * 4}
    codes = [
        client.post("/data/annotations", json=body, headers=auth_headers(W)).status_code
        for _ in range(3)
    ]
    assert codes == [201, 201, 409]


def outbox(kind: str) -> list[dict]:
    with database.connection_context():
        return [
            json.loads(o.payload)
            for o in Outbox.select().where(Outbox.kind == kind).order_by(Outbox.id)
        ]


def test_changes_to_a_synced_image_are_queued(api, image, settings):
    with database.connection_context():
        Image.update(sync_state="synced").where(Image.id == image.id).execute()
    created = api(
        "POST",
        "/data/annotations",
        {
            "image_id": image.id,
            "class_value": "dog",
            "type": "bbox",
            "geometry": [0.25, 0.5, 0.1, 0.2],
        },
    ).json["data"]
    api("PATCH", f"/data/annotations/{created['id']}", {"class_value": "wolf"})
    api("DELETE", f"/data/annotations/{created['id']}")
    [create] = outbox("create_annotation")
    assert create["annotation_id"] == created["id"]
    assert create["annotation"]["geometry"] == [0.25, 0.5, 0.1, 0.2]
    assert create["annotation"]["source"] == "manual"
    [update] = outbox("update_annotation")
    assert (update["previous"]["class_value"], update["annotation"]["class_value"]) == (
        "dog",
        "wolf",
    )
    [delete] = outbox("delete_annotation")
    assert delete == {"annotation_id": created["id"], "previous": update["annotation"]}


def test_changes_to_an_unsynced_image_are_not_queued(api, image):
    api(
        "POST",
        "/data/annotations",
        {"image_id": image.id, "class_value": "dog", "type": "bbox", "geometry": [0.5] * 4},
    )
    with database.connection_context():
        kinds = [o.kind for o in Outbox.select()]
        assert kinds == ["upload"]
        assert Device.select().count() == 1
