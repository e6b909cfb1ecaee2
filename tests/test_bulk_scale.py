"""A bulk change by filter on a seeded catalog while the list is being read over real HTTP:
totals right after equal COUNT(*), the outbox holds one change per synced image, and no list
request waits more than a second while the change runs. 100,000 images in the slow run; a
bounded catalog (2,000 images) with small chunks (so the change still spans 40 transactions)
in the normal run."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from conftest import LiveServer
from test_bulk_edits import seed_many

from edgecatalog import bulk_edits
from edgecatalog.models import Image, Outbox, database

pytestmark = pytest.mark.both_engines


def _change_while_listing(settings, app, auth_headers, count: int) -> None:
    ids = seed_many(settings, count)
    synced = ids[::10]
    for at in range(0, len(synced), 5_000):
        Image.update(sync_state="synced").where(Image.id.in_(synced[at : at + 5_000])).execute()
    Outbox.delete().execute()
    database.close()  # the server's threads open their own connections
    server = LiveServer(app)
    waits: list[float] = []
    done = threading.Event()

    def read() -> None:
        queries = ("annotation_status=completed", "split=train&has_annotations=true", "")
        i = 0
        while not done.is_set():
            started = time.monotonic()
            resp = requests.get(
                f"{server.url}/data/images?limit=20&{queries[i % 3]}",
                headers=auth_headers(),
                timeout=10,
            )
            waits.append(time.monotonic() - started)
            assert resp.status_code == 200
            i += 1

    readers = [threading.Thread(target=read) for _ in range(2)]
    try:
        for reader in readers:
            reader.start()
        body = {
            "filter": {"annotation_status": "pending"},
            "set": {"annotation_status": "completed", "split": "train"},
        }
        began = time.monotonic()
        resp = requests.patch(
            f"{server.url}/data/images",
            json=body,
            headers={**auth_headers("write"), "Idempotency-Key": "scale-1"},
            timeout=600,
        )
    finally:
        done.set()
        for reader in readers:
            reader.join()
        server.close()
    took = time.monotonic() - began
    print(f"\n{count} images in {took:.1f} s; {len(waits)} list requests, max {max(waits):.3f} s")
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == {"matched": count, "changed": count, "skipped_locked": 0}
    assert len(waits) > 5 and max(waits) < 1.0, (len(waits), max(waits))
    with database.connection_context():
        completed = database.execute_sql(
            "SELECT count(*) FROM image WHERE annotation_status = 'completed' AND split = 'train'"
        ).fetchone()[0]
        assert completed == count
        queued = {r.image_id: json.loads(r.payload) for r in Outbox.select()}
    assert queued == {i: {"annotation_status": "completed", "split": "train"} for i in synced}
    client = app.test_client()
    for query, want in (
        ({"annotation_status": "completed"}, count),
        ({"annotation_status": "pending"}, 0),
        ({"split": "train", "device_id": "cam01"}, (count + 1) // 2),
        ({"split": "train", "sync_state": "synced"}, len(synced)),
    ):
        resp = client.get(
            "/data/images", query_string={**query, "limit": 1}, headers=auth_headers()
        )
        assert resp.get_json()["meta"]["total"] == want, query


def test_a_bulk_change_by_filter_while_the_list_is_read(settings, app, auth_headers, monkeypatch):
    monkeypatch.setattr(bulk_edits, "CHUNK", 50)  # 40 transactions for 2,000 images
    _change_while_listing(settings, app, auth_headers, 2_000)


@pytest.mark.slow
def test_a_bulk_change_of_100000_images_by_filter(settings, app, auth_headers):
    _change_while_listing(settings, app, auth_headers, 100_000)
