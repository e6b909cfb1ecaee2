"""PostgreSQL restarted under the service: requests meanwhile get 503 DATABASE_UNAVAILABLE
with Retry-After (never a 500 or a traceback), nothing acknowledged is lost, and the service
answers again once the server is back, without a restart of its own. A cluster of the test's
own (tests/pg_cluster.py), stopped and started for real; the app on a real waitress."""

from __future__ import annotations

import time

import pg_cluster
import pytest
import requests
from conftest import make_settings, seed_image
from serve_process import ThreadedServer, wait_until

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.models import database


@pytest.fixture
def own_cluster():
    cluster, reason = pg_cluster.start(own=True)
    if cluster is None:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    try:
        pg_cluster.make_template(cluster)
        yield cluster
    finally:
        if not database.is_closed():
            database.close()
        cluster.stop()


def test_a_restart_is_503_with_retry_after_then_the_service_recovers(tmp_path, own_cluster):
    settings = make_settings(tmp_path, database__url=own_cluster.new_database())
    app = create_app(settings)
    ids = [seed_image(settings, filename=f"kept{i}.jpg", seed=i).id for i in range(3)]
    database.close()
    token = Authenticator(settings).issue_token("t", "write")
    headers = {"Authorization": f"Bearer {token}"}
    server = ThreadedServer(app, threads=2)
    try:
        assert server.get("/data/images", headers=headers).json()["meta"]["total"] == 3
        own_cluster.pause()
        for _ in range(4):  # every server thread: a dead connection, or none to be had
            resp = server.get("/data/images", headers=headers)
            assert resp.status_code == 503, resp.text
            body = resp.json()
            assert body["error"]["code"] == "DATABASE_UNAVAILABLE" and not body["success"]
            assert int(resp.headers["Retry-After"]) >= 1
            assert "Traceback" not in resp.text
        assert server.get("/readyz").status_code == 503
        own_cluster.resume()
        deadline = time.monotonic() + 15
        while True:
            resp = server.get("/data/images", headers=headers)
            if resp.status_code == 200 or time.monotonic() > deadline:
                break
            assert resp.status_code == 503
            time.sleep(0.2)
        assert resp.status_code == 200, resp.text
        assert sorted(row["id"] for row in resp.json()["data"]) == sorted(ids)
        # And it writes again, on the reconnected connections.
        resp = requests.patch(
            f"{server.url}/data/images/{ids[0]}",
            json={"split": "val"},
            headers=headers,
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        assert (
            server.get(f"/data/images/{ids[0]}", headers=headers).json()["data"]["split"] == "val"
        )
    finally:
        server.close()


class _Job:
    """A stand-in background job: it records when it is started and stopped."""

    name = "test job"

    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self) -> None:
        self.events.append("start")

    def stop(self, timeout: float) -> None:
        self.events.append("stop")


def test_an_elected_job_stops_when_its_lock_session_dies_and_is_elected_again(
    tmp_path, own_cluster
):
    """The server restarts under a process that holds an elected job's advisory lock: the lock
    is gone with the session, so the job stops there, and is elected again once the server is
    back (here the same process asks again and wins: no other one is running)."""
    from edgecatalog import db
    from edgecatalog.background import Elected

    settings = make_settings(tmp_path, database__url=own_cluster.new_database())
    db.open_for(settings)
    job = _Job()
    elected = Elected(job, settings, retry=0.2)
    elected.start()
    try:
        assert wait_until(lambda: elected.running, 10)
        own_cluster.pause()
        assert wait_until(lambda: not elected.running, 10)
        assert job.events == ["start", "stop"]
        own_cluster.resume()
        assert wait_until(lambda: elected.running, 20)
        assert job.events == ["start", "stop", "start"]
    finally:
        elected.stop(5)
