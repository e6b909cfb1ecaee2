"""GET /files/<id>/thumbnail: sizes, orientation, auth and signatures, the on-disk cache,
decompression bombs, evicted and unreadable files, bad sizes, one decode for every size, and
the bound on requests waiting for a decode (503 THUMBNAILS_BUSY). Memory and latency under
load, in a real ``serve`` process: test_thumbnail_load.py."""

from __future__ import annotations

import functools
import io
import os
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import make_settings, seed_image
from PIL import Image as PILImage
from PIL import ImageDraw
from serve_process import ThreadedServer

from edgecatalog import create_app, thumbnails
from edgecatalog.models import Image, database
from edgecatalog.thumbnails import SIZES, cache_path, remove_cached


def solid_jpeg(width: int, height: int, colour: tuple[int, int, int], exif=None) -> bytes:
    buf = io.BytesIO()
    img = PILImage.new("RGB", (width, height), colour)
    if exif is not None:
        img.save(buf, format="JPEG", quality=92, exif=exif)
    else:
        img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def decode(body: bytes) -> PILImage.Image:
    img = PILImage.open(io.BytesIO(body))
    assert img.format == "JPEG"
    img.load()
    return img


def mean_colour(img: PILImage.Image) -> tuple[float, float, float]:
    small = img.convert("RGB").resize((1, 1), PILImage.Resampling.BOX)
    return small.getpixel((0, 0))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but carries almost no data: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@functools.lru_cache(maxsize=8)
def big_png(width: int, height: int, seed: int = 0) -> bytes:
    """A compressible (small file, full-size decode) RGB PNG, unique to ``seed``."""
    img = PILImage.linear_gradient("L").resize((width, height)).convert("RGB")
    ImageDraw.Draw(img).line(
        [(0, seed), (width, height - seed)], fill=(seed % 256, 40, 200), width=5
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def thumb_url(client, image_id, auth_headers, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.get(f"/files/{image_id}/thumbnail?{query}", headers=auth_headers())


@pytest.mark.parametrize("size", [128, 256, 512])
def test_sizes_keep_aspect_and_never_enlarge(settings, client, auth_headers, size):
    big = seed_image(
        settings,
        filename="big.jpg",
        data=solid_jpeg(1000, 600, (200, 30, 30)),
        width=1000,
        height=600,
    )
    small = seed_image(
        settings,
        filename="small.jpg",
        data=solid_jpeg(100, 80, (10, 200, 10)),
        width=100,
        height=80,
    )
    resp = thumb_url(client, big.id, auth_headers, size=size)
    assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
    img = decode(resp.data)
    assert img.width == size
    assert abs(img.height - 600 * size / 1000) <= 1
    r, g, b = mean_colour(img)
    assert r > 150 and g < 80 and b < 80  # the same picture, not some placeholder
    img = decode(thumb_url(client, small.id, auth_headers, size=size).data)
    assert img.size == (100, 80)


def test_exif_orientation_is_applied(settings, client, auth_headers):
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    data = solid_jpeg(400, 200, (90, 90, 200), exif=exif.tobytes())
    image = seed_image(settings, data=data, width=400, height=200)
    img = decode(thumb_url(client, image.id, auth_headers, size=128).data)
    assert img.size == (64, 128)


def test_png_with_alpha_becomes_jpeg_on_white(settings, client, auth_headers):
    buf = io.BytesIO()
    PILImage.new("RGBA", (300, 300), (0, 0, 0, 0)).save(buf, format="PNG")
    image = seed_image(settings, filename="clear.png", data=buf.getvalue(), width=300, height=300)
    img = decode(thumb_url(client, image.id, auth_headers, size=128).data)
    assert img.size == (128, 128) and min(mean_colour(img)) > 240


@pytest.mark.parametrize(
    "query", ["size=100", "size=abc", "", "size=256&size=512", "size=-128", "size=1024"]
)
def test_bad_size_is_400_naming_size(settings, client, auth_headers, query):
    image = seed_image(settings)
    resp = client.get(f"/files/{image.id}/thumbnail?{query}", headers=auth_headers())
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR" and body["error"]["details"] == "size"


def test_needs_auth_and_accepts_the_image_urls_signature(settings, live_server, auth_headers):
    one = seed_image(settings, filename="one.jpg", seed=1)
    two = seed_image(settings, filename="two.jpg", seed=2)
    assert live_server.get(f"/files/{one.id}/thumbnail?size=128").status_code == 401
    listed = live_server.get("/data/images?include_image_url=true", headers=auth_headers()).json()
    urls = {row["id"]: row["image_url"] for row in listed["data"]}
    path, query = urls[one.id][len(live_server.url) :].split("?")
    assert path == f"/files/{one.id}"
    signed = live_server.get(f"{path}/thumbnail?{query}&size=128")
    assert signed.status_code == 200 and signed.content[:3] == b"\xff\xd8\xff"
    # The signature of one image does not open another's thumbnail.
    other = live_server.get(f"/files/{two.id}/thumbnail?{query}&size=128")
    assert other.status_code == 403 and other.json()["error"]["code"] == "FORBIDDEN"
    tampered = query.replace("signature=", "signature=0")
    assert live_server.get(f"{path}/thumbnail?{tampered}&size=128").status_code == 403
    expired = f"expires={int(time.time()) - 10}&signature={query.split('signature=')[1]}"
    assert live_server.get(f"{path}/thumbnail?{expired}&size=128").status_code == 403
    bad_token = {"Authorization": "Bearer not-a-token"}
    assert live_server.get(f"{path}/thumbnail?size=128", headers=bad_token).status_code == 401


def test_cached_on_disk_and_served_from_the_cache(settings, client, auth_headers):
    image = seed_image(settings, data=solid_jpeg(640, 480, (250, 250, 0)), width=640, height=480)
    target = cache_path(settings.data_dir / "thumbnails", image.sha256, 256)
    assert not target.exists()
    first = thumb_url(client, image.id, auth_headers, size=256)
    assert first.status_code == 200 and target.read_bytes() == first.data
    assert not list(target.parent.glob(".*.tmp"))  # the atomic write left no temp file
    # Put a different, valid JPEG in the cache: a second request must serve exactly it.
    marker = solid_jpeg(10, 10, (0, 0, 255))
    target.write_bytes(marker)
    second = thumb_url(client, image.id, auth_headers, size=256)
    assert second.data == marker
    again = client.get(
        f"/files/{image.id}/thumbnail?size=256",
        headers={**auth_headers(), "If-None-Match": second.headers["ETag"]},
    )
    assert again.status_code == 304


def test_torn_cache_file_is_regenerated(settings, client, auth_headers):
    image = seed_image(settings, data=solid_jpeg(300, 200, (0, 250, 0)), width=300, height=200)
    target = cache_path(settings.data_dir / "thumbnails", image.sha256, 128)
    good = thumb_url(client, image.id, auth_headers, size=128).data
    target.write_bytes(good[: len(good) // 2])  # as after a power cut mid-write
    assert thumb_url(client, image.id, auth_headers, size=128).data == good


def test_file_replaced_in_place_never_serves_a_stale_thumbnail(settings, client, auth_headers):
    image = seed_image(settings, data=solid_jpeg(300, 200, (250, 0, 0)), width=300, height=200)
    red = decode(thumb_url(client, image.id, auth_headers, size=128).data)
    assert mean_colour(red)[0] > 200
    source = settings.images_dir / image.storage_key
    replacement = solid_jpeg(300, 200, (0, 0, 250))
    source.write_bytes(replacement)
    later = time.time() + 5
    os.utime(source, (later, later))
    resp = thumb_url(client, image.id, auth_headers, size=128)
    assert resp.status_code == 200 and mean_colour(decode(resp.data))[2] > 200
    # The row still names the old bytes: the new thumbnail is not cached under its hash.
    assert "no-store" in resp.headers["Cache-Control"]
    cached = cache_path(settings.data_dir / "thumbnails", image.sha256, 128).read_bytes()
    assert mean_colour(decode(cached))[0] > 200


def test_decompression_bomb_is_refused_without_decoding(settings, client, auth_headers):
    data = png_header_only(60_000, 60_000)  # 3.6 gigapixels claimed, ~1 KB on disk
    image = seed_image(settings, filename="bomb.png", data=data, width=60_000, height=60_000)
    started = time.monotonic()
    resp = thumb_url(client, image.id, auth_headers, size=128)
    assert time.monotonic() - started < 2  # refused from the header, nothing decoded
    assert resp.status_code == 422
    assert resp.get_json()["error"]["code"] == "IMAGE_TOO_LARGE"
    assert resp.get_json()["error"]["details"] == "id"
    assert not (settings.data_dir / "thumbnails").exists() or not list(
        (settings.data_dir / "thumbnails").rglob("*.jpg")
    )


def test_pixel_limit_comes_from_the_settings(tmp_path, auth_headers):
    settings = make_settings(tmp_path, ui__thumbnail_max_pixels=10_000)
    app = create_app(settings)
    try:
        client = app.test_client()
        ok = seed_image(
            settings, filename="ok.jpg", width=100, height=100, data=solid_jpeg(100, 100, (1, 2, 3))
        )
        big = seed_image(
            settings,
            filename="big.jpg",
            width=101,
            height=100,
            data=solid_jpeg(101, 100, (1, 2, 3)),
        )
        assert thumb_url(client, ok.id, auth_headers, size=128).status_code == 200
        resp = thumb_url(client, big.id, auth_headers, size=128)
        assert resp.status_code == 422 and "101 x 100" in resp.get_json()["error"]["message"]
    finally:
        database.close()


def test_evicted_is_410_and_unknown_is_404(settings, client, auth_headers):
    image = seed_image(settings)
    assert thumb_url(client, image.id, auth_headers, size=128).status_code == 200
    Image.update(evicted_at=int(time.time() * 1e6)).where(Image.id == image.id).execute()
    resp = thumb_url(client, image.id, auth_headers, size=128)
    assert resp.status_code == 410 and resp.get_json()["error"]["code"] == "GONE"
    resp = thumb_url(client, image.id + 1000, auth_headers, size=128)
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "NOT_FOUND"


def test_unreadable_file_is_422_not_500(settings, client, auth_headers):
    image = seed_image(settings, filename="junk.jpg", data=b"\xff\xd8\xff" + os.urandom(2000))
    resp = thumb_url(client, image.id, auth_headers, size=128)
    assert resp.status_code == 422
    assert resp.get_json()["error"]["code"] == "IMAGE_UNREADABLE"
    assert "Traceback" not in resp.get_data(as_text=True)


def test_undecodable_large_image_is_422_each_time_from_the_pool(settings, client, auth_headers):
    # A header of 1200 x 1200 pixels (large: the pool decodes it) over data that is no image.
    image = seed_image(
        settings, filename="cut.png", data=png_header_only(1200, 1200), width=1200, height=1200
    )
    for _ in range(2):  # a failed decode is not remembered as the answer for later requests
        resp = thumb_url(client, image.id, auth_headers, size=256)
        assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "IMAGE_UNREADABLE"
    assert thumbnails.stats()["in_flight"] == 0


def test_missing_file_is_404(settings, client, auth_headers):
    image = seed_image(settings)
    (settings.images_dir / image.storage_key).unlink()
    assert thumb_url(client, image.id, auth_headers, size=128).status_code == 404


def test_remove_cached_deletes_every_size_of_one_image(settings, client, auth_headers):
    keep, drop = seed_image(settings, seed=1), seed_image(settings, seed=2)
    cache = settings.data_dir / "thumbnails"
    for image in (keep, drop):
        for size in (128, 512):
            assert thumb_url(client, image.id, auth_headers, size=size).status_code == 200
    assert remove_cached(cache, drop.sha256) == 3  # every size was made from one decode
    assert not any(cache_path(cache, drop.sha256, n).exists() for n in (128, 256, 512))
    assert all(cache_path(cache, keep.sha256, n).exists() for n in (128, 256, 512))


def test_one_request_makes_and_caches_every_size_from_one_decode(settings, client, auth_headers):
    image = seed_image(
        settings,
        filename="wide.jpg",
        data=solid_jpeg(1000, 600, (200, 30, 30)),
        width=1000,
        height=600,
    )
    cache = settings.data_dir / "thumbnails"
    before = thumbnails.stats()["decodes"]
    assert thumb_url(client, image.id, auth_headers, size=128).status_code == 200
    # Asked for the smallest; every size is on disk, each the right size and the same picture.
    for size in SIZES:
        img = decode(cache_path(cache, image.sha256, size).read_bytes())
        assert img.width == size and abs(img.height - 600 * size / 1000) <= 1
        r, g, b = mean_colour(img)
        assert r > 150 and g < 80 and b < 80
    for size in (256, 512):
        resp = thumb_url(client, image.id, auth_headers, size=size)
        assert resp.data == cache_path(cache, image.sha256, size).read_bytes()
    assert thumbnails.stats()["decodes"] - before == 1


def test_sizes_asked_at_once_wait_for_the_one_decode(settings, live_server, auth_headers):
    image = seed_image(
        settings, filename="big.png", data=big_png(3000, 3000, 1), width=3000, height=3000
    )
    cache = settings.data_dir / "thumbnails"
    before = thumbnails.stats()["decodes"]
    start = threading.Barrier(2)

    def ask(size: int) -> requests.Response:
        start.wait(timeout=5)
        return live_server.get(f"/files/{image.id}/thumbnail?size={size}", headers=auth_headers())

    # Two waiters fit the bound of a 4-thread server: both wait, neither decodes on its own.
    with ThreadPoolExecutor(2) as pool:
        answers = dict(zip((128, 512), pool.map(ask, (128, 512))))
    assert thumbnails.stats()["decodes"] - before == 1
    for size, resp in answers.items():
        assert resp.status_code == 200
        assert resp.content == cache_path(cache, image.sha256, size).read_bytes()
        assert decode(resp.content).size == (size, size)
    # The third size was made by that same decode.
    assert cache_path(cache, image.sha256, 256).exists()
    assert (
        live_server.get(f"/files/{image.id}/thumbnail?size=256", headers=auth_headers()).status_code
        == 200
    )
    assert thumbnails.stats()["decodes"] - before == 1


@pytest.mark.parametrize("threads", [2, 4])
def test_beyond_the_waiting_bound_is_503_and_other_requests_never_wait(
    tmp_path, auth_headers, threads
):
    settings = make_settings(tmp_path, server__threads=threads)
    app = create_app(settings)
    bound = threads // 2  # at least half the server's threads stay free
    slow = [
        seed_image(
            settings,
            filename=f"slow{i}.png",
            data=big_png(4800, 4800, 10 + i),
            width=4800,
            height=4800,
        )
        for i in range(bound)
    ]
    # Large enough (1.44 MP) to go through the pool.
    fresh = seed_image(
        settings, filename="fresh.png", data=big_png(1200, 1200, 20), width=1200, height=1200
    )
    # A camera frame: decoded in the request's own thread in milliseconds, never refused.
    frame = seed_image(
        settings,
        filename="frame.jpg",
        data=solid_jpeg(1280, 960, (200, 0, 0)),
        width=1280,
        height=960,
    )
    ready = seed_image(
        settings,
        filename="ready.jpg",
        data=solid_jpeg(640, 480, (0, 200, 0)),
        width=640,
        height=480,
    )
    bomb = seed_image(
        settings, filename="bomb.png", data=png_header_only(7070, 7070), width=7070, height=7070
    )
    server = ThreadedServer(app, threads=threads)
    try:

        def get(image_id: int, size: int = 256) -> requests.Response:
            return server.get(f"/files/{image_id}/thumbnail?size={size}", headers=auth_headers())

        assert get(ready.id).status_code == 200  # cached from now on
        assert thumbnails.stats()["waiting"] == 0
        with ThreadPoolExecutor(bound) as pool:
            pending = []
            for n, image in enumerate(slow, start=1):
                pending.append(pool.submit(get, image.id))
                wait_for(lambda n=n: thumbnails.stats()["waiting"] == n)
            busy = get(fresh.id)
            small = get(frame.id)
            cached = get(ready.id)
            listed = server.get("/data/images", headers=auth_headers())
            too_large = get(bomb.id)
            # Every answer above came while the slow decodes still held their waiters.
            assert thumbnails.stats()["waiting"] == bound
            answers = [f.result(timeout=60) for f in pending]
        assert busy.status_code == 503
        body = busy.json()
        assert body["success"] is False and body["error"]["code"] == "THUMBNAILS_BUSY"
        assert int(busy.headers["Retry-After"]) >= 1
        assert "no-store" in busy.headers["Cache-Control"]
        assert small.status_code == 200 and decode(small.content).size == (256, 192)
        assert cached.status_code == 200 and cached.content[:3] == b"\xff\xd8\xff"
        assert listed.status_code == 200 and len(listed.json()["data"]) == bound + 4
        assert too_large.status_code == 422
        assert too_large.json()["error"]["code"] == "IMAGE_TOO_LARGE"
        assert [a.status_code for a in answers] == [200] * bound
        # The refused request left its image queued: made without anyone waiting for it, so
        # the retry is answered from the cache.
        cache = settings.data_dir / "thumbnails"
        wait_for(lambda: all(cache_path(cache, fresh.sha256, n).exists() for n in SIZES))
        retried = get(fresh.id)
        assert retried.status_code == 200
        assert retried.content == cache_path(cache, fresh.sha256, 256).read_bytes()
    finally:
        server.close()
        database.close()
