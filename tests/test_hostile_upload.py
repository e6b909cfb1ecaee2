"""Hostile upload bodies against the real service (``edgecatalog serve`` as a subprocess, so its
memory can be read from /proc): truncated multipart, wrong boundaries, a PNG signature followed
by garbage, decompression bombs (upload and thumbnail), a 60 MiB streamed body, thousands of
annotations, deeply nested and huge metadata. Each gets a 4xx with a clear message, the
server's RSS stays bounded, and nothing partial is stored: the rows are counted straight from
the SQLite file (stdlib sqlite3, not our models) and the files from the disk.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests
from conftest import jpeg_bytes, make_settings, seed_image
from reliability import record, rss_kib
from serve_process import ServeProcess, free_port, write_config
from upload_helpers import BOUNDARY, CONTENT_TYPE, body, part, upload_body

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.models import database

MiB = 1024 * 1024
GOOD = jpeg_bytes(64, 48, seed=3)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header that claims ``width x height`` pixels: decoding it would
    need width*height*3 bytes; the compressed rows of zeros cost almost nothing."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * min(width, 4096)) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def nested(depth: int) -> str:
    return '{"annotations": ' + "[" * depth + "]" * depth + "}"


def db_counts(data_dir: Path) -> tuple[int, int]:
    with sqlite3.connect(data_dir / "catalog.db", timeout=10) as conn:
        return (
            conn.execute("SELECT COUNT(*) FROM image").fetchone()[0],
            conn.execute("SELECT COUNT(*) FROM annotation").fetchone()[0],
        )


def image_files(data_dir: Path) -> list[Path]:
    images = data_dir / "images"
    return sorted(
        p
        for p in images.rglob("*")
        if p.is_file() and ".thumbnails" not in p.parts and not p.name.startswith(".ingest")
    )


class Peak:
    """Samples a process's RSS every 20 ms on a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_kib(pid), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self.thread.join(timeout=5)
        return self.peak


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-upload")
    port = free_port()
    config = write_config(
        tmp / "serve.toml",
        tmp / "data",
        port,
        logging={"level": "WARNING"},
        retention={"min_free_bytes": 0, "max_disk_percent": 100.0},
    )
    proc = ServeProcess(config, port)
    try:
        proc.wait_ready()
        token = Authenticator(make_settings(tmp)).issue_token("w", "write")
        yield proc, {"Authorization": f"Bearer {token}"}, tmp / "data"
    finally:
        proc.close()


def post(server, data: bytes, content_type: str = CONTENT_TYPE) -> requests.Response:
    proc, headers, _ = server
    return requests.post(
        f"{proc.url}/device/images/upload",
        data=data,
        timeout=30,
        headers={**headers, "Content-Type": content_type},
    )


def test_malformed_bodies_are_4xx_and_leave_nothing(server):
    proc, _headers, data_dir = server
    full = upload_body(GOOD, {"source": "x"})
    annotation = {"class_value": "c", "type": "bbox", "geometry": [0.5, 0.5, 0.1, 0.1]}
    cases = {
        "truncated in the image part": (full[: len(full) // 2], CONTENT_TYPE),
        "truncated before the first part": (full[:10], CONTENT_TYPE),
        "no final boundary": (body(part("image", GOOD, "a.jpg"), close=False), CONTENT_TYPE),
        "wrong boundary": (full, "multipart/form-data; boundary=notthisone"),
        "boundary in header only": (GOOD, CONTENT_TYPE),
        "empty boundary": (full, "multipart/form-data; boundary="),
        "overlong boundary": (full, "multipart/form-data; boundary=" + "b" * 5000),
        "PNG signature then garbage": (
            upload_body(b"\x89PNG\r\n\x1a\n" + b"\xde\xad" * 500),
            CONTENT_TYPE,
        ),
        "thousands of annotations": (
            upload_body(GOOD, {"annotations": [annotation] * 5000}),
            CONTENT_TYPE,
        ),
        "deeply nested metadata": (upload_body(GOOD, nested(100_000)), CONTENT_TYPE),
        "nested just past the cap": (upload_body(GOOD, nested(50)), CONTENT_TYPE),
        "huge metadata": (upload_body(GOOD, json.dumps({"source": "s" * (5 * MiB)})), CONTENT_TYPE),
        "huge metadata of many keys": (
            upload_body(GOOD, json.dumps({f"k{i}": i for i in range(400_000)})),
            CONTENT_TYPE,
        ),
        "many parts": (
            body(*[part(f"f{i}", b"x") for i in range(5000)], part("image", GOOD, "a.jpg")),
            CONTENT_TYPE,
        ),
        "bad utf-8 metadata": (upload_body(GOOD, b"\xff\xfe{}"), CONTENT_TYPE),
    }
    before = db_counts(data_dir), image_files(data_dir)
    peak = Peak(proc.proc.pid)
    base = peak.peak
    outcomes, bad = {}, []
    for name, (payload, ctype) in cases.items():
        resp = post(server, payload, ctype)
        outcomes[name] = resp.status_code
        try:
            err = resp.json()["error"]
            clear = bool(err["message"]) and bool(err["details"])
        except (ValueError, KeyError, TypeError):
            clear = False
        if not (400 <= resp.status_code < 500 and clear):
            bad.append((name, resp.status_code, resp.text[:200]))
    grown = (peak.stop() - base) / 1024
    assert not bad, bad
    assert (db_counts(data_dir), image_files(data_dir)) == before  # nothing partial stored
    assert grown < 48, f"server RSS grew {grown:.1f} MiB on malformed bodies"
    record(
        "hostile_upload_bodies",
        runs=1,
        faults=len(cases),
        requests=len(cases),
        errors=len(bad),
        lost=0,
        rss_growth_mib=round(grown, 1),
        statuses=outcomes,
    )


def test_png_header_chunk_then_garbage_is_refused(server):
    """A valid IHDR (so the dimensions read fine) followed by garbage: the damaged chunks are
    found at upload, not later by whoever decodes the file."""
    _proc, _headers, data_dir = server
    before = db_counts(data_dir), image_files(data_dir)
    resp = post(server, upload_body(bomb_png(64, 64)[:33] + b"\x00" * 100, None, "g.png"))
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.json()["error"]["details"] == "image"
    assert (db_counts(data_dir), image_files(data_dir)) == before


def stream_chunked(port: int, headers: dict[str, str], total: int) -> tuple[int, int]:
    """Send ``total`` bytes as a chunked multipart upload; (status, bytes the server took
    before answering). Stops sending as soon as the server answers or closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = [
        "POST /device/images/upload HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: {CONTENT_TYPE}",
        "Transfer-Encoding: chunked",
        "Connection: close",
    ]
    head += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    first = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n'
    ).encode() + GOOD[:-2]
    sent = 0
    chunk = b"\x00" * (256 * 1024)
    try:
        sock.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        sock.setblocking(True)
        while sent < total:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading: fine, as long as it answered 413 first
    try:
        sock.settimeout(30)
        reply = sock.recv(4096)
    except (TimeoutError, ConnectionResetError):
        reply = b""
    finally:
        sock.close()
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
    return status, sent


def test_sixty_mib_stream_is_413_without_holding_it(server):
    proc, headers, data_dir = server
    before = db_counts(data_dir), image_files(data_dir)
    peak = Peak(proc.proc.pid)
    base = peak.peak
    status, sent = stream_chunked(proc.port, headers, 60 * MiB)
    grown = (peak.stop() - base) / 1024
    assert status == 413, (status, sent)
    assert grown < 30, f"server RSS grew {grown:.1f} MiB for a 60 MiB body"
    assert (db_counts(data_dir), image_files(data_dir)) == before
    assert (
        not list((data_dir / "images" / ".incoming").glob("*"))
        if (data_dir / "images" / ".incoming").exists()
        else True
    )
    # The server is still fine afterwards.
    assert post(server, upload_body(jpeg_bytes(30, 30, seed=77))).status_code == 201
    record(
        "hostile_upload_60mib",
        runs=1,
        faults=1,
        requests=2,
        errors=0,
        lost=0,
        rss_growth_mib=round(grown, 1),
        bytes_sent_before_answer=sent,
    )


def test_decompression_bomb_upload_and_thumbnail(server):
    """A 100k x 100k PNG of a few KiB: refused at upload, or stored (its header is valid) and
    refused by the thumbnailer (422) without decoding; memory stays flat either way."""
    proc, headers, data_dir = server
    peak = Peak(proc.proc.pid)
    base = peak.peak
    bomb = bomb_png(100_000, 100_000)
    assert len(bomb) < 64 * 1024
    resp = post(server, upload_body(bomb, None, "bomb.png"))
    statuses = [resp.status_code]
    assert resp.status_code in (201, 400, 413, 415, 422), resp.text
    if resp.status_code != 201:
        # Refused at the door; plant it as if it had come in another way (the tests' own
        # write path into the same catalog file), so the thumbnailer meets it too.
        create_app(make_settings(data_dir.parent))
        try:
            image_id = seed_image(
                make_settings(data_dir.parent),
                filename="bomb.png",
                data=bomb,
                width=100_000,
                height=100_000,
            ).id
        finally:
            database.close()
    else:
        image_id = resp.json()["data"]["image_id"]
    thumb = requests.get(
        f"{proc.url}/files/{image_id}/thumbnail?size=256", headers=headers, timeout=30
    )
    statuses.append(thumb.status_code)
    assert thumb.status_code == 422, thumb.text
    assert thumb.json()["error"]["details"]
    grown = (peak.stop() - base) / 1024
    assert grown < 48, f"server RSS grew {grown:.1f} MiB on a decompression bomb"
    record(
        "hostile_decompression_bomb",
        runs=1,
        faults=2,
        requests=len(statuses),
        errors=0,
        lost=0,
        rss_growth_mib=round(grown, 1),
        statuses=statuses,
    )
