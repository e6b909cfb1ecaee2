"""Thumbnail cost: time of cold (decoding) requests, of a cached one, and peak memory.

    .venv/bin/python benchmarks/thumbnails.py              # per-image cost and memory
    .venv/bin/python benchmarks/thumbnails.py --http 300   # a 300-image grid over HTTP
    .venv/bin/python benchmarks/thumbnails.py --http 48 --workers 2 --grid-case PNG:3000x3000

For each case (JPEG 1920x1080, 4000x3000, 8000x6000; PNG 4000x3000, 7000x7000 by default)
a noise image is written to a temporary folder, then a fresh Python process makes its
thumbnails through ``edgecatalog.thumbnails.get_thumbnail`` (the code behind
GET /files/<id>/thumbnail), ``--repeat`` times with an empty cache each time, and reports the
median time of the first request (``--size``), the median time of asking every size in turn
(what a grid at 1x and 2x, plus a detail view, costs), the mean of 200 cached calls, and its
peak RSS before and after the first round, so the figure is the thumbnails' own cost.
``--http`` serves N fresh images (1280x960 JPEGs, or ``--grid-case``) behind waitress (4
threads; ``--workers`` decoding threads, where the version has a pool) and fetches the grid's
thumbnails from 6 client threads as a browser does, retrying a 503 after its Retry-After,
while a seventh thread times GET /data/images.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("JPEG:1920x1080", "JPEG:4000x3000", "JPEG:8000x6000", "PNG:4000x3000", "PNG:7000x7000")
SIZES = (128, 256, 512)
MAX_PIXELS = 89_478_485  # the largest cap the settings allow: measure, do not refuse


def make(path: Path, fmt: str, width: int, height: int) -> None:
    from PIL import Image

    img = Image.effect_noise((width, height), 40).convert("RGB")
    img.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def thumbnail(path: Path, sha: str, n: int, size: int, cache: Path) -> bytes:
    """One request's work: the file opened and read through its handle, as the view does."""
    from edgecatalog.thumbnails import get_thumbnail

    with open(path, "rb") as fh:
        return get_thumbnail(fh, os.fstat(fh.fileno()), sha, n, size, cache, MAX_PIXELS).data


def measure(path: Path, size: int, repeat: int) -> str:
    digest, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            n += len(chunk)
    sha = digest.hexdigest()
    firsts, alls = [], []
    before = after = 0
    for i in range(repeat):
        cache = Path(tempfile.mkdtemp())
        if i == 0:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        thumbnail(path, sha, n, size, cache)
        firsts.append(time.perf_counter() - started)
        for other in SIZES:
            if other != size:
                thumbnail(path, sha, n, other, cache)
        alls.append(time.perf_counter() - started)
        if i == 0:
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for _ in range(200):
        thumbnail(path, sha, n, size, cache)
    cached = (time.perf_counter() - started) / 200
    return (
        f"{path.name:<20} {n / 1e6:6.1f} MB  cold {size}: {statistics.median(firsts) * 1000:6.0f}"
        f" ms  cold all sizes: {statistics.median(alls) * 1000:6.0f} ms  (median of {repeat})"
        f"  cached {cached * 1000:6.3f} ms  peak RSS {before / 1024:4.0f} -> "
        f"{after / 1024:4.0f} MB"
    )


def http_grid(n: int, size: int, workers: int | None, case: str) -> None:
    """N real noise images (``case``, 1280x960 JPEGs by default) in a fresh catalog behind
    waitress; fetch every thumbnail of the
    grid twice (cold: generated and cached; warm: from the cache) and every full image once,
    from 6 client threads as a browser would; time list requests meanwhile."""
    import heapq
    import io
    import random
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests
    import waitress.server
    from PIL import Image

    from edgecatalog import create_app, thumbnails
    from edgecatalog.auth import Authenticator
    from edgecatalog.catalog import NewImage
    from edgecatalog.config import load_settings
    from edgecatalog.ingest.bulk import add_image

    if workers is not None:
        if not hasattr(thumbnails, "DECODE_WORKERS"):
            raise SystemExit("--workers: this version has no decoding pool")
        thumbnails.DECODE_WORKERS = workers  # read when the pool is first made
    tmp = Path(tempfile.mkdtemp())
    settings = load_settings(
        environ={}, overrides={"storage.data_dir": str(tmp), "auth.jwt_secret": "b" * 40}
    )
    app = create_app(settings)
    fmt, dims = case.split(":")
    width, height = (int(v) for v in dims.split("x"))
    for i in range(n):
        buf = io.BytesIO()
        Image.effect_noise((width, height), 20 + i % 40).convert("RGB").save(
            buf, fmt, **({"quality": 88} if fmt == "JPEG" else {"compress_level": 1})
        )
        data, key = buf.getvalue(), f"raw-data/{i:05d}.{fmt.lower()}"
        (settings.images_dir / "raw-data").mkdir(parents=True, exist_ok=True)
        (settings.images_dir / key).write_bytes(data)
        add_image(
            NewImage(
                filename=key.split("/")[1],
                storage_key=key,
                sha256=hashlib.sha256(data).hexdigest(),
                byte_size=len(data),
                width=width,
                height=height,
                root=str(settings.images_dir),
                device_id="bench",
            )
        )
    server = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{server.effective_port}"
    auth = {"Authorization": f"Bearer {Authenticator(settings).issue_token('bench')}"}
    urls: list[str] = []
    for offset in range(0, n, 100):
        page = requests.get(
            f"{base}/data/images?include_image_url=true&limit=100&offset={offset}",
            headers=auth,
            timeout=30,
        ).json()
        urls += [row["image_url"] for row in page["data"]]
    thumbs = [u.replace("?", "/thumbnail?", 1) + f"&size={size}" for u in urls]
    retries = 0

    def fetch_all(batch: list[str]) -> int:
        """Six connections, as a browser has: a URL refused 503 goes back in line until its
        Retry-After has passed, and the connection takes the next one meanwhile."""
        nonlocal retries
        ready = list(batch)
        later: list[tuple[float, str]] = []  # (when, url), a heap
        lock = threading.Lock()
        total = 0

        def connection() -> None:
            nonlocal retries, total
            session = requests.Session()
            for _ in range(100 * len(batch)):  # bounded
                with lock:
                    if ready:
                        url, wait = ready.pop(0), 0.0
                    elif later:
                        when, url = heapq.heappop(later)
                        wait = when - time.monotonic()
                    else:
                        return
                if wait > 0:
                    time.sleep(wait)
                resp = session.get(url, timeout=60)
                if resp.status_code == 503:
                    delay = int(resp.headers.get("Retry-After", "1")) * (1 + random.random() / 2)
                    with lock:
                        retries += 1
                        heapq.heappush(later, (time.monotonic() + delay, url))
                    continue
                resp.raise_for_status()
                with lock:
                    total += len(resp.content)

        with ThreadPoolExecutor(6) as pool:
            for future in [pool.submit(connection) for _ in range(6)]:
                future.result()
        return total

    for label, batch in (
        ("thumbnails, cold", thumbs),
        ("thumbnails, warm", thumbs),
        ("full images", urls),
    ):
        latencies: list[float] = []
        stop = threading.Event()

        def probe(latencies: list[float] = latencies, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                started = time.perf_counter()
                requests.get(f"{base}/data/images?limit=20", headers=auth, timeout=30)
                latencies.append(time.perf_counter() - started)
                time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        retries = 0
        started = time.perf_counter()
        total = fetch_all(batch)
        took = time.perf_counter() - started
        stop.set()
        prober.join()
        print(
            f"{n} {label:<17} {took:6.2f} s  {n / took:6.0f}/s  {total / n / 1024:7.1f} KB each"
            f"  {retries:4d} retries  list median {statistics.median(latencies) * 1000:5.0f} ms"
            f" max {max(latencies) * 1000:5.0f} ms"
        )
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, choices=SIZES)
    parser.add_argument("--repeat", type=int, default=5, help="cold rounds per case (median)")
    parser.add_argument("--case", action="append", help="FORMAT:WxH, e.g. JPEG:4000x3000")
    parser.add_argument(
        "--http",
        type=int,
        metavar="N",
        help="instead: serve N images and fetch a grid's thumbnails over HTTP",
    )
    parser.add_argument("--workers", type=int, help="with --http: decoding threads")
    parser.add_argument(
        "--grid-case", default="JPEG:1280x960", help="with --http: FORMAT:WxH of every image"
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child process: one file
    parser.add_argument("--make", nargs=2, help=argparse.SUPPRESS)  # child: CASE PATH
    args = parser.parse_args()
    if args.measure:
        print(measure(Path(args.measure), args.size, args.repeat), flush=True)
        return 0
    if args.http:
        http_grid(args.http, args.size, args.workers, args.grid_case)
        return 0
    if args.make:
        fmt, dims = args.make[0].split(":")
        width, height = (int(v) for v in dims.split("x"))
        make(Path(args.make[1]), fmt, width, height)
        return 0
    # Both steps in child processes: on Linux a child inherits its parent's peak RSS, so this
    # process must never hold an image.
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.case or CASES:
            path = Path(tmp) / case.replace(":", "-").lower()
            subprocess.run([sys.executable, __file__, "--make", case, str(path)], check=True)
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    str(path),
                    "--size",
                    str(args.size),
                    "--repeat",
                    str(args.repeat),
                ],
                check=True,
            )
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
