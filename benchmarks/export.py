"""Dataset export and import: throughput against a standard-library floor, memory, first byte.

    .venv/bin/python benchmarks/export.py --images 100000 --million benchmarks/out/ec-1m

In one run, with the machine, the date and every figure printed (``--json FILE`` keeps them):

1. a catalog of ``--images`` real ~``--kb`` KB JPEGs (one noise JPEG with a COM segment making
   each distinct, ``ingest.py``'s), 3 boxes each, written through ``ingest.bulk.add_images``
   (``--images 0``: no such catalog, steps 1-4 skipped);
2. floor: the standard library's ``zipfile`` writing the same images (read from their files)
   and the same label texts (made beforehand) as stored members into a sink that counts bytes;
3. export: ``GET /data/exports/yolo`` from a real ``edgecatalog serve`` subprocess on a
   loopback port, read to the end by a client in this process and discarded; MB/s against the
   floor's (the median of ``--repeats``), time to the first byte, and the server's RSS: idle
   before, the highest of samples every 20 ms during the export, the growth between them;
4. import: ``edgecatalog export yolo --out`` to a file, the source catalog removed, then
   ``edgecatalog import`` of that file into an empty catalog (subprocess), in images/s;
5. with ``--million DIR`` (a catalog ``generate.py`` made, e.g. ``--images 1000000``; made
   there if missing, ~150 s): the time to the first byte of a few views of it served by
   ``edgecatalog serve`` (a tenth of its capture time, ~100,000 images, as YOLO; a batch, a
   device's completed images, a rare class as JSON Lines), and of the whole catalog
   (``include_images=false``); and ``rows_floor``: what reading that tenth's rows once costs
   in SQLite alone, the least a plan made from them pays before its first byte.

Not part of the test suite. Everything is removed at the end but ``--million``'s catalog.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import base_jpegs, free_port, unique_jpeg

from edgecatalog.catalog import NewAnnotation, NewImage

HERE = Path(__file__).resolve().parent
CLASSES = ("crack", "dent", "scratch", "stain", "chip")


def boxes(i: int) -> tuple[NewAnnotation, ...]:
    return tuple(
        NewAnnotation(
            CLASSES[(i + k) % len(CLASSES)],
            "bbox",
            [0.2 + 0.2 * k, 0.3 + 0.1 * k, 0.1 + 0.01 * (i % 7), 0.15],
            0.5 + 0.1 * k,
        )
        for k in range(3)
    )


def make_catalog(data_dir: Path, n: int, kb: int) -> None:
    from edgecatalog import db
    from edgecatalog.config import load_settings
    from edgecatalog.db import write_tx
    from edgecatalog.ingest.bulk import add_images
    from edgecatalog.models import database

    settings = load_settings(environ={}, overrides={"storage.data_dir": str(data_dir)})
    db.open_for(settings)
    db.migrate()
    folder = settings.images_dir / "raw-data"
    folder.mkdir(parents=True, exist_ok=True)
    bases = base_jpegs(kb)
    with database.connection_context():
        for start in range(0, n, 1000):
            news = []
            for i in range(start, min(n, start + 1000)):
                data = unique_jpeg(bases[i % len(bases)], i)
                key = f"raw-data/{i:07d}_cam{i % 4:02d}_{i}.jpg"
                (settings.images_dir / key).write_bytes(data)
                news.append(
                    NewImage(
                        filename=f"cam{i % 4:02d}_{i}.jpg",
                        storage_key=key,
                        sha256=hashlib.sha256(data).hexdigest(),
                        crc32=zlib.crc32(data),  # as every way in counts it
                        byte_size=len(data),
                        width=64,
                        height=64,
                        root=str(settings.images_dir),
                        device_id=f"cam{i % 4:02d}",
                        annotations=boxes(i),
                    )
                )
            with write_tx():
                add_images(news)
        # 80 % train, 10 % val, 10 % test, by id.
        database.execute_sql(
            "UPDATE image SET split = CASE id % 10 WHEN 8 THEN 'val' WHEN 9 THEN 'test' "
            "ELSE 'train' END"
        )
    database.close()


class Sink:
    """A write-only stream that counts: the floor writes into it (``zipfile`` then streams)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        pass


def measure_floor(data_dir: Path) -> tuple[float, int]:
    """(seconds, bytes) for zipfile writing the images and their label texts, stored."""
    import sqlite3

    conn = sqlite3.connect(data_dir / "catalog.db")
    rows = conn.execute("SELECT id, storage_key, width, height FROM image ORDER BY id").fetchall()
    labels = {}
    for image_id, cls, xc, yc, w, h in conn.execute(
        "SELECT image_id, class_value, x_center, y_center, width, height FROM annotation "
        "ORDER BY image_id, z_order, id"
    ):
        line = f"{CLASSES.index(cls)} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}\n"
        labels[image_id] = labels.get(image_id, "") + line
    conn.close()
    sink = Sink()
    started = time.perf_counter()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as z:
        for image_id, path, _, _ in rows:
            with open(data_dir / "images" / path, "rb") as fh:
                z.writestr(f"images/train/{image_id}.jpg", fh.read())
            z.writestr(f"labels/train/{image_id}.txt", labels.get(image_id, ""))
    return time.perf_counter() - started, sink.n


def write_config(path: Path, data_dir: Path, port: int) -> Path:
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nthreads = 4\n'
        f'[storage]\ndata_dir = "{data_dir}"\n[auth]\njwt_secret = "{"b" * 40}"\n'
    )
    return path


def start_server(config: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecatalog", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(config.with_suffix(".log"), "ab"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("serve did not start")


def token(config: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "edgecatalog", "token", "--sub", "bench", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def download(url: str, headers: dict, pid: int | None = None, stop_after_first=False) -> dict:
    """GET ``url`` and read it into one reused buffer (``http.client``'s ``readinto``: the
    client costs the shared CPUs as little as it can); the server's RSS sampled meanwhile."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True) if pid else None
    if sampler:
        sampler.start()
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    buffer = memoryview(bytearray(1024 * 1024))
    started = time.perf_counter()
    conn.request("GET", f"{parts.path}?{parts.query}", headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read(500)
    length = int(resp.headers["Content-Length"])
    first, total = None, 0
    while n := resp.readinto(buffer):
        if first is None:
            first = time.perf_counter() - started
            if stop_after_first:
                break
        total += n
    seconds = time.perf_counter() - started
    conn.close()
    done.set()
    if sampler:
        sampler.join()
    return {
        "first_byte_ms": first * 1000,
        "seconds": seconds,
        "bytes": total,
        "length": length,
        "peak_rss_kb": peak[0],
    }


def run_cli(config: Path, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args, "--config", str(config)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def throughput_and_import(work: Path, n: int, kb: int, repeats: int, out: dict) -> None:
    source = work / "source"
    started = time.perf_counter()
    make_catalog(source, n, kb)
    print(f"catalog of {n} images made in {time.perf_counter() - started:.0f} s", flush=True)
    floors = []
    for _ in range(repeats):
        seconds, size = measure_floor(source)
        floors.append(size / seconds / 1e6)
    out["floor_mb_s"] = statistics.median(floors)
    port = free_port()
    config = write_config(work / "source.toml", source, port)
    server = start_server(config, port)
    try:
        headers = {"Authorization": f"Bearer {token(config)}"}
        base = f"http://127.0.0.1:{port}"
        requests.get(f"{base}/data/images?limit=1", headers=headers, timeout=60)
        time.sleep(1)
        idle = rss_kb(server.pid)
        runs = [download(f"{base}/data/exports/yolo", headers, server.pid) for _ in range(repeats)]
    finally:
        server.terminate()
        server.wait(timeout=60)
    best = statistics.median(r["bytes"] / r["seconds"] / 1e6 for r in runs)
    out.update(
        export_mb_s=best,
        ratio=best / out["floor_mb_s"],
        archive_bytes=runs[0]["length"],
        export_first_byte_ms=statistics.median(r["first_byte_ms"] for r in runs),
        idle_rss_mb=idle / 1024,
        peak_rss_mb=max(r["peak_rss_kb"] for r in runs) / 1024,
    )
    out["rss_growth_mb"] = out["peak_rss_mb"] - out["idle_rss_mb"]
    assert all(r["bytes"] == r["length"] for r in runs)
    print(json.dumps(out, indent=1), flush=True)
    archive = work / "export.zip"
    out["cli_export_seconds"] = run_cli(config, "export", "yolo", "--out", str(archive))
    shutil.rmtree(source)
    target = work / "target"
    config = write_config(work / "target.toml", target, free_port())
    run_cli(config, "migrate")
    seconds = run_cli(config, "import", str(archive), "--format", "yolo", "--device-id", "imp")
    out.update(import_seconds=seconds, import_images_s=n / seconds)
    archive.unlink()
    shutil.rmtree(target)


def first_bytes(million: Path, out: dict) -> None:
    if not (million / "catalog.db").exists():
        subprocess.run(
            [
                sys.executable,
                str(HERE / "generate.py"),
                "--images",
                "1000000",
                "--out",
                str(million),
            ],
            check=True,
        )
    import sqlite3

    conn = sqlite3.connect(million / "catalog.db")
    (count,) = conn.execute("SELECT count(*) FROM image").fetchone()
    rare = conn.execute(
        "SELECT class_value FROM annotation GROUP BY class_value ORDER BY count(*) LIMIT 1"
    ).fetchone()[0]
    device = conn.execute("SELECT device_id FROM device ORDER BY id LIMIT 1").fetchone()[0]
    batch = conn.execute("SELECT max(id) FROM batch").fetchone()[0]
    # A tenth of the capture time, in its middle: ~100,000 images of the million.
    lo, hi = conn.execute("SELECT min(captured_at), max(captured_at) FROM image").fetchone()
    after = lo + (hi - lo) * 45 // 100
    before = after + (hi - lo) // 10
    tenth = f"captured_after={after // 1000}&captured_before={before // 1000}"
    out["rows_floor"] = rows_floor(conn, after, before)
    conn.close()
    port = free_port()
    config = write_config(million.parent / "million.toml", million, port)
    server = start_server(config, port)
    views = {
        "a tenth of the capture time (YOLO)": f"{tenth}&format=yolo",
        "one batch": f"batch_id={batch}",
        "one device, completed": f"device_id={device}&annotation_status=completed",
        f"rare class {rare}": f"class_values={rare}",
        "whole catalog, no images": "split=all&include_images=false",
    }
    results = {}
    try:
        headers = {"Authorization": f"Bearer {token(config)}"}
        base = f"http://127.0.0.1:{port}"
        requests.get(f"{base}/data/images?limit=1", headers=headers, timeout=60)
        for name, query in views.items():
            listed = requests.get(
                f"{base}/data/images?limit=1&{query}", headers=headers, timeout=600
            ).json()["meta"]["total"]
            fmt = "yolo" if "format=yolo" in query else "jsonl"
            query = query.replace("&format=yolo", "")
            times = [
                download(f"{base}/data/exports/{fmt}?{query}", headers, stop_after_first=True)[
                    "first_byte_ms"
                ]
                for _ in range(3)
            ]
            results[name] = {"images": listed, "first_byte_ms": statistics.median(times)}
            print(name, results[name], flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    out["catalog_images"] = count
    out["first_byte"] = results


def rows_floor(conn, after: int, before: int) -> dict:
    """What reading a view's rows once costs, whatever a plan does with them: two aggregates
    over the rows of a tenth of the capture time (~100,000 images), the image rows' columns an
    archive's length needs and their annotations' (median of 3 runs, ms). An archive whose
    Content-Length is known before its first byte reads at least this much before it, unless
    its sums are kept at write time."""
    view = "t.captured_at >= ? AND t.captured_at < ?"
    statements = {
        "image rows (count, sizes, name lengths, newest change)": (
            "SELECT count(*), sum(t.byte_size), sum(length(t.filename)), max(t.updated_at) "
            f"FROM image t WHERE {view}"
        ),
        "their annotations (count, boxes, polygon points)": (
            "SELECT count(*), sum(a.type = 'bbox'), sum(length(a.geometry)) FROM image t "
            f"JOIN annotation a ON a.image_id = t.id WHERE {view}"
        ),
    }
    found: dict = {}
    for name, sql in statements.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            row = conn.execute(sql, (after, before)).fetchone()
            times.append((time.perf_counter() - started) * 1000)
        found[name] = {"rows": row[0], "ms": round(statistics.median(times), 1)}
        print(name, found[name], flush=True)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--kb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, default=HERE / "out" / "export-work")
    parser.add_argument("--million", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "images": args.images,
        "load_before": os.getloadavg()[0],
    }
    print(out, flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    try:
        if args.images:  # 0: the million-image catalog's figures only
            throughput_and_import(args.work, args.images, args.kb, args.repeats, out)
        if args.million is not None:
            first_bytes(args.million, out)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
