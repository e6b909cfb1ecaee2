"""Every limit a client can push against, enforced by the server ``edgecatalog serve`` builds
(``server.build_server``) over real HTTP: body size per route (declared and chunked), header
size, query string length, class_values items, parameter length, connection_limit,
channel_timeout, threads; and each one present with its default in config.example.toml.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import requests
from conftest import jpeg_bytes, make_settings, seed_image

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.config import SETTINGS, tomllib
from edgecatalog.models import database
from edgecatalog.server import BODY_HEADROOM, GracefulServer, build_server

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
LIMIT_KEYS = (
    "server.threads",
    "server.connection_limit",
    "server.channel_timeout",
    "server.max_request_header_bytes",
    "server.max_query_string_bytes",
    "server.max_json_body_bytes",
    "ingest.max_upload_bytes",
    "limits.max_class_values",
    "limits.max_param_chars",
    "server.shutdown_timeout",
)


class Served:
    """The app behind exactly the waitress server production builds, on a free port."""

    def __init__(self, tmp_path: Path, **overrides) -> None:
        import threading

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.settings = make_settings(tmp_path, server__port=port, **overrides)
        self.app = create_app(self.settings)
        self.graceful = GracefulServer(build_server(self.app, self.settings))
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.thread = threading.Thread(target=self.graceful.run_until_stopped, daemon=True)
        self.thread.start()
        auth = Authenticator(self.settings)
        self.write = {"Authorization": f"Bearer {auth.issue_token('w', 'write')}"}

    def close(self) -> None:
        self.graceful.request_stop()
        self.thread.join(5)
        self.graceful.drain(1.0)
        if not database.is_closed():
            database.close()


@pytest.fixture
def served(tmp_path):
    servers = []

    def make(**overrides) -> Served:
        servers.append(Served(tmp_path / str(len(servers)), **overrides))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def raw(port: int, request: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def error_of(response: requests.Response) -> dict:
    body = response.json()
    assert body["success"] is False
    return body["error"]


def test_every_limit_is_in_the_example_config_with_its_default():
    example = tomllib.loads(EXAMPLE.read_text())
    by_name = {s.name: s for s in SETTINGS}
    for name in LIMIT_KEYS:
        section, key = name.split(".")
        assert example[section][key] == by_name[name].default, name


def test_waitress_gets_the_configured_limits(served):
    server = served(
        server__threads=3,
        server__connection_limit=7,
        server__channel_timeout=9,
        server__max_request_header_bytes=4096,
        ingest__max_upload_bytes=300_000,
    )
    adj = server.graceful.adj
    assert (adj.threads, adj.connection_limit, adj.channel_timeout) == (3, 7, 9)
    assert adj.max_request_header_size == 4096
    # The larger of JSON (1 MiB) and upload, plus the headroom that lets web.py answer 413.
    assert adj.max_request_body_size == 1024 * 1024 + BODY_HEADROOM
    assert adj.cleanup_interval <= 9


def test_json_body_limit_declared_and_chunked(served):
    server = served(server__max_json_body_bytes=1024)
    with database.connection_context():
        image = seed_image(server.settings)
    big = json.dumps({"split": "train", "pad": "x" * 2000})
    answer = requests.patch(
        f"{server.url}/data/images/{image.id}",
        data=big,
        timeout=5,
        headers={**server.write, "Content-Type": "application/json"},
    )
    assert answer.status_code == 413 and error_of(answer)["code"] == "PAYLOAD_TOO_LARGE"
    # Chunked: no Content-Length to check up front, so the read itself must stop.
    body = big.encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    reply = raw(
        server.port,
        (
            f"PATCH /data/images/{image.id} HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: {server.write['Authorization']}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + chunked,
    )
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    with database.connection_context():
        from edgecatalog.models import Image

        assert Image.get_by_id(image.id).split == "none"  # nothing half-written


def test_upload_route_has_its_own_larger_limit(served):
    server = served(server__max_json_body_bytes=1024, ingest__max_upload_bytes=200_000)
    image = jpeg_bytes(256, 256, seed=3)
    assert 1024 < len(image) < 200_000
    ok = requests.post(
        server.url + "/device/images/upload",
        headers=server.write,
        timeout=10,
        files={"image": ("a.jpg", image, "image/jpeg")},
    )
    assert ok.status_code == 201, ok.text
    # Just over the route's limit: web.py answers with the JSON envelope.
    over = requests.post(
        server.url + "/device/images/upload",
        headers=server.write,
        timeout=10,
        files={"image": ("b.jpg", b"\xff" * 210_000, "image/jpeg")},
    )
    assert over.status_code == 413 and error_of(over)["code"] == "PAYLOAD_TOO_LARGE"
    # Far over every limit: waitress refuses it from Content-Length, before spooling it.
    huge = raw(
        server.port,
        (
            b"POST /device/images/upload HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 900000000\r\n\r\n"
        ),
    )
    assert huge.startswith(b"HTTP/1.1 413"), huge[:200]


def test_header_size_limit(served):
    server = served(server__max_request_header_bytes=2048)
    answer = requests.get(server.url + "/healthz", headers={"X-Pad": "p" * 4000}, timeout=5)
    assert answer.status_code == 431
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200


def test_query_string_limit(served):
    server = served(server__max_query_string_bytes=256)
    answer = requests.get(
        server.url + "/data/images?search=" + "q" * 300, headers=server.write, timeout=5
    )
    assert answer.status_code == 414
    assert error_of(answer) == {
        "code": "URI_TOO_LONG",
        "details": "query",
        "message": "query string is longer than 256 bytes",
    }


def test_class_values_and_parameter_length(served):
    server = served(limits__max_class_values=3, limits__max_param_chars=64)
    many = requests.get(
        server.url + "/data/images?class_values=a,b,c,d", headers=server.write, timeout=5
    )
    assert many.status_code == 400 and error_of(many)["details"] == "class_values"
    three = requests.get(
        server.url + "/data/images?class_values=a,b,c", headers=server.write, timeout=5
    )
    assert three.status_code == 200
    long = requests.get(
        server.url + "/data/images?search=" + "s" * 65, headers=server.write, timeout=5
    )
    assert long.status_code == 400 and error_of(long)["details"] == "search"


def test_channel_timeout_closes_idle_connections(served):
    server = served(server__channel_timeout=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server hung up on the idle connection
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5, elapsed


def test_connection_limit_stops_accepting(served):
    server = served(server__connection_limit=4)
    # waitress counts its own listener and wake-up pipe in the map: 2 client slots here.
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        time.sleep(0.3)
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(server.url + "/healthz", timeout=1)
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_non_ascii_signature_is_a_clean_403(served):
    server = served()
    with database.connection_context():
        image = seed_image(server.settings)
    answer = requests.get(
        f"{server.url}/files/{image.id}?expires=99999999999&signature=%F3%9F%8E%B7", timeout=5
    )
    assert answer.status_code == 403 and error_of(answer)["details"] == "signature"
