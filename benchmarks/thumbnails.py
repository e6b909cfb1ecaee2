"""Thumbnail cost: time of the first (decoding) request, of a cached one, and peak memory.

    .venv/bin/python benchmarks/thumbnails.py            # per-image cost and memory
    .venv/bin/python benchmarks/thumbnails.py --http 300 # a 300-image grid over HTTP

For each case (JPEG 1920x1080, 4000x3000, 8000x6000; PNG 4000x3000, 7000x7000 by default)
a noise image is written to a temporary folder, then a fresh Python process makes its 256 px
thumbnail through ``edgecatalog.thumbnails.get_thumbnail`` (the code behind
GET /files/<id>/thumbnail) and reports the time of the first call, the mean of 200 cached
calls and its peak RSS before and after, so the figure is the thumbnail's own cost.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("JPEG:1920x1080", "JPEG:4000x3000", "JPEG:8000x6000", "PNG:4000x3000", "PNG:7000x7000")


def make(path: Path, fmt: str, width: int, height: int) -> None:
    from PIL import Image

    img = Image.effect_noise((width, height), 40).convert("RGB")
    img.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def measure(path: Path, size: int) -> str:
    from edgecatalog.thumbnails import get_thumbnail

    digest, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            n += len(chunk)
    sha = digest.hexdigest()
    cache = Path(tempfile.mkdtemp())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    get_thumbnail(str(path), sha, n, size, cache, 89_478_485)
    first = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for _ in range(200):
        get_thumbnail(str(path), sha, n, size, cache, 89_478_485)
    cached = (time.perf_counter() - started) / 200
    return (f"{path.name:<20} {n / 1e6:6.1f} MB  first {first * 1000:6.0f} ms  "
            f"cached {cached * 1000:6.3f} ms  peak RSS {before / 1024:4.0f} -> {after / 1024:4.0f} MB")


def http_grid(n: int, size: int) -> None:
    """N real 1280x960 JPEGs in a fresh catalog behind waitress; fetch every thumbnail of the
    grid twice (cold: generated and cached; warm: from the cache) and every full image once,
    from 6 client threads as a browser would."""
    import hashlib
    import io
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests
    import waitress.server
    from PIL import Image

    from edgecatalog import create_app
    from edgecatalog.auth import Authenticator
    from edgecatalog.catalog import NewImage, add_image
    from edgecatalog.config import load_settings

    tmp = Path(tempfile.mkdtemp())
    settings = load_settings(environ={}, overrides={"storage.data_dir": str(tmp),
                                                    "auth.jwt_secret": "b" * 40})
    app = create_app(settings)
    for i in range(n):
        buf = io.BytesIO()
        Image.effect_noise((1280, 960), 20 + i % 40).convert("RGB").save(buf, "JPEG", quality=88)
        data, key = buf.getvalue(), f"raw-data/{i:05d}.jpg"
        (settings.images_dir / "raw-data").mkdir(parents=True, exist_ok=True)
        (settings.images_dir / key).write_bytes(data)
        add_image(NewImage(filename=f"{i:05d}.jpg", storage_key=key,
                           sha256=hashlib.sha256(data).hexdigest(), byte_size=len(data),
                           width=1280, height=960, root=str(settings.images_dir), path=key,
                           device_id="bench"))
    server = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{server.effective_port}"
    token = Authenticator(settings).issue_token("bench")
    urls: list[str] = []
    for offset in range(0, n, 100):
        page = requests.get(f"{base}/data/images?include_image_url=true&limit=100&offset={offset}",
                            headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        urls += [row["image_url"] for row in page["data"]]
    thumbs = [u.replace("?", "/thumbnail?", 1) + f"&size={size}" for u in urls]

    def fetch(url: str) -> int:
        resp = requests.get(url, timeout=60)
        resp.raise_for_status()
        return len(resp.content)

    for label, batch in (("thumbnails, cold", thumbs), ("thumbnails, warm", thumbs),
                         ("full images", urls)):
        started = time.perf_counter()
        with ThreadPoolExecutor(6) as pool:
            total = sum(pool.map(fetch, batch))
        took = time.perf_counter() - started
        print(f"{n} {label:<17} {took:6.2f} s  {n / took:6.0f}/s  {total / n / 1024:7.1f} KB each")
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, choices=(128, 256, 512))
    parser.add_argument("--case", action="append", help="FORMAT:WxH, e.g. JPEG:4000x3000")
    parser.add_argument("--http", type=int, metavar="N",
                        help="instead: serve N images and fetch a grid's thumbnails over HTTP")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child process: one file
    parser.add_argument("--make", nargs=2, help=argparse.SUPPRESS)  # child: CASE PATH
    args = parser.parse_args()
    if args.measure:
        print(measure(Path(args.measure), args.size))
        return 0
    if args.http:
        http_grid(args.http, args.size)
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
            subprocess.run([sys.executable, __file__, "--measure", str(path),
                            "--size", str(args.size)], check=True)
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
