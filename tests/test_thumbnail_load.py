"""Thumbnails under load, against a real ``edgecatalog serve`` process (default settings: 4
server threads, a 24 MP pixel cap): the peak memory of an attack on one large PNG, the
latency of an unrelated list request meanwhile, one decode per image whatever the number of
requests, a too-large PNG refused from its header at once; and, in a real browser, a grid of
fresh images that fills in although the server answers some thumbnails "busy" (503), with a
"too large to preview" tile, not a broken image, for the one over the cap.

The attack is the one from the finding: thumbnails at 128, 256 and 512 asked at once, six
times in parallel. Clients honour 503 + Retry-After as the page does, with bounded retries.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from browser_support import requires_browser, shot, sign_in, wait_for_tiles
from conftest import make_settings, seed_image
from PIL import Image as PILImage
from serve_process import ServeProcess, ThreadedServer, free_port, write_config
from test_thumbnails import big_png

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.models import database
from edgecatalog.thumbnails import SIZES, cache_path

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser test is skipped then
    expect = None

# Just under the default cap of 24,000,000 pixels.
SIDE = 4800
# Pillow keeps an RGB bitmap at 4 bytes a pixel (RGBX); measured on its own: 4.05-4.09 bytes a
# pixel of VmHWM for this PNG. One decode at a time: the full-size bitmap (92.2 MB), its 1/16
# box-reduced copy (5.8 MB), and room for the allocator, zlib, buffers and Python (about 28 MB).
# Two decodes at once would need at least 184 MB, so the bound tells one from two.
ONE_DECODE = SIDE * SIDE * 4
PEAK_GROWTH_BOUND = ONE_DECODE + ONE_DECODE // 16 + 28 * 1024 * 1024
LIST_LATENCY_BOUND = 0.25
RETRIES = 20


def vm_hwm(pid: int) -> int:
    """The process's peak resident set size so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@dataclass
class Asked:
    size: int
    statuses: list[int]
    body: bytes
    done_at: float


def ask_until_made(url: str, size: int, headers: dict[str, str]) -> Asked:
    """GET a thumbnail; on 503 THUMBNAILS_BUSY wait Retry-After and ask again (bounded), as
    the page does."""
    statuses: list[int] = []
    for _ in range(RETRIES):
        resp = requests.get(f"{url}?size={size}", headers=headers, timeout=30)
        statuses.append(resp.status_code)
        if resp.status_code != 503:
            return Asked(size, statuses, resp.content, time.monotonic())
        assert resp.json()["error"]["code"] == "THUMBNAILS_BUSY"
        # Up to half again at random, as the page does, so refused clients spread out.
        time.sleep(int(resp.headers["Retry-After"]) * (1 + random.random() / 2))
    raise AssertionError(f"size {size} still busy after {RETRIES} tries: {statuses}")


@contextlib.contextmanager
def list_probe(url: str, headers: dict[str, str]) -> Iterator[list[tuple[float, float, int]]]:
    """GET /data/images over and over in a thread while the block runs; yields the samples
    (started, seconds, status)."""
    samples: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def run() -> None:
        for _ in range(3000):  # bounded: stopped long before
            if stop.is_set():
                return
            started = time.monotonic()
            resp = requests.get(f"{url}/data/images?limit=20", headers=headers, timeout=30)
            samples.append((started, time.monotonic() - started, resp.status_code))
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=30)


@dataclass
class Served:
    proc: ServeProcess
    headers: dict[str, str]
    cache: Path
    images: dict[str, tuple[int, str]]  # name -> (id, sha256)

    def thumb(self, name: str) -> str:
        return f"{self.proc.url}/files/{self.images[name][0]}/thumbnail"

    def decodes(self, name: str) -> int:
        """How many times the server decoded this image, from its own debug log."""
        sha = self.images[name][1]
        return len(
            re.findall(
                rf"thumbnails of image {sha[:12]}… made from one decode", self.proc.log_text()
            )
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = make_settings(tmp_path)
    create_app(settings)  # creates the catalog the serve process then opens
    seeds = {
        "warm": (big_png(640, 480, 1), 640, 480),
        "big": (big_png(SIDE, SIDE, 2), SIDE, SIDE),
        "huge": (big_png(7070, 7070, 3), 7070, 7070),  # 50 MP: over the cap
        **{f"other{i}": (big_png(3000, 3000, 10 + i), 3000, 3000) for i in range(4)},
    }
    images = {}
    for name, (data, width, height) in seeds.items():
        row = seed_image(settings, filename=f"{name}.png", data=data, width=width, height=height)
        images[name] = (row.id, row.sha256)
    database.close()
    port = free_port()
    # DEBUG: the one line per decode is how these tests count decodes, as an operator would.
    config = write_config(
        tmp_path / "serve.toml", settings.data_dir, port, logging={"level": "DEBUG"}
    )
    proc = ServeProcess(config, port)
    try:
        proc.wait_ready()
        token = Authenticator(settings).issue_token("reader", "read")
        yield Served(
            proc, {"Authorization": f"Bearer {token}"}, settings.data_dir / "thumbnails", images
        )
    finally:
        proc.close()


def attack(served: Served, names: list[str], rounds: int = 6) -> tuple[float, list[Asked]]:
    """Every size of every named image asked at once, ``rounds`` times in parallel."""
    jobs = [(name, size) for _ in range(rounds) for name in names for size in SIZES]
    start = threading.Barrier(len(jobs) + 1)

    def one(job: tuple[str, int]) -> Asked:
        start.wait(timeout=10)
        return ask_until_made(served.thumb(job[0]), job[1], served.headers)

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(one, job) for job in jobs]
        start.wait(timeout=10)
        started = time.monotonic()
        return started, [f.result(timeout=120) for f in futures]


def test_attack_on_one_large_png_decodes_it_once_in_bounded_memory(served):
    pid = served.proc.proc.pid
    # Warm up: the code paths, the decoding thread and the list query, so the high-water mark
    # taken next is the service's own and the growth after it is the attack's.
    for size in SIZES:
        assert ask_until_made(served.thumb("warm"), size, served.headers).statuses[-1] == 200
    assert (
        requests.get(
            f"{served.proc.url}/data/images", headers=served.headers, timeout=10
        ).status_code
        == 200
    )
    before = vm_hwm(pid)
    refused: list[tuple[float, requests.Response]] = []

    def ask_huge() -> None:
        time.sleep(0.05)  # while the attack's decode runs
        started = time.monotonic()
        resp = requests.get(f"{served.thumb('huge')}?size=256", headers=served.headers, timeout=30)
        refused.append((time.monotonic() - started, resp))

    with list_probe(served.proc.url, served.headers) as probe:
        huge = threading.Thread(target=ask_huge)
        huge.start()
        started, answers = attack(served, ["big"])
        huge.join(timeout=30)
        time.sleep(0.1)
    growth = vm_hwm(pid) - before
    first_made = min(a.done_at for a in answers)
    during = [s for s in probe if started <= s[0] < first_made]
    attacked = [s for s in probe if s[0] >= started]
    worst = max(s[1] for s in attacked)
    ((took, resp),) = refused
    print(
        f"\npeak RSS growth {growth / 2**20:.1f} MiB (bound {PEAK_GROWTH_BOUND / 2**20:.1f}; "
        f"one decode {ONE_DECODE / 2**20:.1f}); list latency worst {worst * 1000:.0f} ms over "
        f"{len(attacked)} requests, {len(during)} during the first "
        f"{first_made - started:.2f} s; 7070x7070 PNG answered {resp.status_code} in "
        f"{took * 1000:.0f} ms; {sum(len(a.statuses) - 1 for a in answers)} retries"
    )

    assert growth <= PEAK_GROWTH_BOUND
    # The list answered quickly all along, including while the decode ran (before the first
    # thumbnail came back).
    assert all(s[2] == 200 for s in probe)
    assert len(during) >= 2
    assert worst < LIST_LATENCY_BOUND
    # The 50 MP PNG: refused from its header, at once, even with the decoder busy.
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "IMAGE_TOO_LARGE"
    assert took < LIST_LATENCY_BOUND
    assert served.decodes("huge") == 0
    assert not any(cache_path(served.cache, served.images["huge"][1], n).exists() for n in SIZES)

    # Every request got its thumbnail (some after 503 + Retry-After), each the cached bytes,
    # and the image was decoded once for all 18.
    assert len(answers) == 18
    for asked in answers:
        assert asked.statuses[-1] == 200
        cached = cache_path(served.cache, served.images["big"][1], asked.size).read_bytes()
        assert asked.body == cached
        assert PILImage.open(io.BytesIO(asked.body)).size == (asked.size, asked.size)
    assert any(503 in a.statuses for a in answers)  # the waiting bound did engage
    assert served.decodes("big") == 1


def test_many_fresh_images_at_once_each_decoded_once_and_lists_stay_fast(served):
    names = [f"other{i}" for i in range(4)]
    with list_probe(served.proc.url, served.headers) as probe:
        started, answers = attack(served, names, rounds=2)
        time.sleep(0.1)
    samples = [s for s in probe if s[0] >= started]
    worst = max(s[1] for s in samples)
    median = sorted(s[1] for s in samples)[len(samples) // 2]
    print(
        f"\nlist latency with 4 fresh images x 3 sizes x 2: worst {worst * 1000:.0f} ms, "
        f"median {median * 1000:.0f} ms over {len(samples)} requests; "
        f"{sum(len(a.statuses) - 1 for a in answers)} retries"
    )
    assert all(s[2] == 200 for s in samples) and worst < LIST_LATENCY_BOUND
    assert len(answers) == 24 and all(a.statuses[-1] == 200 for a in answers)
    assert [served.decodes(name) for name in names] == [1, 1, 1, 1]
    for name in names:
        assert all(cache_path(served.cache, served.images[name][1], n).exists() for n in SIZES)


@requires_browser[0]
@requires_browser[1]
def test_a_grid_of_fresh_images_fills_in_through_busy_answers(tmp_path, tokens, page):
    # Two server threads: one request may wait for a decode, the rest are told "busy". A cap of
    # 2 MP, so one picture (1700 x 1200) is refused for good.
    settings = make_settings(tmp_path, server__threads=2, ui__thumbnail_max_pixels=2_000_000)
    app = create_app(settings)
    for i in range(12):
        seed_image(
            settings,
            filename=f"fresh{i:02d}.png",
            data=big_png(1600, 1200, i),
            width=1600,
            height=1200,
        )
    seed_image(settings, filename="wide.png", data=big_png(1700, 1200, 99), width=1700, height=1200)
    server = ThreadedServer(app, threads=2)
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/thumbnail?" in r.url else None)
    try:
        sign_in(page, server, tokens["read"])
        wait_for_tiles(page, 13)
        started = time.monotonic()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#grid li.tile')].every(li => {"
            " const i = li.querySelector('img.thumb');"
            " return li.querySelector('.thumb-missing') || (i && i.complete"
            " && i.naturalWidth > 0); })",
            timeout=30_000,
        )
        print(
            f"\n12 fresh tiles filled in {time.monotonic() - started:.1f} s; thumbnail "
            f"answers: {statuses.count(200)} x 200, {statuses.count(503)} x 503"
        )
        shot(page, "grid-busy-thumbnails.png")
        # Every picture came, the one over the cap says so instead of a broken image, and the
        # page met "busy" answers on the way and retried past them.
        loaded = page.locator("#grid li.tile img.thumb").evaluate_all(
            "els => els.filter(i => i.complete && i.naturalWidth > 0).length"
        )
        assert loaded == 12
        missing = page.locator("#grid li.tile .thumb-missing")
        expect(missing).to_have_count(1)
        expect(missing).to_have_text("too large to preview")
        assert 503 in statuses and 422 in statuses
    finally:
        server.close()
        database.close()
