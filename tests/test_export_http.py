"""An export over a real waitress server: the Content-Length before the first byte, a
download cut at random offsets and resumed with Range and If-Range giving the very bytes of a
whole one, a stale If-Range getting the whole new archive, a range past the end, a client
that goes away mid-stream leaving nothing behind, and a file changed mid-stream ending the
download short of its length with one log line. Each over waitress's own channel (the body
read through ``wsgi.file_wrapper``) and over the service's (images sent with ``sendfile``)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import socket
from pathlib import Path

import pytest
import requests
from conftest import LiveServer, seed_image
from export_helpers import open_zip, seed_catalog
from serve_process import free_port, wait_until

from edgecatalog import logsetup
from edgecatalog.models import Image
from edgecatalog.server import SendingChannel, build_server

pytestmark = pytest.mark.both_engines


@pytest.fixture(params=["read", "sendfile"])
def live_server(app, request):
    server = LiveServer(app)
    if request.param == "sendfile":  # as build_server makes the service's
        server.server.channel_class = SendingChannel
    yield server
    server.close()


def test_the_service_sends_with_sendfile(app, settings):
    server = build_server(app, settings.replace(server__host="127.0.0.1", server__port=free_port()))
    try:
        assert server.channel_class is SendingChannel
    finally:
        server.close()
        server.task_dispatcher.shutdown()  # its threads, which would outlive the test


def url(server, fmt="yolo", query=""):
    return f"{server.url}/data/exports/{fmt}{query}"


def test_resumed_downloads_are_the_same_bytes(settings, live_server, auth_headers):
    seed_catalog(settings)
    for seed in range(10, 16):  # larger images, so cuts fall in files, labels and the end
        seed_image(settings, filename=f"big{seed}.jpg", data=os.urandom(150_000), seed=seed)
    Image.update(split="train").where(Image.split == "none").execute()
    full = requests.get(url(live_server), headers=auth_headers(), timeout=30)
    assert full.status_code == 200 and full.headers["Accept-Ranges"] == "bytes"
    total, etag = int(full.headers["Content-Length"]), full.headers["ETag"]
    assert total == len(full.content)
    digest = hashlib.sha256(full.content).hexdigest()
    open_zip(full.content)
    rng = random.Random(15)
    cuts = sorted({1, total - 1, total - 22, *(rng.randrange(1, total) for _ in range(8))})
    for cut in cuts:
        head = _cut_download(url(live_server), auth_headers(), cut)
        rest = requests.get(
            url(live_server),
            headers={**auth_headers(), "Range": f"bytes={cut}-", "If-Range": etag},
            timeout=30,
        )
        assert rest.status_code == 206, cut
        assert rest.headers["Content-Range"] == f"bytes {cut}-{total - 1}/{total}"
        assert hashlib.sha256(head + rest.content).hexdigest() == digest, cut
    middle = requests.get(
        url(live_server), headers={**auth_headers(), "Range": "bytes=100-199"}, timeout=30
    )
    assert middle.status_code == 206 and middle.content == full.content[100:200]
    suffix = requests.get(
        url(live_server), headers={**auth_headers(), "Range": "bytes=-50"}, timeout=30
    )
    assert suffix.content == full.content[-50:]


def _cut_download(address: str, headers: dict[str, str], cut: int) -> bytes:
    """The first ``cut`` bytes of a download, then the connection dropped."""
    with requests.get(address, headers=headers, stream=True, timeout=30) as resp:
        got = b""
        for chunk in resp.iter_content(8192):
            got += chunk
            if len(got) >= cut:
                break
    return got[:cut]


def test_a_stale_if_range_gets_the_whole_new_archive(settings, live_server, auth_headers):
    ids = seed_catalog(settings)
    first = requests.get(url(live_server), headers=auth_headers(), timeout=30)
    Image.update(split="val").where(Image.id == ids["c"]).execute()
    resumed = requests.get(
        url(live_server),
        headers={**auth_headers(), "Range": "bytes=100-", "If-Range": first.headers["ETag"]},
        timeout=30,
    )
    assert resumed.status_code == 200 and resumed.headers["ETag"] != first.headers["ETag"]
    assert "images/val/Frame_3.JPG" in open_zip(resumed.content).namelist()


def test_a_range_past_the_end_is_416(settings, live_server, auth_headers):
    seed_catalog(settings)
    size = int(
        requests.get(url(live_server), headers=auth_headers(), timeout=30).headers["Content-Length"]
    )
    resp = requests.get(
        url(live_server), headers={**auth_headers(), "Range": f"bytes={size}-"}, timeout=30
    )
    assert resp.status_code == 416 and resp.headers["Content-Range"] == f"bytes */{size}"


def spool_handles(folder: Path) -> list[str]:
    """This process's open descriptors on files in ``folder`` (the live server runs here)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_a_client_gone_mid_stream_leaves_nothing(settings, live_server, auth_headers):
    for seed in range(12):  # ~36 MB: more than waitress buffers before the app thread waits
        seed_image(settings, filename=f"f{seed}.jpg", data=os.urandom(3_000_000), seed=seed)
    Image.update(split="train").execute()
    spool = settings.data_dir / "exports"
    request = (
        f"GET /data/exports/yolo HTTP/1.1\r\nHost: 127.0.0.1:{live_server.port}\r\n"
        f"Authorization: {auth_headers()['Authorization']}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        got = sock.recv(65536)
        assert got.startswith(b"HTTP/1.1 200")
        assert spool_handles(spool), "the spool is open while the archive streams"
        assert os.listdir(spool) == []  # and has no name, even now
    assert wait_until(lambda: not spool_handles(spool), timeout=10), spool_handles(spool)
    assert os.listdir(spool) == []


def test_a_file_changed_mid_stream_ends_the_download_short(settings, live_server, auth_headers):
    for seed in range(12):  # ~36 MB: more than the socket buffers hold before the last file
        seed_image(settings, filename=f"f{seed}.jpg", data=os.urandom(3_000_000), seed=seed)
    Image.update(split="train").execute()
    last = Image.select().order_by(Image.id.desc()).get()  # the archive's order is by id
    stream = io.StringIO()
    handler = logsetup.configure(settings, stream=stream)
    try:
        request = (
            f"GET /data/exports/yolo HTTP/1.1\r\nHost: 127.0.0.1:{live_server.port}\r\n"
            f"Authorization: {auth_headers()['Authorization']}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
            sock.sendall(request.encode())
            got = sock.recv(65536)
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(
                next(
                    h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            (settings.images_dir / last.storage_key).write_bytes(os.urandom(1000))
            received = len(body)
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        assert received < length  # closed short: the client knows the download failed
        assert wait_until(lambda: "stopped short" in stream.getvalue(), timeout=5)
    finally:
        logging.getLogger().removeHandler(handler)
    log = stream.getvalue()
    assert f"{last.filename}: 1000 bytes, 3000000 planned" in log
    assert "Traceback" not in log and "Socket error" not in log, log


def test_the_service_keeps_its_mmap_threshold():
    """Where glibc is, the service fixes its mmap threshold (``server.fix_mmap_threshold``:
    an export's large blocks go back to the system when freed, not to the heap)."""
    if not os.path.exists("/lib/x86_64-linux-gnu/libc.so.6") and not os.path.exists(
        "/lib/aarch64-linux-gnu/libc.so.6"
    ):
        pytest.skip("not glibc")
    from edgecatalog.server import fix_mmap_threshold

    assert fix_mmap_threshold() is True
