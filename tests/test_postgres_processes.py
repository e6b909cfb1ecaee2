"""More than one ``edgecatalog serve`` on one PostgreSQL catalog and one data folder: both
answer the API, sync passes run in one process at a time (the pass's advisory lock, shared by
every process on the database), each image reaches upstream once, and when one process is
SIGKILLed the other carries the rest. Real processes, a real cluster, the upstream emulator."""

from __future__ import annotations

import signal
import time

import pytest
import requests
from conftest import jpeg_bytes, make_settings, seed_image
from serve_process import ServeProcess, free_port, wait_until, write_config
from upstream_emulator import UpstreamEmulator

from edgecatalog import db
from edgecatalog.auth import Authenticator
from edgecatalog.models import Image, database


def _synced() -> int:
    with database.connection_context():
        return Image.select().where(Image.sync_state == "synced").count()


def _wait_synced(n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (done := _synced()) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    return done


def test_two_processes_share_the_catalog_and_sync_once(tmp_path, pg_cluster):
    if isinstance(pg_cluster, str):
        pytest.skip(f"PostgreSQL tests skipped: {pg_cluster}")
    url = pg_cluster.new_database()
    emu = UpstreamEmulator(honour_idempotency=False, latency=0.02)
    servers: list[ServeProcess] = []
    try:
        data = tmp_path / "data"
        settings = make_settings(tmp_path, database__url=url)
        db.open_for(settings)
        first = [
            seed_image(settings, filename=f"a{i}.jpg", data=jpeg_bytes(seed=i) + b"a%d" % i).id
            for i in range(30)
        ]
        database.close()
        upstream = {
            "enabled": True,
            "base_url": emu.base_url,
            "device_key": emu.device_key,
            "interval_seconds": 0.1,
            "batch_size": 5,
        }
        for name in ("one", "two"):
            port = free_port()
            config = write_config(
                tmp_path / f"{name}.toml", data, port, database={"url": url}, upstream=upstream
            )
            servers.append(ServeProcess(config, port))
        for server in servers:
            server.wait_ready()
        headers = {"Authorization": "Bearer " + Authenticator(settings).issue_token("t", "read")}
        for server in servers:  # the same catalog through either
            body = requests.get(server.url + "/data/images", headers=headers, timeout=10).json()
            assert body["meta"]["total"] >= 30
        assert _wait_synced(30, 60) == 30
        # Once each: no image was sent by both processes (the emulator keeps no replay).
        assert emu.uploads_received == 30 and len(emu.images) == 30

        # One process dies with work left; the other finishes it.
        db.open_for(settings)
        more = [
            seed_image(settings, filename=f"b{i}.jpg", data=jpeg_bytes(seed=i) + b"b%d" % i).id
            for i in range(30)
        ]
        database.close()
        time.sleep(0.3)
        servers[0].kill(signal.SIGKILL)
        assert _wait_synced(60, 90) == 60, servers[1].log_text()[-2000:]
        # Each image once in effect: a body in flight when its sender died may arrive twice,
        # and upstream answers the second as a duplicate of the first.
        assert len(emu.images) == 60
        assert emu.uploads_received - 60 <= 5  # at most one batch was in flight
        assert len(first) + len(more) == 60
    finally:
        for server in servers:
            server.close()
        emu.close()
        if not database.is_closed():
            database.close()
        pg_cluster.drop_database(url)


def _runs_capture(server: ServeProcess) -> bool:
    return "capture watcher runs in this process" in server.log_text()


def test_capture_watcher_is_elected_and_moves_when_its_process_dies(tmp_path, pg_cluster):
    """Two processes watch the same capture folder: one of them indexes it; when that one is
    SIGKILLed, the other takes over within a few seconds and indexes what arrives next."""
    if isinstance(pg_cluster, str):
        pytest.skip(f"PostgreSQL tests skipped: {pg_cluster}")
    url = pg_cluster.new_database()
    watch = tmp_path / "captures"
    watch.mkdir()
    servers: list[ServeProcess] = []
    try:
        settings = make_settings(tmp_path, database__url=url)
        capture = {"watch_dirs": [str(watch)], "settle_seconds": 0.2, "scan_interval_seconds": 1.0}
        for name in ("one", "two"):
            port = free_port()
            config = write_config(
                tmp_path / f"{name}.toml",
                tmp_path / "data",
                port,
                database={"url": url},
                capture=capture,
            )
            servers.append(ServeProcess(config, port))
        for server in servers:
            server.wait_ready()
        assert wait_until(lambda: any(_runs_capture(s) for s in servers), 10)
        time.sleep(2.5)  # a full election round: the other asked and was refused
        runners = [s for s in servers if _runs_capture(s)]
        assert len(runners) == 1
        runner, other = runners[0], next(s for s in servers if s is not runners[0])
        headers = {"Authorization": "Bearer " + Authenticator(settings).issue_token("t", "read")}

        def total() -> int:
            body = requests.get(other.url + "/data/images", headers=headers, timeout=10).json()
            return body["meta"]["total"]

        (watch / "first.jpg").write_bytes(jpeg_bytes(seed=1))
        assert wait_until(lambda: total() == 1, 15), runner.log_text()[-2000:]
        runner.kill(signal.SIGKILL)
        assert wait_until(lambda: _runs_capture(other), 10), other.log_text()[-2000:]
        (watch / "second.jpg").write_bytes(jpeg_bytes(seed=2))
        assert wait_until(lambda: total() == 2, 15), other.log_text()[-2000:]
    finally:
        for server in servers:
            server.close()
        pg_cluster.drop_database(url)
