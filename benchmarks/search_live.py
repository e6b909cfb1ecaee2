"""Search while the device writes: the list's search queries at concurrency 1, first on a
quiet catalog, then while another connection inserts images at ``--writes-per-second``, as a
device capturing images does. Not part of the test suite.

    .venv/bin/python benchmarks/search_live.py --data /tmp/ec-1m --writes-per-second 1

A search alone keeps its total across inserts (``listing.scan_cache.search_total``: the matches among
the new rows only); a search combined with another filter is remembered only until the next
write, so under writes it pays the filename-index scan again. The writer inserts copies of an
existing row (new id, filename and hash; every other one matches the common term) through its
own ``sqlite3`` connection and deletes them at the end, which leaves the catalog as it was.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load
import matrix
import servers

QUERIES = {
    "search common": {"search": "cam1"},
    "search 2-char": {"search": "07"},
    "search common + split": {"search": "cam1", "split": "val"},
}
MARK = "zzlive"  # in every inserted filename, so the cleanup finds exactly those rows


class Writer(threading.Thread):
    def __init__(self, db_path: Path, per_second: float) -> None:
        super().__init__(daemon=True)
        self.db_path, self.interval = db_path, 1.0 / per_second
        self.stop_event, self.written = threading.Event(), 0

    def run(self) -> None:
        conn = sqlite3.connect(str(self.db_path), timeout=15, isolation_level=None)
        cols = [r[1] for r in conn.execute("PRAGMA table_info(image)") if r[1] != "id"]
        source = conn.execute("SELECT max(id) FROM image").fetchone()[0]
        select = ", ".join("?" if c in ("filename", "sha256") else c for c in cols)
        sql = f"INSERT INTO image ({', '.join(cols)}) SELECT {select} FROM image WHERE id = ?"
        while not self.stop_event.wait(self.interval):
            prefix = "cam13" if self.written % 2 == 0 else "cam02"
            name = f"{prefix}_{MARK}_{self.written:06d}.jpg"
            conn.execute(sql, (name, f"{MARK}-{time.time_ns()}", source))
            self.written += 1
        conn.close()


def remove_written(db_path: Path) -> int:
    conn = sqlite3.connect(str(db_path), timeout=15, isolation_level=None)
    try:
        return conn.execute(f"DELETE FROM image WHERE filename LIKE '%{MARK}%'").rowcount
    finally:
        conn.close()


def measure(svc: servers.Server, duration: float) -> dict[str, load.Latency]:
    return {
        name: load.measure_latency(f"{svc.url}/data/images?{urlencode(q)}", svc.headers, duration)
        for name, q in QUERIES.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder made by generate.py")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per query")
    parser.add_argument("--writes-per-second", type=float, default=1.0)
    args = parser.parse_args(argv)
    data = args.data.resolve()
    db_path = data / "catalog.db"
    matrix.read_facts(db_path)  # fails early on a folder generate.py did not make
    workdir = servers.make_workdir()
    svc = servers.start_service(data, workdir, 4)
    writer = Writer(db_path, args.writes_per_second)
    try:
        quiet = measure(svc, args.duration)
        writer.start()
        busy = measure(svc, args.duration)
    finally:
        writer.stop_event.set()
        writer.join(timeout=30)
        svc.stop()
        (workdir / "bench-service.toml").unlink(missing_ok=True)
        removed = remove_written(db_path)
    print(
        f"{args.duration:g} s per query at concurrency 1; writer: "
        f"{args.writes_per_second:g} inserts/s ({writer.written} written, {removed} removed)"
    )
    print(
        f"{'query':24} {'quiet p50':>9} {'p95':>7} {'writing p50':>11} {'p95':>7} "
        f"{'p99':>7} {'n':>5}"
    )
    for name in QUERIES:
        q, b = quiet[name], busy[name]
        print(
            f"{name:24} {q.p50_ms:9.1f} {q.p95_ms:7.1f} {b.p50_ms:11.1f} {b.p95_ms:7.1f} "
            f"{b.p99_ms:7.1f} {b.requests:5d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
