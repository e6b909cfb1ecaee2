"""The real sync worker against the upstream emulator: delivery exactly once, answers that
mean "already there", quarantine of poison items, and the order rows leave in."""

from __future__ import annotations

import hashlib

import pytest
from conftest import jpeg_bytes, seed_image
from sync_helpers import all_synced, box, drain, open_db, polygon, run_loop_until, sync_settings
from upstream_emulator import UpstreamEmulator

from edgecatalog.models import Image, Outbox, database
from edgecatalog.sync import outbox
from edgecatalog.sync.state import load_status
from edgecatalog.sync.worker import SyncWorker

pytestmark = pytest.mark.both_engines


@pytest.fixture
def env(tmp_path, emulator, database_url):
    settings = sync_settings(tmp_path, emulator, database__url=database_url)
    open_db(settings)
    workers = []

    def make(**overrides):
        cfg = (
            sync_settings(tmp_path, emulator, database__url=database_url, **overrides)
            if overrides
            else settings
        )
        worker = SyncWorker(cfg)
        workers.append(worker)
        return cfg, worker

    yield settings, make
    for worker in workers:
        worker.close()
    if not database.is_closed():
        database.close()


def test_offline_then_online_every_image_and_annotation_arrives_once(env, emulator):
    settings, make = env
    _, worker = make()
    emulator.go_offline()
    made = {}
    for i in range(6):
        anns = (
            box("defect", 0.25 + i / 100, 0.5, 0.2, 0.1),
            box("scratch", 0.7, 0.3, 0.1, 0.2),
            polygon("dent", 0.1, 0.1, 0.5, 0.1, 0.3, 0.4),
        )
        image = seed_image(
            settings, filename=f"f{i}.jpg", seed=i, annotations=anns, width=200, height=100
        )
        made[image.sha256] = anns
    report = worker.run_pass()
    assert report.stopped == "offline" and report.synced == 0
    # Offline says nothing about the item: its attempts are not counted towards quarantine.
    assert [r.attempts for r in Outbox.select()] == [0] * 6
    assert load_status().state == "offline"
    emulator.go_online()
    drain(worker)
    assert all_synced()
    assert sorted(emulator.images) == sorted(made)
    for sha, anns in made.items():
        stored = emulator.images[sha]
        sent = stored.metadata["annotations"]
        assert [a["class_value"] for a in sent] == [a.class_value for a in anns]
        for got, want in zip(sent, anns):
            assert got["type"] == want.type
            # Polygons travel through integer pixels: within half a pixel of what came in.
            tol = 0.5 / 100 if want.type == "polygon" else 1e-9
            assert got["geometry"] == pytest.approx(list(want.geometry), abs=tol)
        local = Image.get(Image.sha256 == sha)
        assert local.remote_id == str(stored.image_id)
        assert local.remote_batch_id == str(stored.batch_id)
        assert local.sync_state == "synced" and local.synced_at is not None
        assert stored.metadata["sha256"] == sha and stored.metadata["filename"] == local.filename
    uploads = [e for e in emulator.log if e.path.endswith("/upload") and e.status == 201]
    assert len(uploads) == 6
    assert Outbox.select().count() == 0


@pytest.mark.parametrize("honour", [True, False])
def test_response_lost_after_upload_is_synced_once(tmp_path, honour, database_url):
    emu = UpstreamEmulator(honour_idempotency=honour)
    try:
        settings = sync_settings(tmp_path, emu, database__url=database_url)
        open_db(settings)
        worker = SyncWorker(settings)
        image = seed_image(settings, filename="lost.jpg", seed=3)
        emu.queue_faults("drop")
        first = worker.run_pass()
        assert first.stopped == "backoff" and first.synced == 0
        assert len(emu.images) == 1  # upstream stored it; the device never heard so
        assert Image.get_by_id(image.id).sync_state == "pending"
        second = worker.run_pass(manual=True)
        assert second.synced == 1
        assert len(emu.images) == 1 and emu.uploads_received == (1 if honour else 2)
        final = Image.get_by_id(image.id)
        assert final.sync_state == "synced"
        statuses = [e.status for e in emu.log if e.path.endswith("/upload")]
        # Same key => same answer (201 with the ids); without that, the hash says 409 duplicate.
        assert statuses == ([None, 201] if honour else [None, 409])
        assert final.remote_id == (str(emu.images[image.sha256].image_id) if honour else "")
        worker.close()
    finally:
        emu.close()
        database.close()


def test_idempotency_key_is_fixed_at_queue_time(env, emulator):
    settings, make = env
    _, worker = make()
    image = seed_image(settings, filename="k.jpg", seed=9, device_id="camX")
    emulator.queue_faults("500")
    worker.run_pass()
    drain(worker)
    keys = [e.idempotency_key for e in emulator.log if e.path.endswith("/upload")]
    expected = hashlib.sha256(f"camX\n{image.sha256}".encode()).hexdigest()
    assert keys == [expected, expected]


def test_poison_item_is_quarantined_and_the_rest_still_sync(env, emulator):
    settings, make = env
    cfg, worker = make(upstream__max_attempts=3)
    poison = seed_image(settings, filename="poison.jpg", seed=1)
    good = [seed_image(settings, filename=f"good{i}.jpg", seed=10 + i) for i in range(3)]
    emulator.poison["poison.jpg"] = "500"
    taken = run_loop_until(
        cfg,
        worker,
        lambda: all(Image.get_by_id(g.id).sync_state == "synced" for g in good),
        timeout=20,
    )
    assert taken < 20
    row = Outbox.get(Outbox.image == poison.id)
    assert row.state == "quarantined" and row.attempts == 2 and row.last_status == 500
    assert "gave up after 3 attempts" in row.last_error
    assert Image.get_by_id(poison.id).sync_state == "quarantined"
    poison_sends = [e for e in emulator.log if e.path.endswith("/upload") and e.status == 500]
    assert len(poison_sends) == 3
    # Put back by hand once upstream accepts it.
    del emulator.poison["poison.jpg"]
    assert outbox.retry_quarantined() == 1
    assert Image.get_by_id(poison.id).sync_state == "pending"
    drain(worker)
    assert Image.get_by_id(poison.id).sync_state == "synced"
    assert len(emulator.images) == 4


@pytest.mark.parametrize("fault,status", [("400", 400), ("413", 413)])
def test_rejected_item_is_quarantined_at_once_with_the_upstream_message(
    env, emulator, fault, status
):
    settings, make = env
    _, worker = make()
    bad = seed_image(settings, filename="bad.jpg", seed=1)
    ok = seed_image(settings, filename="ok.jpg", seed=2)
    emulator.queue_faults(fault)
    report = worker.run_pass()
    assert report.quarantined == 1 and report.synced == 1 and not report.stopped
    row = Outbox.get(Outbox.image == bad.id)
    assert row.state == "quarantined" and row.last_status == status
    assert "emulated" in row.last_error  # the upstream message is kept for the operator
    assert Image.get_by_id(ok.id).sync_state == "synced"


def test_file_missing_locally_is_quarantined_not_retried(env, emulator):
    settings, make = env
    _, worker = make()
    image = seed_image(settings, filename="gone.jpg", seed=4)
    (settings.images_dir / image.storage_key).unlink()
    report = worker.run_pass()
    # Nothing was sent (upstream was only asked what it is: GET /device/self).
    assert report.quarantined == 1
    assert not [e for e in emulator.log if e.path != "/api/device/self"]
    assert "missing" in Outbox.get(Outbox.image == image.id).last_error


def test_a_row_that_cannot_be_prepared_here_does_not_hold_back_the_rest(env, emulator, caplog):
    """A stored polygon this version cannot read back makes its upload fail before anything
    is sent: that row counts attempts and ends quarantined with the error; the rows behind
    it sync in the same passes."""
    settings, make = env
    _, worker = make(upstream__max_attempts=2)
    broken = seed_image(
        settings,
        filename="broken.jpg",
        seed=5,
        annotations=(polygon("scratch", 0.1, 0.1, 0.5, 0.1, 0.3, 0.6),),
    )
    good = [seed_image(settings, filename=f"fine{i}.jpg", seed=20 + i) for i in range(3)]
    database.execute_sql(
        "UPDATE annotation SET geometry = 'not json' WHERE image_id = ?", (broken.id,)
    )
    first = worker.run_pass()
    assert first.synced == 3 and not first.stopped
    assert all(Image.get_by_id(g.id).sync_state == "synced" for g in good)
    row = Outbox.get(Outbox.image == broken.id)
    assert row.state == "pending" and row.attempts == 1 and "JSONDecodeError" in row.last_error
    assert worker.run_pass().quarantined == 1
    row = Outbox.get(Outbox.image == broken.id)
    assert row.state == "quarantined" and "gave up after 2 attempts" in row.last_error
    assert Image.get_by_id(broken.id).sync_state == "quarantined"
    assert len(emulator.images) == 3 and not any(e.status is None for e in emulator.log)
    assert "cannot send upload of image" in caplog.text


def test_slow_answer_past_the_timeout_is_retried_and_stored_once(env, emulator):
    settings, make = env
    emulator.slow_seconds = 1.5
    _, worker = make(upstream__timeout_seconds=0.5)
    image = seed_image(settings, filename="slow.jpg", seed=5)
    emulator.queue_faults("slow")
    first = worker.run_pass()
    assert first.stopped == "backoff"
    assert "timed out" in load_status().last_error_message
    drain(worker)
    assert Image.get_by_id(image.id).sync_state == "synced" and len(emulator.images) == 1


def test_string_ids_are_kept_opaque(tmp_path, database_url):
    emu = UpstreamEmulator(id_style="str")
    try:
        settings = sync_settings(tmp_path, emu, database__url=database_url)
        open_db(settings)
        worker = SyncWorker(settings)
        image = seed_image(settings, seed=2)
        drain(worker)
        row = Image.get_by_id(image.id)
        assert row.remote_id.startswith("img_") and row.remote_batch_id == "batch_7"
        worker.close()
    finally:
        emu.close()
        database.close()


def test_order_newest_sends_the_latest_capture_first(env, emulator):
    settings, make = env
    _, worker = make(upstream__order="newest", upstream__batch_size=10)
    names = [seed_image(settings, filename=f"n{i}.jpg", seed=i).filename for i in range(4)]
    drain(worker)
    sent = [s.filename for s in sorted(emulator.images.values(), key=lambda s: s.image_id)]
    assert sent == list(reversed(names))


def test_oldest_first_by_default(env, emulator):
    settings, make = env
    _, worker = make(upstream__batch_size=2)
    names = [seed_image(settings, filename=f"o{i}.jpg", seed=i).filename for i in range(5)]
    reports = drain(worker)
    assert [r.synced for r in reports] == [2, 2, 1]
    sent = [s.filename for s in sorted(emulator.images.values(), key=lambda s: s.image_id)]
    assert sent == names


def test_same_bytes_from_another_source_is_a_duplicate_not_a_failure(env, emulator):
    settings, make = env
    _, worker = make()
    data = jpeg_bytes(seed=77)
    emulator.store_upload(data, "already.jpg", {})
    image = seed_image(settings, filename="again.jpg", data=data)
    report = worker.run_pass()
    assert report.synced == 1 and Image.get_by_id(image.id).sync_state == "synced"
    assert len(emulator.images) == 1
