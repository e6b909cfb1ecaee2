"""Changes to images already upstream: PATCH /data/images/{remote_id} and POST
/data/annotations with the API token; without a token they wait, visibly."""

from __future__ import annotations

import json

import pytest
from conftest import seed_image
from sync_helpers import box, drain, open_db, sync_settings

from edgecatalog import catalog
from edgecatalog.db import write_tx
from edgecatalog.models import Annotation, Image, Outbox
from edgecatalog.sync.outbox import queue_counts
from edgecatalog.sync.worker import SyncWorker
from edgecatalog.timeutil import now_us

pytestmark = pytest.mark.both_engines


def _synced_image(settings, worker, **kw):
    image = seed_image(settings, **kw)
    drain(worker)
    return Image.get_by_id(image.id)


def test_patch_waits_for_a_token_then_reaches_upstream(tmp_path, emulator, database_url):
    no_token = sync_settings(tmp_path, emulator, database__url=database_url)
    open_db(no_token)
    worker = SyncWorker(no_token)
    image = _synced_image(no_token, worker, seed=1)
    catalog.update_image(image.id, {"split": "train", "split_locked": True})
    drain(worker)
    row = Outbox.get(Outbox.image == image.id)
    assert row.kind == "patch_image" and row.state == "waiting_token"
    assert queue_counts().waiting_token == 1
    assert not [e for e in emulator.log if e.method == "PATCH"]
    worker.close()
    with_token = sync_settings(
        tmp_path, emulator, database__url=database_url, upstream__api_token=emulator.api_token
    )
    worker = SyncWorker(with_token)
    drain(worker)
    assert Outbox.select().count() == 0
    stored = emulator.by_id[image.remote_id]
    assert stored.fields == {"split": "train", "split_locked": True}
    worker.close()


def test_token_from_file_and_annotation_created_upstream(tmp_path, emulator, database_url):
    token_file = tmp_path / "upstream.token"
    token_file.write_text(emulator.api_token + "\n")
    token_file.chmod(0o600)
    settings = sync_settings(
        tmp_path, emulator, database__url=database_url, upstream__api_token_file=str(token_file)
    )
    open_db(settings)
    worker = SyncWorker(settings)
    image = _synced_image(
        settings,
        worker,
        seed=2,
        width=100,
        height=50,
        annotations=(box("defect", 0.5, 0.5, 0.2, 0.2),),
    )
    now = now_us()
    with write_tx():
        ann = Annotation.create(
            image=image.id,
            class_value="crack",
            type="bbox",
            geometry="[10,10,30,20]",
            x_center=0.2,
            y_center=0.3,
            width=0.2,
            height=0.2,
            confidence=0.7,
            source="model",
            created_at=now,
            updated_at=now,
        )
        catalog.queue_change(image, "create_annotation", {"annotation_id": ann.id}, now)
    drain(worker)
    drain(worker)  # a second run must not post it again
    posted = emulator.annotations_of(image.remote_id)
    assert len(posted) == 1
    assert posted[0]["class_value"] == "crack"
    assert posted[0]["geometry"] == pytest.approx([0.2, 0.3, 0.2, 0.2])
    assert posted[0]["image_id"] == int(image.remote_id)
    worker.close()


def test_fields_set_before_the_upload_follow_it_as_a_patch(tmp_path, emulator, database_url):
    settings = sync_settings(
        tmp_path, emulator, database__url=database_url, upstream__api_token=emulator.api_token
    )
    open_db(settings)
    worker = SyncWorker(settings)
    image = seed_image(settings, seed=3)
    catalog.update_image(image.id, {"annotation_status": "completed"})  # not yet upstream
    drain(worker)
    synced = Image.get_by_id(image.id)
    assert emulator.by_id[synced.remote_id].fields == {"annotation_status": "completed"}
    worker.close()


def test_annotation_added_while_the_upload_was_in_flight_is_sent_after(
    tmp_path, emulator, database_url
):
    settings = sync_settings(
        tmp_path, emulator, database__url=database_url, upstream__api_token=emulator.api_token
    )
    open_db(settings)
    worker = SyncWorker(settings)
    image = seed_image(settings, seed=4, annotations=(box("a", 0.5, 0.5, 0.1, 0.1),))
    original = worker.client.upload

    def upload_then_annotate(req):
        outcome = original(req)
        now = now_us()
        with write_tx():  # a local change lands between the answer and the commit
            Annotation.create(
                image=image.id,
                class_value="late",
                type="bbox",
                geometry="[1,1,2,2]",
                x_center=0.4,
                y_center=0.4,
                width=0.1,
                height=0.1,
                created_at=now,
                updated_at=now,
            )
        return outcome

    worker.client.upload = upload_then_annotate
    drain(worker)
    worker.client.upload = original
    drain(worker)
    remote = Image.get_by_id(image.id).remote_id
    inline = emulator.by_id[remote].metadata["annotations"]
    assert [a["class_value"] for a in inline] == ["a"]
    assert [a["class_value"] for a in emulator.annotations_of(remote)] == ["late"]
    worker.close()


def test_change_for_an_image_upstream_gave_no_id_is_quarantined(tmp_path, emulator, database_url):
    settings = sync_settings(
        tmp_path, emulator, database__url=database_url, upstream__api_token=emulator.api_token
    )
    open_db(settings)
    worker = SyncWorker(settings)
    image = seed_image(settings, seed=5)
    emulator.store_upload((settings.images_dir / image.storage_key).read_bytes(), "x.jpg", {})
    drain(worker)  # 409 duplicate: synced, but without an upstream id
    catalog.update_image(image.id, {"split": "val"})
    drain(worker)
    row = Outbox.get(Outbox.image == image.id)
    assert row.state == "quarantined" and "id" in row.last_error
    assert json.loads(row.payload) == {"split": "val"}
    worker.close()


def test_annotation_edits_made_through_the_catalog_reach_upstream_or_wait_visibly(
    tmp_path, emulator, database_url
):
    from edgecatalog import annotation_edits

    settings = sync_settings(
        tmp_path, emulator, database__url=database_url, upstream__api_token=emulator.api_token
    )
    open_db(settings)
    worker = SyncWorker(settings)
    image = _synced_image(settings, worker, seed=6, width=200, height=100)
    new_id = annotation_edits.create_annotation(
        annotation_edits.new_manual_annotation(
            image.id, {"class_value": "manual", "type": "bbox", "geometry": [0.4, 0.5, 0.2, 0.2]}
        ),
        max_annotations=100,
    )
    annotation_edits.update_annotation(new_id, {"class_value": "renamed"})
    drain(worker)
    posted = emulator.annotations_of(image.remote_id)
    # The create carries the annotation as it is when it leaves (renamed already).
    assert [(a["class_value"], a["geometry"]) for a in posted] == [
        ("renamed", pytest.approx([0.4, 0.5, 0.2, 0.2]))
    ]
    left = {r.kind: r.state for r in Outbox.select()}
    assert left == {"update_annotation": "unsupported"}  # no upstream endpoint is documented
    assert queue_counts().unsupported == 1 and queue_counts().quarantined == 0
    worker.close()


def test_local_only_fields_are_not_patched_upstream(tmp_path, emulator, database_url):
    settings = sync_settings(
        tmp_path, emulator, database__url=database_url, upstream__api_token=emulator.api_token
    )
    open_db(settings)
    worker = SyncWorker(settings)
    image = _synced_image(settings, worker, seed=7)
    catalog.queue_change(image, "patch_image", {"model_id": "mdl_2"}, now_us())
    drain(worker)
    assert Outbox.select().count() == 0
    assert not [e for e in emulator.log if e.method == "PATCH"]
    worker.close()
