"""Visibility of sync: GET /sync/status over real HTTP, ``edgecatalog status`` printing the
same, ``local_only`` images, the sync CLI's errors, and the sync_state migration."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import LiveServer, seed_image
from sync_helpers import open_db, sync_settings

from edgecatalog import create_app, db
from edgecatalog.auth import Authenticator
from edgecatalog.models import Image, SyncStatus, database
from edgecatalog.sync import outbox
from edgecatalog.sync.worker import SyncWorker


def _config_file(tmp_path, settings) -> str:
    lines = [
        f'[storage]\ndata_dir = "{settings.data_dir}"',
        f'[auth]\njwt_secret = "{"t" * 40}"',
        "[upstream]",
    ]
    for key in (
        "enabled",
        "base_url",
        "device_key",
        "interval_seconds",
        "max_backoff_seconds",
        "timeout_seconds",
    ):
        lines.append(f"{key} = {json.dumps(settings['upstream.' + key])}")
    lines.append('[logging]\nlevel = "WARNING"')
    path = tmp_path / "edgecatalog.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _get_status(server, settings, token=True):
    headers = {}
    if token:
        headers["Authorization"] = "Bearer " + Authenticator(settings).issue_token("t", "read")
    return server.get("/sync/status", headers=headers)


def test_status_over_http_and_on_the_terminal_agree(tmp_path, emulator):
    settings = sync_settings(tmp_path, emulator, upstream__enabled=True)
    app = create_app(settings)
    server = LiveServer(app)
    try:
        images = [seed_image(settings, filename=f"s{i}.jpg", seed=i) for i in range(3)]
        assert _get_status(server, settings, token=False).status_code == 401
        emulator.go_offline()
        SyncWorker(settings).run_pass()
        body = _get_status(server, settings).json()
        assert body["success"] is True
        data = body["data"]
        assert data["state"] == "offline"
        assert data["pending_count"] == 3
        assert data["pending_bytes"] == sum(i.byte_size for i in images)
        assert data["oldest_pending_age_seconds"] >= 0
        assert data["quarantined_count"] == 0 and data["last_success_at"] == ""
        assert data["last_error"]["status"] is None
        assert "connection failed" in data["last_error"]["message"]
        assert data["next_attempt_at"].endswith("Z")
        done = run_cli("status", "--json", "--config", _config_file(tmp_path, settings))
        assert done.returncode == 0
        printed = json.loads(done.stdout)
        for key in (
            "state",
            "pending_count",
            "pending_bytes",
            "quarantined_count",
            "last_error",
            "next_attempt_at",
            "last_success_at",
        ):
            assert printed[key] == data[key], key
        done = run_cli("status", "--config", _config_file(tmp_path, settings))
        text = done.stdout
        assert "state" in text and "offline" in text and "pending count" in text
        emulator.go_online()
        SyncWorker(settings).run_pass(manual=True)
        data = _get_status(server, settings).json()["data"]
        assert data["state"] == "idle" and data["pending_count"] == 0
        assert data["last_success_at"].endswith("Z")
        listed = server.get(
            "/data/images?sync_state=synced",
            headers={"Authorization": "Bearer " + Authenticator(settings).issue_token("t", "read")},
        ).json()
        assert sorted(r["id"] for r in listed["data"]) == sorted(i.id for i in images)
        assert all(r["synced_at"].endswith("Z") for r in listed["data"])
    finally:
        server.close()


def test_no_upstream_means_local_only_until_one_is_configured(tmp_path, emulator):
    local = sync_settings(tmp_path, emulator, upstream__base_url="")
    open_db(local)
    image = seed_image(local, seed=1)
    outbox.mark_local_only()
    assert Image.get_by_id(image.id).sync_state == "local_only"
    from edgecatalog.sync.state import status_report

    assert status_report(local)["state"] == "disabled"
    configured = sync_settings(tmp_path, emulator)
    SyncWorker(configured).run_pass(manual=True)
    assert Image.get_by_id(image.id).sync_state == "synced"
    assert len(emulator.images) == 1


def test_background_services_follow_the_configuration(tmp_path, emulator):
    from edgecatalog.background import build_services

    names = lambda s: [svc.name for svc in build_services(s)]
    assert names(sync_settings(tmp_path, emulator, upstream__base_url="")) == ["sync-local-only"]
    assert names(sync_settings(tmp_path, emulator, upstream__enabled=True)) == ["sync"]
    assert "sync" not in names(sync_settings(tmp_path, emulator))  # configured, not enabled


def test_sync_command_errors_are_one_line(tmp_path, emulator):
    local = sync_settings(tmp_path, emulator, upstream__base_url="")
    done = run_cli("sync", "--once", "--config", _config_file(tmp_path, local))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "upstream.base_url is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_sync_once_by_hand_drains_and_reports(tmp_path, emulator):
    settings = sync_settings(tmp_path, emulator)
    open_db(settings)
    for i in range(3):
        seed_image(settings, seed=i)
    config = _config_file(tmp_path, settings)
    emulator.go_offline()
    done = run_cli("sync", "--once", "--config", config)
    assert done.returncode == 1 and "sync stopped (offline)" in done.stderr
    assert done.stderr.count("\n") == 1
    emulator.go_online()
    done = run_cli("sync", "--once", "--config", config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "synced 3, quarantined 0, 0 pending"
    emulator.poison["frame.jpg"] = "400"
    seed_image(settings, seed=99)
    assert run_cli("sync", "--once", "--config", config).returncode == 0
    del emulator.poison["frame.jpg"]
    done = run_cli("sync", "--retry-quarantined", "--config", config)
    assert done.stdout.strip() == "requeued 1 quarantined item(s)"
    assert run_cli("sync", "--once", "--config", config).returncode == 0
    assert len(emulator.images) == 4


def test_migrated_sync_status_table_matches_the_model(tmp_path, emulator):
    settings = sync_settings(tmp_path, emulator)
    open_db(settings)
    migrated = database.execute_sql(
        "SELECT sql FROM sqlite_master WHERE name = 'sync_status'"
    ).fetchone()[0]
    fresh = tmp_path / "fresh.db"
    database.close()
    db.init_database(Path(fresh))
    database.create_tables([SyncStatus])
    expected = database.execute_sql(
        "SELECT sql FROM sqlite_master WHERE name = 'sync_status'"
    ).fetchone()[0]
    database.close()
    assert migrated == expected
    conn = sqlite3.connect(settings.db_path)
    assert conn.execute("SELECT count(*) FROM sync_status").fetchone() == (0,)
    conn.close()
