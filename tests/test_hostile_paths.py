"""Path traversal and escapes against the real service (``edgecatalog serve`` as a subprocess,
watching a capture folder): a corpus of hostile paths on every route that touches files, as
upload file names and metadata.filename, and symlinks planted in the capture folder and the
data folder that point outside. A secret file outside every served folder must never be read
into any response, and nothing is written outside the data folder.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import requests
from capture_helpers import wait_for
from conftest import jpeg_bytes, make_settings
from reliability import SECRET_BYTES, plant_secret, record
from serve_process import ServeProcess, free_port, write_config
from upload_helpers import CONTENT_TYPE, body, part

from edgecatalog.auth import Authenticator

# Encoded dots and slashes, absolute paths, NUL, overlong names, unicode lookalikes.
TRAVERSAL = [
    "../secret.txt",
    "../../outside/secret.txt",
    "..%2f..%2foutside%2fsecret.txt",
    "%2e%2e/%2e%2e/outside/secret.txt",
    "%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
    "%252e%252e%252f%252e%252e%252fsecret.txt",
    "..%5c..%5coutside%5csecret.txt",
    "..\\..\\outside\\secret.txt",
    "/etc/passwd",
    "//etc/passwd",
    "%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "..;/..;/etc/passwd",
    "secret.txt%00.jpg",
    "%00",
    "a%00/../..",
    "\u2025/\u2025/etc/passwd",
    "\uff0e\uff0e\uff0fetc\uff0fpasswd",
    "%c0%ae%c0%ae/etc/passwd",
    "%e2%80%a5%2fetc%2fpasswd",
    "x" * 5000,
    ("../" * 300) + "etc/passwd",
    "~/.ssh/id_rsa",
    "file:///etc/passwd",
    "C:\\Windows\\win.ini",
    "1/../../../../etc/passwd",
]
PASSWD_MARK = b"root:x:0:0"


def raw_get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """GET with the path sent byte for byte, raw UTF-8 included (http.client and requests
    would refuse or normalise it); (status, whole response) or (0, b"") if none came."""
    head = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    data = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8")
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        while sum(map(len, chunks)) < 10 * 1024 * 1024:  # bounded: no response is that big
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return int(raw.split(b" ", 2)[1]), raw
    except (IndexError, ValueError):
        return 0, raw


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture
def served(tmp_path):
    outside = tmp_path / "outside"
    plant_secret(outside)
    # A real JPEG with the secret appended: valid to every image check, so only the root
    # check can keep it from being served.
    (outside / "secret.jpg").write_bytes(jpeg_bytes(32, 32, seed=99) + SECRET_BYTES)
    watch, data = tmp_path / "watch", tmp_path / "data"
    watch.mkdir()
    (watch / "good.jpg").write_bytes(jpeg_bytes(40, 30, seed=5))
    (watch / "evil.jpg").symlink_to(outside / "secret.jpg")
    (watch / "evil_dir").symlink_to(outside, target_is_directory=True)
    (watch / "evil.txt").symlink_to(outside / "secret.txt")
    port = free_port()
    config = write_config(
        tmp_path / "serve.toml",
        data,
        port,
        capture={"watch_dirs": [str(watch)], "settle_seconds": 0.1, "scan_interval_seconds": 1.0},
        logging={"level": "WARNING"},
    )
    proc = ServeProcess(config, port)
    try:
        proc.wait_ready()
        token = Authenticator(make_settings(tmp_path)).issue_token("w", "write")
        headers = {"Authorization": f"Bearer {token}"}

        def listed():
            resp = requests.get(f"{proc.url}/data/images?limit=100", headers=headers, timeout=5)
            return [r for r in resp.json()["data"] if r["filename"] == "good.jpg"] and resp.json()

        wait_for(listed, timeout=20)
        # Planted in the data folder after start, as an attacker with a shell on the box would.
        raw = data / "images" / "raw-data"
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "planted.jpg").symlink_to(outside / "secret.jpg")
        yield proc, headers, outside, data, tmp_path
    finally:
        proc.close()


def test_nothing_outside_the_data_and_capture_folders_is_served(served):
    proc, headers, outside, _data, _tmp = served
    before_outside = tree(outside)
    bodies: list[bytes] = []
    statuses: list[int] = []
    rows = requests.get(f"{proc.url}/data/images?limit=100", headers=headers, timeout=5).json()
    ids = [r["id"] for r in rows["data"]]
    evil = [r["id"] for r in rows["data"] if r["filename"].startswith(("evil", "secret"))]
    for image_id in ids + [999_999]:
        for suffix in ("", "/thumbnail?size=128"):
            resp = requests.get(f"{proc.url}/files/{image_id}{suffix}", headers=headers, timeout=10)
            bodies.append(resp.content)
            statuses.append(resp.status_code)
            if image_id in evil:
                # Indexed through a link, but its real path is outside: never served.
                assert resp.status_code == 404, (image_id, suffix, resp.status_code)
    for payload in TRAVERSAL:
        for template in (
            "/files/{}",
            "/files/{}/thumbnail?size=128",
            "/static/{}",
            "/{}",
            "/files/1/{}",
            "/data/images/{}",
            "/static/../{}",
        ):
            path = template.format(payload)
            path = path if path.startswith("/") else "/" + path
            for hdrs in (headers, {}):
                status, content = raw_get(proc.port, path, hdrs)
                statuses.append(status)
                bodies.append(content)
    errors = [s for s in statuses if s >= 500]
    leaked = [b for b in bodies if SECRET_BYTES in b or PASSWD_MARK in b]
    assert not errors and not leaked, (errors, len(leaked))
    assert tree(outside) == before_outside  # nothing written outside either
    record(
        "hostile_paths_routes",
        runs=1,
        faults=len(statuses),
        requests=len(statuses),
        errors=len(errors) + len(leaked),
        lost=0,
        linked_rows_indexed=len(evil),
    )


def test_hostile_upload_filenames_stay_inside_images(served):
    proc, headers, _outside, data, tmp_path = served
    before_root = tree(tmp_path) - {p for p in tree(tmp_path) if p.startswith("data")}
    statuses: list[int] = []
    stored_keys: list[str] = []
    for i, payload in enumerate(TRAVERSAL + ["evil.jpg", "a/b.jpg", "\u202egpj.exe", ".."]):
        name = payload.replace('"', "")
        for where in ("part", "metadata"):
            image = jpeg_bytes(24, 24, seed=1000 + 2 * i + (where == "metadata"))
            parts = [part("image", image, name if where == "part" else "frame.jpg", "image/jpeg")]
            if where == "metadata":
                parts.append(part("metadata", json.dumps({"filename": payload}).encode()))
            resp = requests.post(
                f"{proc.url}/device/images/upload",
                data=body(*parts),
                headers={**headers, "Content-Type": CONTENT_TYPE},
                timeout=10,
            )
            statuses.append(resp.status_code)
            assert resp.status_code in (200, 201, 400, 413, 414, 415, 431), (payload, resp.text)
            if resp.status_code in (200, 201):
                stored_keys.append(resp.json()["data"]["storage_key"])
            else:
                assert resp.json()["error"]["details"], resp.text
    images = (data / "images").resolve()
    for key in stored_keys:
        resolved = (images / key).resolve()
        assert resolved.is_file() and os.path.commonpath([images, resolved]) == str(images), key
    after_root = tree(tmp_path) - {p for p in tree(tmp_path) if p.startswith("data")}
    assert after_root == before_root, after_root ^ before_root
    assert not [s for s in statuses if s >= 500]
    record(
        "hostile_paths_upload_names",
        runs=1,
        faults=len(statuses),
        requests=len(statuses),
        errors=sum(s >= 500 for s in statuses),
        lost=0,
        accepted=len(stored_keys),
    )
