"""The emulator itself keeps the upstream contract the sync tests rely on."""

from __future__ import annotations

import json
import socket

import pytest
import requests
from conftest import jpeg_bytes
from upstream_emulator import UpstreamEmulator


@pytest.fixture
def emu():
    emulator = UpstreamEmulator()
    yield emulator
    emulator.close()


def _upload(emu, data, key="", device_key="adk_test", meta=None):
    headers = {"X-Device-Key": device_key}
    if key:
        headers["Idempotency-Key"] = key
    files = {"image": ("a.jpg", data, "image/jpeg")}
    if meta is not None:
        files["metadata"] = (None, json.dumps(meta), "application/json")
    return requests.post(
        emu.base_url + "/device/images/upload", headers=headers, files=files, timeout=5
    )


def test_upload_contract(emu):
    data = jpeg_bytes(seed=1)
    assert _upload(emu, data, device_key="adk_nope").status_code == 401
    first = _upload(emu, data, key="k1")
    assert first.status_code == 201
    body = first.json()
    assert body["success"] is True and set(body["data"]) == {"image_id", "batch_id", "storage_key"}
    assert _upload(emu, data, key="k1").json() == body  # same key => same answer
    dup = _upload(emu, data, key="k2")
    assert dup.status_code == 409 and "DUPLICATE" in dup.json()["error"]["code"]
    assert _upload(emu, b"GIF89a not allowed").status_code == 400
    bad_geometry = {
        "annotations": [{"class_value": "x", "type": "bbox", "geometry": [12, 30, 40, 40]}]
    }
    assert _upload(emu, jpeg_bytes(seed=2), meta=bad_geometry).status_code == 400
    assert len(emu.images) == 1 and emu.replays == 1


def test_oversized_upload_is_refused_from_its_header(emu):
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as conn:
        conn.sendall(
            b"POST /api/device/images/upload HTTP/1.1\r\nHost: x\r\n"
            b"X-Device-Key: adk_test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 60000000\r\n\r\n"
        )
        assert conn.recv(100).startswith(b"HTTP/1.1 413")


def test_device_self_patch_and_annotations(emu):
    self_info = requests.get(
        emu.base_url + "/device/self", headers={"X-Device-Key": "adk_test"}, timeout=5
    )
    assert self_info.json()["data"]["status"] == "approved"
    image_id = _upload(emu, jpeg_bytes(seed=3)).json()["data"]["image_id"]
    url = f"{emu.base_url}/data/images/{image_id}"
    assert requests.patch(url, json={"split": "val"}, timeout=5).status_code == 401
    bearer = {"Authorization": "Bearer tok_test"}
    patched = requests.patch(url, json={"split": "val"}, headers=bearer, timeout=5)
    assert patched.json()["data"]["split"] == "val"
    ann = {
        "image_id": image_id,
        "class_value": "c",
        "type": "bbox",
        "geometry": [0.5, 0.5, 0.1, 0.1],
    }
    for _ in range(2):
        requests.post(
            emu.base_url + "/data/annotations",
            json=ann,
            headers={**bearer, "Idempotency-Key": "a1"},
            timeout=5,
        )
    assert len(emu.annotations_of(image_id)) == 1


def test_faults_offline_and_dropped_answers(emu):
    emu.queue_faults("429", "drop")
    limited = _upload(emu, jpeg_bytes(seed=4))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    with pytest.raises(requests.ConnectionError):
        _upload(emu, jpeg_bytes(seed=4))
    assert len(emu.images) == 1  # stored, though the answer was dropped
    emu.go_offline()
    with pytest.raises(requests.ConnectionError):
        _upload(emu, jpeg_bytes(seed=5))
    emu.go_online()
    assert _upload(emu, jpeg_bytes(seed=5)).status_code == 201
