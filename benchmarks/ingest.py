"""Ingestion throughput: folder indexing (the ``scan`` path) and HTTP upload, against the floor.

    .venv/bin/python benchmarks/ingest.py --n 2000 [--skip-scan | --skip-upload]

Generates N unique, real JPEGs of about ``--kb`` KB (default 100), half with a JSON sidecar
and half with a YOLO sidecar (plus classes.txt), then measures, as the median of ``--repeats``:

- floor: reading and SHA-256 hashing the same files (images and sidecars), nothing else;
- scan: indexing the folder into a fresh catalog through the same code as ``edgecatalog scan``
  (``[capture] mode`` from ``--mode``, settle time 0); then the same with another thread alive,
  as in the service's watcher, whose worker processes come from a fork server;
- upload: POST /device/images/upload of the N images (with their JSON metadata) to a real
  ``edgecatalog serve`` subprocess on a loopback port, from ``--threads`` client threads;
  and the same requests to the upload floor (``upload_floor.py``: a bare WSGI handler on
  waitress that streams the multipart to a file, fsyncs and answers), whose rate the service's
  is reported against.

By default every measurement reads warm files (in the page cache), as the floor does; with
``--cold`` (root only) the page cache is dropped before each floor and scan run, so both read
from the disk as a device reading fresh captures does. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgecatalog import db
from edgecatalog.config import load_settings
from edgecatalog.ingest.indexer import FolderIndexer
from edgecatalog.ingest.probe import CaptureOptions
from edgecatalog.ingest.scan import scan_folder
from edgecatalog.models import Image, database

DEVICE_KEY = "adk_" + "b" * 32
CLASSES = ["person", "car", "defect"]


def base_jpegs(kb: int, count: int = 8) -> list[bytes]:
    """A few distinct noisy JPEGs of about ``kb`` KB (noise keeps JPEG from shrinking them)."""
    rng = random.Random(7)
    side = 64
    out: list[bytes] = []
    while len(out) < count:
        img = PILImage.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        if len(buf.getvalue()) < kb * 1000 * 0.9:
            side += 16
            continue
        out.append(buf.getvalue())
    return out


def unique_jpeg(base: bytes, i: int) -> bytes:
    """The base JPEG with a COM segment carrying ``i`` after SOI: still a valid, unique JPEG."""
    comment = f"edgecatalog benchmark image {i}".encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return base[:2] + segment + base[2:]


def sidecar(i: int) -> tuple[str, str]:
    rng = random.Random(i)
    boxes = [
        (
            rng.randrange(len(CLASSES)),
            0.2 + rng.random() * 0.6,
            0.2 + rng.random() * 0.6,
            0.1 + rng.random() * 0.1,
            0.1 + rng.random() * 0.1,
            rng.random(),
        )
        for _ in range(3)
    ]
    if i % 2 == 0:
        doc = {
            "model_id": "yolo",
            "model_version": "8",
            "source": "model",
            "annotations": [
                {
                    "class_value": CLASSES[c],
                    "type": "bbox",
                    "geometry": [x, y, w, h],
                    "confidence": round(p, 3),
                }
                for c, x, y, w, h, p in boxes
            ],
        }
        return ".json", json.dumps(doc)
    return ".txt", "".join(
        f"{c} {x:.4f} {y:.4f} {w:.4f} {h:.4f} {p:.3f}\n" for c, x, y, w, h, p in boxes
    )


def generate(folder: Path, n: int, kb: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    bases = base_jpegs(kb)
    images = []
    for i in range(n):
        path = folder / f"frame_{i:06d}.jpg"
        path.write_bytes(unique_jpeg(bases[i % len(bases)], i))
        suffix, text = sidecar(i)
        path.with_suffix(suffix).write_text(text)
        images.append(path)
    return images


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the scan's worker processes)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure_floor(folder: Path) -> float:
    started = time.perf_counter()
    count = 0
    for entry in os.scandir(folder):
        with open(entry.path, "rb") as fh:
            hashlib.sha256(fh.read()).hexdigest()
        count += entry.name.endswith(".jpg")
    return time.perf_counter() - started


def measure_scan_in_service(folder: Path, work: Path, mode: str, n: int) -> float:
    """The same scan with a second thread alive, as inside ``serve`` (the watcher's
    reconciliation): a process with other threads must not fork, so its probe workers are
    forked by a fork server instead."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        return measure_scan(folder, work, mode, n)
    finally:
        stop.set()
        other.join()


def measure_scan(folder: Path, work: Path, mode: str, n: int) -> float:
    data = work / "scan-data"
    shutil.rmtree(data, ignore_errors=True)
    source = folder
    if mode == "move":  # move empties the folder: give each repeat its own copy
        source = work / "scan-source"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(folder, source)
    settings = load_settings(
        environ={},
        overrides={
            "storage.data_dir": str(data),
            "auth.jwt_secret": "b" * 40,
            "capture.settle_seconds": 0.0,
            "capture.mode": mode,
        },
    )
    db.open_for(settings)
    db.migrate()
    with database.connection_context():
        started = time.perf_counter()
        report = scan_folder(
            FolderIndexer(CaptureOptions.from_settings(settings), source), recursive=False
        )
        elapsed = time.perf_counter() - started
        assert report.indexed == n and Image.select().count() == n, report.summary()
    database.close()
    return elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(work: Path, threads: int) -> tuple[subprocess.Popen, str]:
    data = work / "http-data"
    shutil.rmtree(data, ignore_errors=True)
    port = free_port()
    config = work / "bench.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nthreads = {threads}\n'
        f'[storage]\ndata_dir = "{data}"\n'
        f'[auth]\njwt_secret = "{"b" * 40}"\ndevice_keys = ["{DEVICE_KEY}"]\n'
        # One key sends every upload back to back: the per-device rate limit would measure
        # itself (429 after 1,200 a minute), not the upload path.
        "device_requests_per_minute = 0\n"
        '[logging]\nlevel = "WARNING"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecatalog", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, _answering(proc, f"http://127.0.0.1:{port}", "/health", "server")


def _answering(proc: subprocess.Popen, url: str, path: str, what: str) -> str:
    """``url`` once ``proc`` answers ``path`` (any status), within 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited: {proc.stderr.read()[-2000:]}")
        try:
            requests.get(url + path, timeout=1)
            return url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{what} did not start within 30 s")


def start_upload_floor(work: Path, threads: int) -> tuple[subprocess.Popen, str]:
    folder = work / "floor-uploads"
    shutil.rmtree(folder, ignore_errors=True)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("upload_floor.py")),
            "--port",
            str(port),
            "--dir",
            str(folder),
            "--threads",
            str(threads),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, _answering(proc, f"http://127.0.0.1:{port}", "/", "upload floor")


def measure_upload(
    images: list[Path], work: Path, threads: int, start=start_server
) -> float | None:
    proc, url = start(work, threads)
    try:
        probe = requests.post(url + "/device/images/upload", timeout=10)
        if probe.status_code == 404:
            print("upload: POST /device/images/upload is not there (404); skipped")
            return None
        bodies = [(p.name, p.read_bytes(), _metadata(p)) for p in images]
        errors: list[str] = []
        chunks = [bodies[i::threads] for i in range(threads)]

        def client(chunk: list) -> None:
            with requests.Session() as session:
                for name, data, meta in chunk:
                    resp = session.post(
                        url + "/device/images/upload",
                        timeout=30,
                        headers={"X-Device-Key": DEVICE_KEY},
                        files={"image": (name, data, "image/jpeg")},
                        data={"metadata": meta},
                    )
                    if resp.status_code != 201:
                        errors.append(f"{resp.status_code} {resp.text[:200]}")

        workers = [threading.Thread(target=client, args=(c,)) for c in chunks]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - started
        if errors:
            raise SystemExit(f"upload: {len(errors)} failed, first: {errors[0]}")
        return elapsed
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _metadata(image: Path) -> str:
    sidecar_json = image.with_suffix(".json")
    return sidecar_json.read_text() if sidecar_json.exists() else "{}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="images (default 2000)")
    parser.add_argument("--kb", type=int, default=100, help="approximate JPEG size in KB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="HTTP client threads")
    parser.add_argument("--mode", choices=("index", "move"), default="index")
    parser.add_argument("--skip-upload", action="store_true")
    parser.add_argument(
        "--skip-scan", action="store_true", help="only the HTTP upload and its floor"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the page cache before each floor and scan run (root only)",
    )
    args = parser.parse_args()
    if args.cold and not drop_page_cache():
        print("--cold needs root (it writes /proc/sys/vm/drop_caches)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgecatalog-bench-") as tmp:
        work = Path(tmp)
        images = generate(work / "captures", args.n, args.kb)
        size = sum(p.stat().st_size for p in images) / len(images)
        print(f"{args.n} JPEGs of {size / 1000:.0f} KB avg with sidecars, {os.cpu_count()} CPUs")
        if not args.skip_scan:
            measure_scans(args, work)
        if not args.skip_upload:
            measure_uploads(args, images, work)
    return 0


def measure_scans(args: argparse.Namespace, work: Path) -> None:
    """The floor (read + SHA-256), the scan, and the scan inside serve; printed."""
    floor, floor_cpu = timed(args.repeats, args.cold, measure_floor, work / "captures")
    scan, scan_cpu = timed(
        args.repeats, args.cold, measure_scan, work / "captures", work, args.mode, args.n
    )
    in_service, _ = timed(
        args.repeats,
        args.cold,
        measure_scan_in_service,
        work / "captures",
        work,
        args.mode,
        args.n,
    )
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    if OTHER_LOAD:  # noise: cores other programs used while floor and scan were measured
        print(
            f"other processes meanwhile: {statistics.median(OTHER_LOAD):.2f} cores "
            f"(median), {max(OTHER_LOAD):.2f} at most"
        )
    cache = "cold cache" if args.cold else "warm cache"
    report(f"floor (read + sha256, {cache})", args.n, floor, floor, floor_cpu)
    report(f"scan ({args.mode} mode)", args.n, scan, floor, scan_cpu)
    # No CPU figure: its workers are the fork server's children, not this process's.
    report("  the same inside serve", args.n, in_service, floor)


def measure_uploads(args: argparse.Namespace, images: list[Path], work: Path) -> None:
    """The upload floor and the service's HTTP upload, alternately (so both see the same
    machine), each the median of ``--repeats``; printed."""
    runs, floor_runs = [], []
    print(f"load average before the uploads: {os.getloadavg()[0]:.1f}")
    for _ in range(args.repeats):
        floor_runs.append(measure_upload(images, work, args.threads, start=start_upload_floor))
        runs.append(measure_upload(images, work, args.threads))
    if any(r is None for r in runs):
        return
    up, up_floor = statistics.median(runs), statistics.median(floor_runs)
    print(
        f"{'upload floor (bare WSGI, file + fsync)':<38} {args.n / up_floor:>9.0f} "
        f"images/s  {up_floor:7.3f} s\n"
        f"{f'HTTP upload ({args.threads} threads)':<38} {args.n / up:>9.0f} images/s  "
        f"{up:7.3f} s\n"
        f"{'HTTP upload / upload floor':<38} {up_floor / up:>9.1%}\n"
        "each run, images/s: floor "
        + ", ".join(f"{args.n / r:.0f}" for r in floor_runs)
        + "; upload "
        + ", ".join(f"{args.n / r:.0f}" for r in runs)
    )


def drop_page_cache() -> bool:
    """Write back and drop the page cache, so the next read comes from the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def machine_busy_seconds() -> float | None:
    """CPU seconds every process of the machine has used since boot (Linux), else None."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


OTHER_LOAD: list[float] = []  # cores other processes kept busy during each measured call


def timed(repeats: int, cold: bool, func, *args) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of ``repeats`` calls.

    Another program busy on the machine meanwhile (a second benchmark, say) takes cores from
    the measured code: how many, on average, is appended to ``OTHER_LOAD`` for the report.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        if cold:
            drop_page_cache()
        cpu, busy, started = cpu_seconds(), machine_busy_seconds(), time.perf_counter()
        walls.append(func(*args))
        cpus.append(cpu_seconds() - cpu)
        if busy is not None:
            elapsed = time.perf_counter() - started
            others = machine_busy_seconds() - busy - cpus[-1]
            OTHER_LOAD.append(max(0.0, others / elapsed))
    return statistics.median(walls), statistics.median(cpus)


def report(name: str, n: int, seconds: float, floor: float, cpu: float | None = None) -> None:
    cpu_text = f"  cpu {cpu / n * 1e6:5.0f} us/image" if cpu is not None else ""
    print(
        f"{name:<38} {n / seconds:>9.0f} images/s  {seconds:7.3f} s  "
        f"{floor / seconds:6.1%} of floor{cpu_text}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
