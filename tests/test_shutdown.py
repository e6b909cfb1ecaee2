"""SIGTERM/SIGINT on the real ``edgecatalog serve``: stop accepting, finish in-flight responses,
close the database cleanly, exit 0 — and never wait longer than ``shutdown_timeout``. SIGUSR1
writes the stacks and stops nothing.

The slow in-flight request is a large file download the test client reads slowly, so no
test-only route exists in production.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import time

import pytest
import requests
from conftest import make_settings, seed_image
from serve_process import ServeProcess, free_port, write_config

from edgecatalog.auth import Authenticator
from edgecatalog.db import migrate, open_for
from edgecatalog.models import database

BIG = 24 * 1024 * 1024  # far more than the kernel socket buffers hold, so the send is in flight


@pytest.fixture
def seeded(tmp_path):
    settings = make_settings(tmp_path)
    open_for(settings)
    migrate()
    payload = os.urandom(BIG)
    with database.connection_context():
        image = seed_image(settings, filename="big.jpg", data=payload)
    database.close()
    token = Authenticator(settings).issue_token("tester", "read")
    return settings, image.id, hashlib.sha256(payload).hexdigest(), token


def start(tmp_path, settings, **sections):
    port = free_port()
    config = write_config(tmp_path / "config.toml", settings.data_dir, port, **sections)
    proc = ServeProcess(config, port)
    proc.wait_ready()
    return proc


def open_download(port: int, image_id: int, token: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(
        f"GET /files/{image_id} HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    return sock, first


def read_rest(sock: socket.socket, first: bytes) -> tuple[dict[str, str], bytes]:
    buf = bytearray(first)
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    length = int(headers["Content-Length"])
    body = bytearray(body)
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    return headers, bytes(body)


def test_sigterm_lets_in_flight_download_finish_and_exits_0(tmp_path, seeded):
    settings, image_id, digest, token = seeded
    proc = start(tmp_path, settings, server={"shutdown_timeout": 20.0})
    try:
        sock, first = open_download(proc.port, image_id, token)
        proc.terminate(signal.SIGTERM)
        time.sleep(0.5)  # the listener is closed by now, the download still going
        with pytest.raises(requests.ConnectionError):
            requests.get(proc.url + "/healthz", timeout=2)
        _, body = read_rest(sock, first)
        sock.close()
        assert len(body) == BIG
        assert hashlib.sha256(body).hexdigest() == digest
        code, err = proc.wait()
    finally:
        proc.close()
    assert code == 0, err
    assert "shutting down" in err and "Traceback" not in err
    # Closed cleanly: the WAL was checkpointed away and the file passes quick_check.
    wal = settings.db_path.with_name("catalog.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_sigint_with_idle_keepalive_connection_exits_promptly(tmp_path, seeded):
    settings, *_ = seeded
    proc = start(tmp_path, settings, server={"shutdown_timeout": 20.0})
    try:
        session = requests.Session()  # leaves an idle keep-alive connection open
        assert session.get(proc.url + "/healthz", timeout=5).status_code == 200
        started = time.monotonic()
        proc.terminate(signal.SIGINT)
        code, err = proc.wait(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        proc.close()
    assert code == 0, err
    assert elapsed < 5, f"an idle connection held shutdown for {elapsed:.1f} s"


def test_shutdown_timeout_bounds_a_stuck_client(tmp_path, seeded):
    settings, image_id, _, token = seeded
    proc = start(tmp_path, settings, server={"shutdown_timeout": 1.0})
    try:
        sock, _ = open_download(proc.port, image_id, token)  # and never read again
        started = time.monotonic()
        proc.terminate(signal.SIGTERM)
        code, err = proc.wait(timeout=20)
        elapsed = time.monotonic() - started
        sock.close()
    finally:
        proc.close()
    assert code == 0, err
    assert elapsed < 8, f"shutdown took {elapsed:.1f} s with shutdown_timeout = 1"
    assert "cut off" in err


def test_sigusr1_writes_every_threads_stack_and_the_service_goes_on(tmp_path, seeded):
    """The look inside a service that seems stuck: stacks in the log, nothing stopped."""
    settings, image_id, _, token = seeded
    proc = start(tmp_path, settings)
    try:
        proc.terminate(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while "run_until_stopped" not in proc.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = proc.log_text()
        assert proc.proc.poll() is None
        assert (
            requests.get(
                f"{proc.url}/files/{image_id}",
                timeout=5,
                headers={"Authorization": f"Bearer {token}"},
            ).status_code
            == 200
        )
        proc.terminate(signal.SIGTERM)
        code, _ = proc.wait(timeout=15)
    finally:
        proc.close()
    assert "Thread 0x" in log and "edgecatalog/server.py" in log and "run_until_stopped" in log
    assert code == 0
