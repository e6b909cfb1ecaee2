"""A device key is one device: keys bound to device ids (from the settings and from
``edgecatalog device-key``), uploads held to their key's device and kept from claiming human
review, revocation seen by a running service, a rate limit per device that answers before
the body is read, and a share of the disk per device.

Uploads are real multipart bodies through the real app (or a real ``edgecatalog serve``);
expected devices, codes and byte totals come from what the test configured and sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import make_settings
from serve_process import ServeProcess, free_port, write_config
from upload_helpers import (
    CONTENT_TYPE,
    PLAIN_DEVICE_KEY,
    catalog_counts,
    image_bytes,
    stored_files,
    unique_jpeg,
    upload_body,
)

from edgecatalog import create_app, retention
from edgecatalog.auth import Authenticator, digest_key
from edgecatalog.config import ConfigError, load_settings
from edgecatalog.models import database

UPLOAD = "/device/images/upload"
KEY_A = "adk_" + "a1" * 20
KEY_B = "adk_" + "b2" * 20


def bound_keys() -> dict:
    """cam-a by a plain key, cam-b by a digest, and a bare key (this device's own id)."""
    return {
        "auth__device_keys": [
            f"cam-a={KEY_A}",
            f"cam-b=sha256:{digest_key(KEY_B)}",
            PLAIN_DEVICE_KEY,
        ],
        "device__id": "edge-box",
    }


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, **bound_keys())


def post(client, data: bytes, headers: dict, environ: dict | None = None):
    return client.post(
        UPLOAD,
        data=data,
        headers={"Content-Type": CONTENT_TYPE, **headers},
        environ_overrides=environ or {},
    )


def key(k: str) -> dict:
    return {"X-Device-Key": k}


def device_of(client, auth_headers, image_id: int) -> str:
    resp = client.get(f"/data/images/{image_id}", headers=auth_headers())
    return resp.json["data"]["device_id"]


def assert_error(resp, status: int, code: str, details: str) -> None:
    assert resp.status_code == status, resp.json
    assert resp.json["success"] is False and resp.json["data"] is None
    assert (resp.json["error"]["code"], resp.json["error"]["details"]) == (code, details)


# -- keys bound to devices ---------------------------------------------------------------


def test_upload_is_the_keys_device(client, settings, auth_headers, caplog):
    def upload(headers: dict, seed: int, meta=None):
        return post(client, upload_body(image_bytes(seed=seed), meta), headers)

    cases = [  # (credential, metadata, device the image must belong to)
        (key(KEY_A), None, "cam-a"),
        (key(KEY_A), {"device_id": "cam-a"}, "cam-a"),
        (key(KEY_A), {"device_id": ""}, "cam-a"),
        (key(KEY_B), None, "cam-b"),
        (key(PLAIN_DEVICE_KEY), None, "edge-box"),
        (auth_headers("write"), {"device_id": "cam-b"}, "cam-b"),  # people/gateway: as before
        (auth_headers("write"), None, "edge-box"),
    ]
    for seed, (headers, meta, device) in enumerate(cases, start=1):
        resp = upload(headers, seed, meta)
        assert resp.status_code == 201, (meta, resp.json)
        assert device_of(client, auth_headers, resp.json["data"]["image_id"]) == device

    before = (catalog_counts(), stored_files(settings.images_dir))
    with caplog.at_level(logging.WARNING, logger="edgecatalog"):
        for headers, claimed in (
            (key(KEY_A), "cam-b"),
            (key(KEY_B), "cam-a"),
            (key(PLAIN_DEVICE_KEY), "cam-a"),
        ):
            resp = upload(headers, 100, {"device_id": claimed})
            assert_error(resp, 403, "DEVICE_MISMATCH", "metadata.device_id")
    assert (catalog_counts(), stored_files(settings.images_dir)) == before
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'cam-a'" in w and "'cam-b'" in w for w in warnings), warnings
    assert any("'edge-box'" in w and "'cam-a'" in w for w in warnings), warnings
    assert KEY_A not in caplog.text and KEY_B not in caplog.text
    assert PLAIN_DEVICE_KEY not in caplog.text


def test_device_key_cannot_claim_human_review(client, settings, auth_headers):
    box = [0.5, 0.5, 0.2, 0.1]

    def meta(*sources):
        return {
            "annotations": [
                {
                    "class_value": "c",
                    "type": "bbox",
                    "geometry": box,
                    **({"source": s} if s is not None else {}),
                }
                for s in sources
            ]
        }

    for i, sources in enumerate(
        [(None, "manual"), ("manual",), ("model", "MANUAL"), (None, None, " Manual ")]
    ):
        resp = post(client, upload_body(image_bytes(seed=10 + i), meta(*sources)), key(KEY_A))
        bad = next(n for n, s in enumerate(sources) if s and s.strip().lower() == "manual")
        assert_error(resp, 403, "MANUAL_SOURCE_FORBIDDEN", f"metadata.annotations[{bad}].source")
    assert catalog_counts() == (0, 0) and stored_files(settings.images_dir) == []

    ok = post(client, upload_body(image_bytes(seed=20), meta(None, "yolo-v8")), key(KEY_A))
    assert ok.status_code == 201, ok.json
    image = client.get(f"/data/images/{ok.json['data']['image_id']}", headers=auth_headers())
    assert [a["source"] for a in image.json["data"]["annotations"]] == ["model", "yolo-v8"]
    # A person's write token may record review, as before.
    person = post(client, upload_body(image_bytes(seed=21), meta("manual")), auth_headers("write"))
    assert person.status_code == 201, person.json
    image = client.get(f"/data/images/{person.json['data']['image_id']}", headers=auth_headers())
    assert [a["source"] for a in image.json["data"]["annotations"]] == ["manual"]


def test_settings_entries_are_checked(tmp_path):
    long_id = "x" * 300
    with pytest.raises(ConfigError) as err:
        Authenticator(make_settings(tmp_path, auth__device_keys=[f"{long_id}={KEY_A}"]))
    assert "auth.device_keys entry 1" in str(err.value) and KEY_A not in str(err.value)
    with pytest.raises(ConfigError, match="two devices"):
        Authenticator(
            make_settings(
                tmp_path, auth__device_keys=[f"cam-a={KEY_A}", f"cam-b=sha256:{digest_key(KEY_A)}"]
            )
        )
    with pytest.raises(ConfigError, match="64 hex"):
        Authenticator(make_settings(tmp_path, auth__device_keys=["cam-a=sha256:abc"]))
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# one key per camera\ncam-f={KEY_A}\n\n{KEY_B}\n")
    auth = Authenticator(make_settings(tmp_path, auth__device_keys_file=str(keys), device__id="gw"))
    assert auth.verify_device_key(KEY_A).device_id == "cam-f"
    assert auth.verify_device_key(KEY_B).device_id == "gw"
    keys.write_text(f"cam-f={KEY_A}\n=adk_x\n")
    with pytest.raises(ConfigError, match=r"keys\.txt\) line 2"):
        Authenticator(make_settings(tmp_path, auth__device_keys_file=str(keys)))


# -- the device-key command ---------------------------------------------------------------


def cli(cwd: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    return subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args, "--config", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess, *names: str) -> None:
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert err and "\n" not in err and "Traceback" not in proc.stderr, proc.stderr
    for name in names:
        assert name in err, err


def test_device_key_command(tmp_path):
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "edge.toml", data, free_port(), auth={"device_keys": [f"cam-cfg={KEY_A}"]}
    )
    made = {}
    for n in (1, 2):
        proc = cli(tmp_path, config, "device-key", "add", "cam-1", "--label", f"door {n}")
        assert proc.returncode == 0, proc.stderr
        new = proc.stdout.strip()
        assert "\n" not in new and new.startswith("adk_") and len(new) >= 40
        fp = hashlib.sha256(new.encode()).hexdigest()[:12]
        assert fp in proc.stderr and new not in proc.stderr
        made[fp] = new
    assert len(set(made.values())) == 2

    stored = sqlite3.connect(data / "catalog.db")
    rows = stored.execute("SELECT device_id, digest, label, revoked_at FROM device_key").fetchall()
    stored.close()
    assert sorted(rows) == sorted(
        ("cam-1", hashlib.sha256(k.encode()).hexdigest(), f"door {n}", None)
        for n, k in enumerate(made.values(), start=1)
    )
    for name in os.listdir(data):  # the database file, its WAL: digests only, never a key
        if name.startswith("catalog.db"):
            raw = (data / name).read_bytes()
            assert not any(k.encode() in raw for k in made.values())

    listed = cli(tmp_path, config, "device-key", "list")
    assert listed.returncode == 0, listed.stderr
    for fp in made:
        assert fp in listed.stdout
    assert digest_key(KEY_A)[:12] in listed.stdout and "cam-cfg" in listed.stdout
    assert not any(k in listed.stdout for k in (*made.values(), KEY_A))
    as_json = json.loads(cli(tmp_path, config, "device-key", "list", "--json").stdout)
    assert {(r["device_id"], r["fingerprint"], r["source"]) for r in as_json} == {
        ("cam-1", fp, "database") for fp in made
    } | {("cam-cfg", digest_key(KEY_A)[:12], "settings")}

    first, second = list(made)
    assert cli(tmp_path, config, "device-key", "revoke", first).returncode == 0
    revoked = {
        r["fingerprint"]: r["revoked_at"]
        for r in json.loads(cli(tmp_path, config, "device-key", "list", "--json").stdout)
    }
    assert revoked[first] and not revoked[second]
    proc = cli(tmp_path, config, "device-key", "revoke", "cam-1")
    assert proc.returncode == 0 and second in proc.stdout and first not in proc.stdout

    one_line_error(cli(tmp_path, config, "device-key", "add", ""), "DEVICE_ID")
    one_line_error(cli(tmp_path, config, "device-key", "add", "x" * 257), "DEVICE_ID", "256")
    one_line_error(cli(tmp_path, config, "device-key", "revoke", "cam-404"), "cam-404")
    one_line_error(cli(tmp_path, config, "device-key", "revoke", "cam-cfg"), "device_keys")
    one_line_error(cli(tmp_path, config, "device-key"), "ACTION")


def test_keys_added_and_revoked_in_a_running_service(tmp_path):
    port = free_port()
    config = write_config(
        tmp_path / "edge.toml", tmp_path / "data", port, auth={"device_keys": [f"cam-cfg={KEY_A}"]}
    )
    server = ServeProcess(config, port)
    reader = Authenticator(load_settings(config, environ={})).issue_token("t", "read")
    seeds = iter(range(1000, 2000))
    session = requests.Session()

    def upload(device_key: str) -> requests.Response:
        return session.post(
            server.url + UPLOAD,
            headers=key(device_key),
            timeout=10,
            files={"image": ("f.jpg", image_bytes(seed=next(seeds)), "image/jpeg")},
        )

    def wait_for(check, limit: float) -> None:
        deadline = time.monotonic() + limit
        while not check():
            assert time.monotonic() < deadline, f"not within {limit} s"
            time.sleep(0.05)

    try:
        server.wait_ready()
        added = cli(tmp_path, config, "device-key", "add", "cam-live")
        assert added.returncode == 0, added.stderr
        live_key = added.stdout.strip()
        wait_for(lambda: upload(live_key).status_code == 201, 3.0)
        got = upload(live_key)
        assert got.status_code == 201
        image = session.get(
            f"{server.url}/data/images/{got.json()['data']['image_id']}",
            headers={"Authorization": f"Bearer {reader}"},
            timeout=10,
        ).json()
        assert image["data"]["device_id"] == "cam-live"

        assert cli(tmp_path, config, "device-key", "revoke", "cam-live").returncode == 0
        wait_for(lambda: upload(live_key).status_code == 401, 3.0)
        refused = upload(live_key).json()["error"]
        assert (refused["code"], refused["details"]) == ("DEVICE_KEY_REVOKED", "X-Device-Key")
        assert upload(KEY_A).status_code == 201  # other devices go on
        assert live_key not in server.log_text() and KEY_A not in server.log_text()
    finally:
        server.terminate()
        server.wait()
        server.close()


# -- rate per device ------------------------------------------------------------------------


class Unreadable:
    """A body that fails the test if anyone reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = readlines = __iter__ = read


def test_rate_limit_per_device_answers_before_the_body(tmp_path, auth_headers):
    # 12 a minute: a burst of 2 (ten seconds' worth), then one every 5 s.
    app = create_app(make_settings(tmp_path, auth__device_requests_per_minute=12, **bound_keys()))
    client = app.test_client()
    for seed in (1, 2):
        assert post(client, upload_body(image_bytes(seed=seed)), key(KEY_A)).status_code == 201
    unread = {"wsgi.input": Unreadable(), "CONTENT_LENGTH": "100000", "CONTENT_TYPE": CONTENT_TYPE}
    limited = post(client, b"", key(KEY_A), unread)
    assert_error(limited, 429, "RATE_LIMITED", "X-Device-Key")
    assert 1 <= int(limited.headers["Retry-After"]) <= 5
    assert "cam-a" in limited.json["error"]["message"]
    # Other devices and people are not held back by cam-a.
    assert post(client, upload_body(image_bytes(seed=3)), key(KEY_B)).status_code == 201
    for seed in (4, 5, 6):
        assert (
            post(client, upload_body(image_bytes(seed=seed)), auth_headers("write")).status_code
            == 201
        )
    if any(r.rule == "/auth/upload" for r in app.url_map.iter_rules()):
        # The proxy's pre-body check asks without spending: cam-b still has one upload left.
        for _ in range(3):
            assert client.get("/auth/upload", headers=key(KEY_B)).status_code == 204
        assert post(client, upload_body(image_bytes(seed=7)), key(KEY_B)).status_code == 201
        assert client.get("/auth/upload", headers=key(KEY_B)).status_code == 429
    database.close()


# -- disk share per device ----------------------------------------------------------------

FREE = 300_000  # simulated free bytes on the data disk


@pytest.fixture
def fixed_disk():
    retention.use_disk_usage(lambda path: (10**9, FREE))
    yield
    retention.use_disk_usage(None)


def test_one_device_cannot_fill_the_disk(tmp_path, fixed_disk, auth_headers, monkeypatch):
    settings = make_settings(
        tmp_path,
        ingest__device_disk_share=0.5,
        retention__max_disk_percent=100,
        retention__min_free_bytes=0,
        **bound_keys(),
    )
    client = create_app(settings).test_client()
    held = {"cam-a": 0, "cam-b": 0}  # bytes of each device's stored images, as sent
    seeds = iter(range(10_000))

    def send(device: str, headers: dict, meta=None):
        data = unique_jpeg(next(seeds))
        payload = upload_body(data, meta)
        used, total = held[device], sum(held.values())
        refuse = total - used > 0 and used + len(payload) > int(0.5 * (total + FREE))
        resp = post(client, payload, headers)
        if refuse:
            assert_error(resp, 507, "DEVICE_SHARE_EXCEEDED", "device_id")
            assert f"'{device}'" in resp.json["error"]["message"]
        else:
            assert resp.status_code == 201, (device, used, total, resp.json)
            held[device] += len(data)
        return resp.status_code

    # Alone, cam-a may fill past its share: the disk's own limits are what apply then.
    assert [send("cam-a", key(KEY_A)) for _ in range(4)] == [201] * 4
    assert held["cam-a"] > 0.5 * (held["cam-a"] + FREE)
    assert send("cam-b", key(KEY_B)) == 201
    before = (catalog_counts(), stored_files(settings.images_dir))
    assert send("cam-a", key(KEY_A)) == 507
    assert (catalog_counts(), stored_files(settings.images_dir)) == before
    assert send("cam-b", key(KEY_B)) == 201  # the other device keeps uploading
    # A person's token is not a device: not held to a share (as before).
    data = unique_jpeg(next(seeds))
    person = post(client, upload_body(data, {"device_id": "cam-a"}), auth_headers("write"))
    assert person.status_code == 201
    held["cam-a"] += len(data)
    # Evicted images no longer count: the refusal re-reads the totals first.
    from edgecatalog.ingest.upload import DeviceShare

    monkeypatch.setattr(DeviceShare, "RECHECK_SECONDS", 0.0)
    with database.connection_context():
        database.execute_sql(
            "UPDATE image SET evicted_at = 1 WHERE device_id = "
            "(SELECT id FROM device WHERE device_id = 'cam-a')"
        )
    held["cam-a"] = 0
    assert send("cam-a", key(KEY_A)) == 201
    database.close()
