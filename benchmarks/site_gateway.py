"""The site gateway on PostgreSQL: a 10M-image site catalog, the list matrix against a
psycopg floor, ingest from 20 concurrent device syncs, database size and peak RSS.

    .venv/bin/python benchmarks/site_gateway.py --pgdata benchmarks/out/ec-site            # everything
    .venv/bin/python benchmarks/site_gateway.py --pgdata benchmarks/out/ec-site --skip-ingest --only class
    .venv/bin/python benchmarks/site_gateway.py --pgdata benchmarks/out/ec-site --skip-ingest \
        --matrix adversarial --duration 1      # adversarial.py's hard cases, made from this catalog

``--pgdata DIR`` holds everything of the run and is kept between runs: ``DIR/pg`` the cluster
(``initdb`` as the ``postgres`` user, a loopback port kept in ``DIR/state.json``), ``DIR/data``
the gateway's ``data_dir``. The first run creates the cluster and generates the catalog
(``--images``, default 10,000,000, over ``--devices`` 200); later runs start the cluster if it
is down and reuse the database. ``--regenerate`` builds it again.

Generation runs inside PostgreSQL: the database is migrated by the project's own migrations,
the count-table triggers (rendered by the engine from ``listing.counts``), the secondary
indexes and the foreign keys of ``image``, ``annotation`` and ``outbox`` are dropped, the rows
are written by ``INSERT ... SELECT ... FROM generate_series`` (every "random" value a hash of
the row's id: reproducible), then the foreign keys and indexes come back from their own stored
definitions, the count tables are rebuilt by the engine's own backfill and their triggers
re-created, and ``VACUUM ANALYZE`` runs. The count tables are then checked against
``COUNT(*)`` on several filters. The shape follows ``catalog_spec.py`` (see ``SHAPE``).

The matrix: every query (``site_cases``; values read from the catalog) against the real
``edgecatalog serve`` (``[database] url``) and the floor (``floor`` below: a bare WSGI app on
waitress, hand-written SQL through psycopg, naive ``COUNT(*)`` and ``ORDER BY ... LIMIT``, the
same envelope): p50/p95 at concurrency 1, req/s at concurrency 8, their ratio.

Ingest: ``--ingest-devices`` (20) load-generator devices, each with its own device key made by
``edgecatalog device-key add`` and bound to one of the catalog's devices, send what the sync
worker sends (``UpstreamClient.upload``: multipart ``metadata`` JSON + ``image``, headers
``X-Device-Key`` and ``Idempotency-Key``), back to back, for ``--ingest-seconds`` (300): real
~100 KB JPEGs (one noise JPEG with a COM segment making each distinct), 3 annotations each.
Afterwards the ingested rows and files are removed and the batches restored (``--keep-ingested``
keeps them), so the catalog stays the generated one for the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import io
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import catalog_spec as spec
import load
import servers

HOST = "127.0.0.1"
DBNAME = "site"
DAY_US = 86_400 * 1_000_000
END_US = 1_796_601_600 * 1_000_000  # 2026-12-07T00:00:00Z
START_US = END_US - 30 * DAY_US
N_WINDOWS = 50  # batches per device, one time window each (~1,000 images at 10M / 200)
N_PROJECTS = 8
PROJECT_WEIGHTS = (8, 6, 5, 4, 3, 2, 1, 1)
SHAPE = """images one every ~0.26 s over 30 days (2026-11-07..2026-12-07), created_at increasing
with id; device uniform over cam001..cam200 (every 5th 1280x720); 50 batches per device, one
time window each, the newest collecting; 35 % of closed batches without a project, the rest in
8 weighted projects (annotating / complete); annotations per image Poisson(3), 25 Zipf classes
(s = 1.3), 10 % polygons; status, split, sync state and eviction as catalog_spec.py; every image
an upload (root data/images); outbox rows for pending and quarantined images."""

WARMUP_S = 10.0
SLOW_MS = 1000.0  # above this p50, req/s is bounded instead of measured
GOAL_P95_MS, GOAL_MEDIAN_MS, GOAL_FLOOR_SHARE, GOAL_INGEST = 100.0, 10.0, 0.6, 300.0

# PostgreSQL settings of the run (the rest are the defaults of initdb): sized for this
# 24 GB / 2 vCPU machine. jit off: compiling a plan costs tens of ms on a 10M-row count.
PG_SETTINGS = {
    "listen_addresses": HOST,
    "max_connections": "200",
    "shared_buffers": "4GB",
    "effective_cache_size": "16GB",
    "work_mem": "32MB",
    "maintenance_work_mem": "2GB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
    "max_parallel_maintenance_workers": "2",
    "jit": "off",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the cluster ------------------------------------------------------------------------------


def _bin_dir() -> Path:
    import glob

    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise SystemExit(
            "no PostgreSQL binaries under /usr/lib/postgresql (apt install postgresql)"
        )
    return Path(found[-1]).parent


class Cluster:
    """A PostgreSQL cluster in ``base/pg``, kept between runs."""

    def __init__(self, base: Path) -> None:
        self.base = base.resolve()
        self.pg = self.base / "pg"
        self.sock = self.base / "sock"
        self.bin = _bin_dir()
        self.state_path = self.base / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.as_root = os.geteuid() == 0
        self.prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []

    def save_state(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1) + "\n")

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.prefix, *cmd], check=check, capture_output=True, text=True, timeout=600
        )

    @property
    def port(self) -> int:
        return int(self.state["port"])

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{dbname}"

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        for folder in (self.pg, self.sock):
            folder.mkdir(exist_ok=True)
            if self.as_root:
                shutil.chown(folder, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.pg),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.state["port"] = servers.free_port()
        self.save_state()

    def running(self) -> bool:
        return (
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.pg), "status", check=False
            ).returncode
            == 0
        )

    def start(self, fsync: bool = True) -> None:
        """Start it (with ``fsync`` as asked; restarted if it runs with the other one)."""
        if not (self.pg / "PG_VERSION").exists():
            self.init()
        if self.running():
            if self.show("fsync") == ("on" if fsync else "off"):
                return
            self.stop()
        settings = {**PG_SETTINGS, "fsync": "on" if fsync else "off"}
        if not fsync:  # generation only: a crash means generating again
            settings.update(full_page_writes="off", synchronous_commit="off")
        options = f"-p {self.port} -k {self.sock} " + " ".join(
            f"-c {k}={v}" for k, v in settings.items()
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.pg),
            "-l",
            str(self.pg / "server.log"),
            "-w",
            "-t",
            "300",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.pg), "-w", "-t", "600", "-m", "fast", "stop"
        )

    def connect(self, dbname: str = "postgres", autocommit: bool = True):
        import psycopg

        return psycopg.connect(self.url(dbname), autocommit=autocommit)

    def show(self, name: str) -> str:
        with self.connect() as conn:
            return conn.execute(f"SHOW {name}").fetchone()[0]

    def has_catalog(self) -> bool:
        with self.connect() as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DBNAME,))
            return found.fetchone() is not None and bool(self.state.get("generated"))


# -- generation -------------------------------------------------------------------------------


def u(expr: str, k: int) -> str:
    """A uniform value in [0, 1) from a hash of ``expr`` (an integer) and the stream ``k``."""
    return f"((hashint8extended(({expr})::bigint, {k}) & 4503599627370495)::float8 / 4503599627370496.0)"


def _array(values) -> str:
    return "ARRAY[" + ",".join(repr(float(v)) for v in values) + "]::float8[]"


def _poisson_cdf(mean: float, upto: int) -> list[float]:
    out, total = [], 0.0
    for k in range(upto + 1):
        total += math.exp(-mean) * mean**k / math.factorial(k)
        out.append(total)
    return out


def bulk_tables_state(conn) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(index name, definition) of every secondary index and (table, name, definition) of
    every foreign key of the bulk-loaded tables."""
    tables = "('image'::regclass, 'annotation'::regclass, 'outbox'::regclass)"
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
        f"WHERE indrelid IN {tables} AND indexrelid NOT IN "
        "(SELECT conindid FROM pg_constraint WHERE contype IN ('p', 'u', 'x'))"
    ).fetchall()
    fks = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE contype = 'f' AND (conrelid IN {tables} OR confrelid IN {tables})"
    ).fetchall()
    return indexes, fks


def count_trigger_statements() -> dict[str, list[str]]:
    from edgecatalog.engines.postgres import ENGINE
    from edgecatalog.listing.counts import COUNT_TABLES

    out: dict[str, list[str]] = dict(ENGINE.class_set_triggers())
    out.update(ENGINE.confidence_triggers())
    out.update(ENGINE.zone_triggers())
    for table in COUNT_TABLES:
        out.update(ENGINE.count_triggers(table))
    return out


# An edited image's updated_at: 1 h to 3 days after it arrived, and before the catalog's end
# (spread over what is left, not capped at one value: 190,000 images sharing one updated_at
# made the updated_at sort a 190,000-row tie to sort by id).
UPDATED = (
    "(created + CASE WHEN created + (3600 + floor(" + u("{id}", 11) + " * 255600))::bigint "
    f"* 1000000 < {END_US} THEN (3600 + floor(" + u("{id}", 11) + " * 255600))::bigint * 1000000 "
    f"ELSE floor(({END_US - 1} - created) * " + u("{id}", 14) + ")::bigint END)"
)


def image_sql(lo: int, hi: int, n_images: int, n_devices: int, root_id: int) -> str:
    step = (END_US - START_US - 10_000_000) // n_images
    window = (END_US - START_US) // N_WINDOWS
    r3, r4, r5 = u("g.id", 3), u("id", 4), u("g.id", 5)
    return f"""
INSERT INTO image (id, filename, storage_key, width, height, device_id, batch_id,
  annotation_status, split, split_locked, version_id, created_at, updated_at, captured_at,
  sha256, byte_size, root_id, model_id, model_version, source, sync_state, synced_at,
  remote_id, remote_batch_id, evicted_at)
SELECT id, filename, key, CASE WHEN d % 5 = 0 THEN 1280 ELSE 1920 END,
  CASE WHEN d % 5 = 0 THEN 720 ELSE 1080 END, d, batch_id, status, split,
  status = 'completed' AND split <> 'none' AND {u("id", 6)} < 0.05,
  CASE WHEN project_id IN (1, 2, 3) AND stage = 'complete' AND status = 'completed'
    AND {u("id", 10)} < 0.5 THEN project_id END,
  created,
  CASE WHEN status = 'pending' THEN created ELSE {UPDATED.format(id="id")} END,
  captured, encode(sha256(convert_to('bench:' || id, 'UTF8')), 'hex'),
  120000 + floor({u("id", 9)} * 330001)::bigint, {root_id}, 'yolov8n-edge', '2026.10.1',
  'upload', sync_state,
  CASE WHEN sync_state = 'synced' THEN created + (5 + floor({u("id", 12)} * 596))::bigint * 1000000 END,
  CASE WHEN sync_state = 'synced' THEN (5000000 + id)::text ELSE '' END,
  CASE WHEN sync_state = 'synced' THEN (90000 + batch_id)::text ELSE '' END,
  CASE WHEN sync_state = 'synced' AND {END_US} - created > {20 * DAY_US} AND {u("id", 13)} < 0.3
    THEN created + {20 * DAY_US} END
FROM (
  SELECT h.*, 'raw-data/' || md5('k' || id)::uuid::text || '_' || filename AS key,
    CASE WHEN status = 'completed' THEN
      CASE WHEN {r4} < 0.7 THEN 'train' WHEN {r4} < 0.85 THEN 'val' WHEN {r4} < 0.95 THEN 'test'
        ELSE 'none' END
    ELSE CASE WHEN {r4} < 0.05 THEN 'train' ELSE 'none' END END AS split
  FROM (
    SELECT g.*, b.project_id, b.stage,
      CASE WHEN b.project_id IS NULL THEN CASE WHEN {r3} < 0.1 THEN 'completed' ELSE 'pending' END
        WHEN b.stage = 'annotating' THEN
          CASE WHEN {r3} < 0.4 THEN 'pending' WHEN {r3} < 0.6 THEN 'in_progress' ELSE 'completed' END
        ELSE CASE WHEN {r3} < 0.9 THEN 'completed' WHEN {r3} < 0.95 THEN 'in_progress'
          ELSE 'pending' END END AS status,
      CASE WHEN {END_US} - created > {2 * DAY_US} THEN
          CASE WHEN {r5} < 0.97 THEN 'synced' WHEN {r5} < 0.971 THEN 'quarantined' ELSE 'pending' END
        ELSE CASE WHEN {r5} < 0.4 THEN 'synced' ELSE 'pending' END END AS sync_state,
      'cam' || lpad(d::text, 3, '0') || '_'
        || to_char(to_timestamp(captured / 1000000), 'YYYYMMDD_HH24MISS') || '_'
        || lpad(g.id::text, 8, '0') || '.jpg' AS filename
    FROM (
      SELECT id, created, created - (200000 + floor({u("id", 2)} * 4800000))::bigint AS captured,
        d, least({N_WINDOWS - 1}, (created - {START_US}) / {window}) * {n_devices} + d AS batch_id
      FROM (
        SELECT id, {START_US + 6_000_000}::bigint + (id - 1) * {step} AS created,
          1 + floor({u("id", 1)} * {n_devices})::int AS d
        FROM generate_series({lo}::bigint, {hi - 1}::bigint) AS id
      ) s
    ) g JOIN batch b ON b.id = g.batch_id
  ) h
) k ORDER BY id"""


def annotation_sql(lo: int, hi: int) -> str:
    classes = "ARRAY[" + ",".join(f"'{c}'" for c in spec.CLASSES) + "]"
    cum = spec.CLASS_CUM_WEIGHTS
    class_bounds = _array([0.0] + [c / cum[-1] for c in cum[:-1]])
    poisson = _array(_poisson_cdf(3.0, 14))
    key = "(i.id * 16 + z)"
    return f"""
INSERT INTO annotation (image_id, class_value, type, geometry, x_center, y_center, width,
  height, confidence, source, z_order, created_at, updated_at)
SELECT image_id, class_value, CASE WHEN poly THEN 'polygon' ELSE 'bbox' END,
  CASE WHEN poly THEN '[' || round((xc - w / 2) * pw) || ',' || round(yc * ph) || ','
      || round(xc * pw) || ',' || round((yc - h / 2) * ph) || ',' || round((xc + w / 2) * pw)
      || ',' || round(yc * ph) || ',' || round(xc * pw) || ',' || round((yc + h / 2) * ph) || ']'
    ELSE '[' || round((xc - w / 2) * pw) || ',' || round((yc - h / 2) * ph) || ','
      || round((xc + w / 2) * pw) || ',' || round((yc + h / 2) * ph) || ']' END,
  xc, yc, w, h, CASE WHEN manual THEN NULL ELSE round((0.25 + rc * 0.74)::numeric, 3)::float8 END,
  CASE WHEN manual THEN 'manual' ELSE 'model' END, z, at, at
FROM (
  SELECT s.*, w / 2 + rx * (1 - w) AS xc, h / 2 + ry * (1 - h) AS yc FROM (
    SELECT i.id AS image_id, z, i.width AS pw, i.height AS ph, i.created_at AS at,
      ({classes})[width_bucket({u(key, 20)}, {class_bounds})] AS class_value,
      i.annotation_status = 'completed' AND {u("i.id", 8)} < 0.2 AS manual,
      {u(key, 21)} < 0.1 AS poly, 0.02 + {u(key, 22)} * 0.28 AS w,
      0.02 + {u(key, 23)} * 0.28 AS h, {u(key, 24)} AS rx, {u(key, 25)} AS ry,
      {u(key, 26)} AS rc
    FROM image i CROSS JOIN LATERAL
      generate_series(0, width_bucket({u("i.id", 7)}, {poisson}) - 1) AS z
    WHERE i.id >= {lo} AND i.id < {hi}
  ) s
) a ORDER BY image_id, z"""


def generate(cluster: Cluster, n_images: int, n_devices: int, data_dir: Path) -> dict:
    """Build the site catalog in database ``site``; returns the summary (seconds per step)."""
    from edgecatalog import db
    from edgecatalog.engines import postgres
    from edgecatalog.engines.postgres import ENGINE
    from edgecatalog.listing.counts import COUNT_TABLES

    steps: dict[str, float] = {}
    began = time.monotonic()

    def step(name: str, since: float) -> float:
        now = time.monotonic()
        steps[name] = round(now - since, 1)
        log(f"{name}: {steps[name]} s")
        return now

    with cluster.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DBNAME}")
    database = db.bind(postgres.open_database(cluster.url(DBNAME)))
    try:
        db.migrate(database)
    finally:
        database.close()
    t = step("migrate", began)
    images_root = str((data_dir / "images").resolve())
    conn = cluster.connect(DBNAME)
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET work_mem = '256MB'")
    for name in count_trigger_statements():
        conn.execute(ENGINE.drop_trigger(name))
    indexes, fks = bulk_tables_state(conn)
    for table, name, _ in fks:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    log(f"dropped {len(indexes)} indexes, {len(fks)} foreign keys, the count triggers")
    conn.execute(
        "INSERT INTO project (id, name, description, created_at, updated_at) "
        "SELECT p, 'project-' || lpad(p::text, 2, '0'), 'site project ' || p, %s, %s "
        "FROM generate_series(1, %s) p",
        (START_US, START_US, N_PROJECTS),
    )
    conn.execute(
        "INSERT INTO device (id, device_id, name, created_at) SELECT d, "
        "'cam' || lpad(d::text, 3, '0'), 'cam' || lpad(d::text, 3, '0'), %s "
        "FROM generate_series(1, %s) d",
        (START_US, n_devices),
    )
    conn.execute(
        "INSERT INTO dataset_version (id, project_id, version_name, created_at) "
        "SELECT v, v, 'project-' || lpad(v::text, 2, '0') || '-v1', %s FROM generate_series(1, 3) v",
        (END_US - 5 * DAY_US,),
    )
    conn.execute("INSERT INTO file_root (id, path) VALUES (1, %s)", (images_root,))
    window = (END_US - START_US) // N_WINDOWS
    thresholds = [0.0] + [sum(PROJECT_WEIGHTS[:k]) / sum(PROJECT_WEIGHTS) for k in range(1, 8)]
    w = f"((b - 1) / {n_devices})"
    conn.execute(
        f"""INSERT INTO batch (id, name, device_id, project_id, stage, image_count, opened_at,
          closed_at, created_at, updated_at)
        SELECT b, '', (b - 1) % {n_devices} + 1,
          CASE WHEN {w} = {N_WINDOWS - 1} OR {u("b", 101)} < 0.35 THEN NULL
            ELSE width_bucket({u("b", 102)}, {_array(thresholds)}) END,
          CASE WHEN {w} = {N_WINDOWS - 1} THEN 'collecting'
            WHEN {u("b", 101)} < 0.35 THEN
              CASE WHEN {u("b", 103)} < 0.6 THEN 'complete' ELSE 'unassigned' END
            WHEN {u("b", 104)} < 0.5 THEN 'annotating' ELSE 'complete' END,
          0, {START_US} + {w} * {window}, NULL, {START_US} + {w} * {window},
          {START_US} + {w} * {window}
        FROM generate_series(1, {N_WINDOWS * n_devices}) b"""
    )
    t = step("reference rows and batches", t)
    chunk = 1_000_000
    for lo in range(1, n_images + 1, chunk):
        hi = min(n_images + 1, lo + chunk)
        conn.execute(image_sql(lo, hi, n_images, n_devices, 1))
        log(f"  images {hi - 1:,}")
    t = step("images", t)
    for lo in range(1, n_images + 1, chunk):
        hi = min(n_images + 1, lo + chunk)
        conn.execute(annotation_sql(lo, hi))
        log(f"  annotations of images < {hi:,}")
    t = step("annotations", t)
    conn.execute(
        """INSERT INTO outbox (image_id, kind, idempotency_key, payload, state, attempts,
          next_attempt_at, last_status, last_error, byte_size, created_at, updated_at)
        SELECT i.id, 'upload', encode(sha256(convert_to(d.device_id || E'\\n' || i.sha256,
          'UTF8')), 'hex'), '{}', i.sync_state, CASE WHEN q THEN 10 ELSE 0 END, 0,
          CASE WHEN q THEN 422 END,
          CASE WHEN q THEN 'upstream rejected the upload: 422 VALIDATION_ERROR' ELSE '' END,
          i.byte_size, i.created_at, i.created_at
        FROM (SELECT *, sync_state = 'quarantined' AS q FROM image
              WHERE sync_state IN ('pending', 'quarantined')) i
        JOIN device d ON d.id = i.device_id ORDER BY i.id"""
    )
    conn.execute(
        f"""UPDATE batch b SET image_count = s.n, opened_at = s.first, created_at = s.first,
          closed_at = CASE WHEN b.stage = 'collecting' THEN NULL
            ELSE greatest(s.last, b.opened_at + {window}) END,
          updated_at = CASE WHEN b.stage = 'collecting' THEN s.last
            ELSE greatest(s.last, b.opened_at + {window}) END,
          name = 'cam' || lpad(b.device_id::text, 3, '0') || ' '
            || to_char(to_timestamp(s.first / 1000000), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        FROM (SELECT batch_id, count(*) AS n, min(created_at) AS first, max(created_at) AS last
              FROM image GROUP BY batch_id) s WHERE s.batch_id = b.id"""
    )
    conn.execute(
        "UPDATE batch SET name = 'cam' || lpad(device_id::text, 3, '0') || ' empty ' || id "
        "WHERE name = ''"
    )
    t = step("outbox and batch totals", t)
    for table, name, definition in fks:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    t = step("foreign keys", t)
    conn.execute("SET maintenance_work_mem = '2GB'")
    conn.execute("SET max_parallel_maintenance_workers = 2")
    for name, definition in indexes:
        started = time.monotonic()
        conn.execute(definition)
        log(f"  {name}: {time.monotonic() - started:.1f} s")
    t = step("indexes", t)
    started = time.monotonic()
    for sql in ENGINE.class_set_backfill():  # the class sets first: counted by them
        conn.execute(sql)
    log(f"  class sets: {time.monotonic() - started:.1f} s")
    for sql in ENGINE.confidence_backfill():  # likewise the confidence bits
        conn.execute(sql)
    for table in COUNT_TABLES:
        started = time.monotonic()
        for sql in ENGINE.backfill(table):
            conn.execute(sql)
        log(f"  backfill {table.name}: {time.monotonic() - started:.1f} s")
    for sql in ENGINE.zone_backfill():
        conn.execute(sql)
    for statements in count_trigger_statements().values():
        for sql in statements:
            conn.execute(sql)
    t = step("count tables (engine backfill) and triggers", t)
    for table in (
        "project",
        "device",
        "dataset_version",
        "file_root",
        "batch",
        "image",
        "annotation",
        "outbox",
    ):
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT coalesce(max(id), 1) FROM {table}))"
        )
    conn.execute("VACUUM ANALYZE")
    t = step("vacuum analyze", t)
    counts = {
        name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        for name in ("image", "annotation", "batch", "device", "outbox")
    }
    conn.close()
    return {
        "images": counts["image"],
        "annotations": counts["annotation"],
        "batches": counts["batch"],
        "devices": counts["device"],
        "outbox": counts["outbox"],
        "max_image_id": n_images,
        "max_batch_id": N_WINDOWS * n_devices,
        "steps_s": steps,
        "seconds": round(time.monotonic() - began, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


EXACTNESS = (
    # (what, the count-table sum, the COUNT(*) it must equal)
    (
        "all images",
        "SELECT sum(n) FROM image_total_count",
        "SELECT count(*) FROM image",
    ),
    (
        "device 7, split val",
        "SELECT sum(n) FROM image_total_count WHERE device_id = 7 AND split = 'val'",
        "SELECT count(*) FROM image WHERE device_id = 7 AND split = 'val'",
    ),
    (
        "project 1 (batches), in_progress",
        (
            "SELECT sum(n) FROM image_facet_count WHERE annotation_status = 'in_progress' AND "
            "batch_id IN (SELECT id FROM batch WHERE project_id = 1)"
        ),
        (
            "SELECT count(*) FROM image WHERE annotation_status = 'in_progress' AND "
            "batch_id IN (SELECT id FROM batch WHERE project_id = 1)"
        ),
    ),
    (
        "class cat",
        "SELECT sum(n) FROM image_class_count WHERE class_value = 'cat'",
        "SELECT count(DISTINCT image_id) FROM annotation WHERE class_value = 'cat'",
    ),
    (
        "class person, sync quarantined",
        (
            "SELECT sum(n) FROM image_class_facet WHERE class_value = 'person' "
            "AND sync_state = 'quarantined'"
        ),
        (
            "SELECT count(*) FROM image i WHERE sync_state = 'quarantined' AND EXISTS "
            "(SELECT 1 FROM annotation a WHERE a.image_id = i.id AND a.class_value = 'person')"
        ),
    ),
)


def check_exact(cluster: Cluster) -> list[dict]:
    out = []
    with cluster.connect(DBNAME) as conn:
        for what, counted, direct in EXACTNESS:
            a = int(conn.execute(counted).fetchone()[0] or 0)
            b = int(conn.execute(direct).fetchone()[0])
            out.append({"what": what, "count_table": a, "count_star": b, "same": a == b})
    return out


# -- the floor --------------------------------------------------------------------------------


def floor_app(url: str):
    """A bare WSGI app: the list as hand-written SQL through psycopg (one connection per
    waitress thread), the naive plan (``COUNT(*)``, joined ``ORDER BY ... LIMIT``), the same
    envelope and fields as floor_app.py (the SQLite benchmarks' floor)."""
    from urllib.parse import parse_qs

    import floor_app as sqlite_floor
    import psycopg

    local = threading.local()

    class Conn:
        """psycopg with the SQLite floor's SQL: ``?`` placeholders, and ILIKE as the service
        uses on PostgreSQL (case-insensitive search)."""

        def __init__(self) -> None:
            self.conn = psycopg.connect(url, autocommit=True)

        def execute(self, sql: str, args=()):
            sql = sql.replace("?", "%s").replace(" LIKE ", " ILIKE ")
            return self.conn.execute(sql, args)

    def app(environ, start_response):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = Conn()
        if environ.get("PATH_INFO") != "/data/images":
            return sqlite_floor.respond(start_response, "404 Not Found", {"success": False})
        q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if "project_id" in q and q["project_id"] != "null":
            q["project_id"] = str(int(q["project_id"]))
        body = sqlite_floor.list_images(conn, q)
        return sqlite_floor.respond(start_response, "200 OK", body)

    return app


def serve_floor(url: str, port: int, threads: int) -> None:
    import waitress

    waitress.serve(
        floor_app(url), host=HOST, port=port, threads=threads, ident="floor", _quiet=True
    )


# -- the gateway ------------------------------------------------------------------------------


def write_config(work: Path, data_dir: Path, url: str, port: int, threads: int) -> Path:
    path = work / "gateway.toml"
    text = (
        f'[server]\nhost = "{HOST}"\nport = {port}\nthreads = {threads}\n'
        "connection_limit = 200\n"
        f'[database]\nurl = "{url}"\n'
        f'[storage]\ndata_dir = "{data_dir.resolve()}"\n'
        f'[auth]\njwt_secret = "{secrets.token_hex(32)}"\n'
        # An upstream is configured but sync is off: pending images stay pending.
        f'[upstream]\nenabled = false\nbase_url = "http://{HOST}:9/api"\n'
        '[logging]\nlevel = "WARNING"\n'
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def edgecatalog_exe() -> str:
    return shutil.which("edgecatalog", path=str(Path(sys.executable).parent)) or "edgecatalog"


def start_gateway(config: Path, port: int, work: Path, name: str = "service") -> servers.Server:
    from edgecatalog.auth import Authenticator
    from edgecatalog.config import load_settings

    token = Authenticator(load_settings(config, environ={})).issue_token("bench", "read", 6 * 3600)
    headers = {"Authorization": f"Bearer {token}"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    started = time.monotonic()
    log_fh = open(work / f"{name}.log", "ab")  # noqa: SIM115 - the child's for its life
    proc = subprocess.Popen(
        [edgecatalog_exe(), "serve", "--config", str(config)],
        stdout=log_fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://{HOST}:{port}"
    servers.wait_ready(f"{url}/data/images?limit=1", headers, proc, timeout=300)
    return servers.Server(name, url, proc, headers, time.monotonic() - started)


def start_floor_server(url: str, threads: int, work: Path) -> servers.Server:
    port = servers.free_port()
    log_fh = open(work / "floor.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve-floor",
            url,
            "--port",
            str(port),
            "--threads",
            str(threads),
        ],
        stdout=log_fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://{HOST}:{port}"
    servers.wait_ready(f"{base}/data/images?limit=1", {}, proc, timeout=600)
    return servers.Server("floor", base, proc, {})


# -- the matrix -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    params: dict[str, str] = field(default_factory=dict)

    def url(self) -> str:
        return "/data/images" + ("?" + urlencode(self.params) if self.params else "")


def read_facts(cluster: Cluster) -> dict:
    """Values picked from the catalog so each filter selects what its name says."""
    with cluster.connect(DBNAME) as conn:
        one = lambda sql, *a: conn.execute(sql, a).fetchone()[0]
        device = one(
            "SELECT d.device_id FROM device d JOIN image_total_count t ON t.device_id = d.id "
            "GROUP BY d.device_id ORDER BY sum(t.n), d.device_id "
            "LIMIT 1 OFFSET (SELECT count(*) / 2 FROM device)"
        )
        batch = one(
            "SELECT id FROM batch WHERE stage <> 'collecting' ORDER BY image_count, id "
            "LIMIT 1 OFFSET (SELECT count(*) / 2 FROM batch WHERE stage <> 'collecting')"
        )
        project = one(
            "SELECT project_id FROM batch WHERE project_id IS NOT NULL GROUP BY project_id "
            "ORDER BY sum(image_count) DESC LIMIT 1"
        )
        classes = [
            r[0] for r in conn.execute("SELECT class_value FROM image_class_count ORDER BY n DESC")
        ]
        middle = one("SELECT max(id) / 2 FROM image")
        filename = one("SELECT filename FROM image WHERE id = %s", middle)
        old = one("SELECT filename FROM image WHERE id = %s", max(1, middle // 5))
    # cam042_20261122_141502_05000000.jpg: a second (~4 images), a minute (~230), a day
    # (1/30 of the catalog, all of it in one stretch of the sort order)
    stamp = filename.split("_", 1)[1]
    return {
        "device": device,
        "batch": batch,
        "project": project,
        "common": classes[0],
        "second": classes[1],
        "rare": classes[-1],
        "filename": filename,
        "search_second": stamp[:15],
        "search_minute": stamp[:13],
        "search_day_old": old.split("_")[1],
        "search_day": stamp[:8],
    }


def site_cases(f: dict) -> list[Case]:
    dev, proj, batch = f["device"], str(f["project"]), str(f["batch"])
    common, second, rare = f["common"], f["second"], f["rare"]
    cases = [
        Case("no filter"),
        Case("device_id", {"device_id": dev}),
        Case("project_id", {"project_id": proj}),
        Case("project_id=null", {"project_id": "null"}),
        Case("project_id+stage", {"project_id": proj, "stage": "annotating"}),
        Case("batch_id", {"batch_id": batch}),
        Case("annotation_status", {"annotation_status": "in_progress"}),
        Case("split", {"split": "val"}),
        Case("sync_state rare", {"sync_state": "quarantined"}),
        Case("sync_state pending", {"sync_state": "pending"}),
        Case("filename exact", {"filename": f["filename"]}),
        Case("class common", {"class_values": common}),
        Case("class rare", {"class_values": rare}),
        Case("class 2 common", {"class_values": f"{common},{second}"}),
        Case("class rare+common", {"class_values": f"{rare},{common}"}),
        Case("search rare (second)", {"search": f["search_second"]}),
        Case("search minute", {"search": f["search_minute"]}),
        Case("search common cam1", {"search": "cam1"}),
        Case("search 2-char", {"search": "07"}),
        Case("search day (clustered)", {"search": f["search_day"]}),
        Case("search old day (clustered)", {"search": f["search_day_old"]}),
        Case(
            "device+status+split",
            {"device_id": dev, "annotation_status": "completed", "split": "train"},
        ),
        Case("device+class rare", {"device_id": dev, "class_values": rare}),
        Case("device+class common", {"device_id": dev, "class_values": common}),
        Case("device+2 classes", {"device_id": dev, "class_values": f"{common},{second}"}),
        Case("device+search minute", {"device_id": dev, "search": f["search_minute"]}),
        Case("device+search cam1", {"device_id": dev, "search": "cam1"}),
        Case("split+sync rare", {"split": "val", "sync_state": "quarantined"}),
        Case(
            "status+class rare+sync",
            {"annotation_status": "pending", "class_values": rare, "sync_state": "pending"},
        ),
        Case(
            "project+stage+split+class",
            {"project_id": proj, "stage": "complete", "split": "val", "class_values": common},
        ),
        Case("project+class rare", {"project_id": proj, "class_values": rare}),
        Case(
            "project=null+2 classes", {"project_id": "null", "class_values": f"{common},{second}"}
        ),
        Case("batch+class common", {"batch_id": batch, "class_values": common}),
        Case("batch+search", {"batch_id": batch, "search": "cam"}),
        Case("search day+split", {"search": f["search_day"], "split": "val"}),
        Case("sync rare+search cam1", {"sync_state": "quarantined", "search": "cam1"}),
        Case("sort created_at asc", {"sort": "created_at", "order": "asc"}),
        Case("sort updated_at desc", {"sort": "updated_at", "order": "desc"}),
        Case("sort filename asc", {"sort": "filename", "order": "asc"}),
        Case("sort filename desc+split", {"sort": "filename", "order": "desc", "split": "test"}),
        Case(
            "class rare sort updated asc",
            {"class_values": rare, "sort": "updated_at", "order": "asc"},
        ),
        Case("offset 10000", {"offset": "10000"}),
        Case("offset 100000", {"offset": "100000"}),
        Case("device offset 20000", {"device_id": dev, "offset": "20000"}),
        Case("class rare offset 5000", {"class_values": rare, "offset": "5000"}),
        Case("annotations limit=100", {"include_annotations": "true", "limit": "100"}),
        Case(
            "annotations+class rare",
            {"include_annotations": "true", "limit": "100", "class_values": rare},
        ),
    ]
    return cases


def check_answers(case: Case, svc: servers.Server, floor: servers.Server) -> str:
    import requests

    a = requests.get(svc.url + case.url(), headers=svc.headers, timeout=600)
    b = requests.get(floor.url + case.url(), timeout=600)
    if a.status_code != 200 or b.status_code != 200:
        return f"status {a.status_code}/{b.status_code}"
    ja, jb = a.json(), b.json()
    if ja["meta"]["total"] != jb["meta"]["total"]:
        return f"total {ja['meta']['total']} != floor {jb['meta']['total']}"
    if [r["id"] for r in ja["data"]] != [r["id"] for r in jb["data"]]:
        return "page ids differ"
    return f"same (total {ja['meta']['total']:,})"


def adversarial_cases(cluster: Cluster) -> list:
    """``adversarial.py``'s matrix, made from this catalog (its heavy images added once,
    through the triggers)."""
    import adversarial

    with cluster.connect(DBNAME, autocommit=False) as conn:
        return adversarial.cases_on(adversarial.Db(conn, "postgres"))


def run_matrix(args, cluster: Cluster, work: Path, data_dir: Path) -> dict:
    if args.matrix == "adversarial":
        facts: dict = {}
        every = adversarial_cases(cluster)
    else:
        facts = read_facts(cluster)
        every = site_cases(facts)
    cases = [c for c in every if not args.only or re.search(args.only, c.name)]
    port = servers.free_port()
    config = write_config(work, data_dir, cluster.url(DBNAME), port, args.threads)
    started: list[servers.Server] = []
    rows = []
    try:
        svc = start_gateway(config, port, work)
        started.append(svc)
        log(f"gateway up in {svc.cold_start_s:.2f} s (VmHWM {svc.peak_rss_kb() / 1024:.1f} MB)")
        floor = start_floor_server(cluster.url(DBNAME), args.threads, work)
        started.append(floor)
        for case in cases:
            row: dict = {"name": case.name, "url": case.url()}
            # A first request each (caches, the search totals' first count), checked.
            row["check"] = check_answers(case, svc, floor)
            for server in (svc, floor):
                full = server.url + case.url()
                lat = load.measure_latency(full, server.headers, args.duration)
                if lat.p50_ms > SLOW_MS:
                    # Seconds a request: c requests in flight cannot finish faster than one
                    # p50 each, so c / p50 bounds its req/s from above without minutes of
                    # load on the database (the floor's: the ratio is then a lower bound).
                    bound = args.concurrency / (lat.p50_ms / 1000)
                    row[server.name] = {**asdict(lat), "rps": bound, "rps_errors": 0}
                    row[f"{server.name}_rps_bound"] = True
                    continue
                thr = load.measure_throughput(full, server.headers, args.duration, args.concurrency)
                row[server.name] = {**asdict(lat), "rps": thr.rps, "rps_errors": thr.errors}
            s, fl = row["service"], row["floor"]
            row["ratio"] = s["rps"] / fl["rps"] if fl["rps"] else None
            row["p95_ok"] = s["p95_ms"] <= GOAL_P95_MS
            row["ratio_ok"] = row["ratio"] is not None and row["ratio"] >= GOAL_FLOOR_SHARE
            row["errors"] = s["errors"] + s["rps_errors"]
            rows.append(row)
            log(
                f"  {case.name}: p50 {s['p50_ms']:.1f} p95 {s['p95_ms']:.1f} ms, "
                f"{s['rps']:.0f} req/s vs floor {fl['rps']:.0f} (p50 {fl['p50_ms']:.1f}); "
                f"{row['check']}"
            )
        rss = {s.name: round((s.peak_rss_kb() or 0) / 1024, 1) for s in started}
    finally:
        for server in started:
            server.stop()
        config.unlink(missing_ok=True)
    return {"facts": facts, "rows": rows, "peak_rss_mb": rss, "cold_start_s": svc.cold_start_s}


# -- ingest -----------------------------------------------------------------------------------


def base_jpeg(kb: int) -> bytes:
    """One real noise JPEG of about ``kb`` KB (noise keeps JPEG from shrinking it)."""
    from PIL import Image as PILImage

    rng = random.Random(11)
    side = 96
    while True:
        img = PILImage.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        if buf.tell() >= kb * 1000:
            return buf.getvalue()
        side += 8


def unique_jpeg(base: bytes, tag: str) -> bytes:
    """The base JPEG with a COM segment after SOI carrying ``tag``: valid and distinct."""
    comment = tag.encode()
    return base[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + base[2:]


def ingest_worker(spec_json: str) -> None:
    """One load-generator process: a thread per device, each sending what the sync worker
    sends, back to back, until the deadline; prints its results as one JSON line."""
    job = json.loads(spec_json)
    from edgecatalog.catalog import idempotency_key

    base = base_jpeg(job["kb"])
    width = height = 0
    with contextlib.suppress(Exception):
        from PIL import Image as PILImage

        width, height = PILImage.open(io.BytesIO(base)).size
    results: dict[str, list] = {}
    deadline = job["deadline"]
    time.sleep(max(0.0, job["start_at"] - time.time()))

    def device(device_id: str, key: str) -> None:
        done, errors, latencies = [], [], []
        rng = random.Random(device_id)
        conn = http.client.HTTPConnection(HOST, job["port"], timeout=120)
        n = 0
        while time.time() < deadline:
            n += 1
            captured = time.time() - 5
            stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(captured))
            filename = f"{device_id}_{stamp}_{job['run']}{n:06d}.jpg"
            data = unique_jpeg(base, f"{job['run']} {device_id} {n}")
            sha = hashlib.sha256(data).hexdigest()
            annotations = []
            for z in range(3):
                w, h = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)
                annotations.append(
                    {
                        "class_value": rng.choice(spec.CLASSES[:8]),
                        "type": "bbox",
                        "geometry": [
                            rng.uniform(w / 2, 1 - w / 2),
                            rng.uniform(h / 2, 1 - h / 2),
                            w,
                            h,
                        ],
                        "confidence": round(rng.uniform(0.3, 0.99), 3),
                        "source": "model",
                        "z_order": z,
                    }
                )
            metadata = {
                "model_id": "yolov8n-edge",
                "model_version": "2026.10.1",
                "source": "upload",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(captured))
                + f".{int(captured % 1 * 1e6):06d}Z",
                "device_id": device_id,
                "filename": filename,
                "sha256": sha,
                "annotations": annotations,
            }
            boundary = os.urandom(16).hex()
            meta = json.dumps(metadata, separators=(",", ":"))
            body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n'
                    f"Content-Type: application/json\r\n\r\n{meta}\r\n"
                    f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                    f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
                ).encode()
                + data
                + f"\r\n--{boundary}--\r\n".encode()
            )
            headers = {
                "X-Device-Key": key,
                "Idempotency-Key": idempotency_key(device_id, sha),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(body)),
            }
            began = time.time()
            try:
                conn.request("POST", "/device/images/upload", body=body, headers=headers)
                resp = conn.getresponse()
                text = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(HOST, job["port"], timeout=120)
                continue
            ended = time.time()
            if resp.status == 201:
                done.append(round(ended, 3))
                latencies.append(round((ended - began) * 1000, 1))
            else:
                errors.append(f"{resp.status} {text[:200]!r}")
                if resp.status == 429:
                    time.sleep(float(resp.getheader("Retry-After", "1")))
        conn.close()
        results[device_id] = [done, errors, latencies]

    threads = [threading.Thread(target=device, args=(d, k), daemon=True) for d, k in job["devices"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"results": results, "width": width, "height": height}))


def _cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _postgres_pids() -> list[int]:
    import pwd

    try:
        uid = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        uid = os.getuid()
    return [
        int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and p.stat().st_uid == uid
    ]


def _machine_idle() -> tuple[float, float]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return values[3] + values[4], sum(values)


def sample_cpu(out: dict, start: float, end: float, serve_pid: int, load_pids: list[int]) -> None:
    """CPU seconds spent between ``start`` and ``end`` (wall clock) by the gateway, by every
    PostgreSQL process and by the load generator; and the machine's idle share."""
    time.sleep(max(0.0, start - time.time()))
    pg = _postgres_pids()
    before = (_cpu_seconds([serve_pid]), _cpu_seconds(pg), _cpu_seconds(load_pids), _machine_idle())
    time.sleep(max(0.0, end - time.time()))
    pg_after = _postgres_pids()  # backends that came and went in between are missed
    after = (
        _cpu_seconds([serve_pid]),
        _cpu_seconds(pg_after),
        _cpu_seconds(load_pids),
        _machine_idle(),
    )
    out["gateway"] = after[0] - before[0]
    out["postgres"] = after[1] - before[1]
    out["load generator"] = after[2] - before[2]
    idle = after[3][0] - before[3][0]
    total = after[3][1] - before[3][1]
    out["idle"] = idle / total if total else 0.0


def add_device_keys(config: Path, device_ids: list[str]) -> list[str]:
    keys = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    for device_id in device_ids:
        out = subprocess.run(
            [edgecatalog_exe(), "device-key", "add", device_id, "--config", str(config)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        keys.append(out.stdout.strip().splitlines()[-1])
    return keys


def run_ingest(args, cluster: Cluster, work: Path, data_dir: Path) -> dict:
    gen = cluster.state["generated"]
    port = servers.free_port()
    config = write_config(work, data_dir, cluster.url(DBNAME), port, args.ingest_threads)
    with cluster.connect(DBNAME) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_batch_snapshot")
        conn.execute("CREATE TABLE bench_batch_snapshot AS SELECT * FROM batch")
        devices = [
            r[0]
            for r in conn.execute(
                "SELECT device_id FROM device ORDER BY id LIMIT %s", (args.ingest_devices,)
            )
        ]
        size_before = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    keys = add_device_keys(config, devices)
    svc = start_gateway(config, port, work, "ingest-service")
    run = secrets.token_hex(3)
    procs = []
    try:
        # Warm-up: one upload per device outside the measured window (the device-share
        # totals are read at the first upload, a GROUP BY over the catalog).
        # Everyone starts at once; the first WARMUP seconds are not measured (the device-share
        # totals are read at the first upload: a GROUP BY over the catalog).
        start_at = time.time() + 3
        window_start = start_at + WARMUP_S
        deadline = window_start + args.ingest_seconds
        per = math.ceil(len(devices) / args.ingest_procs)
        for i in range(0, len(devices), per):
            job = {
                "devices": list(zip(devices[i : i + per], keys[i : i + per])),
                "port": port,
                "kb": args.kb,
                "start_at": start_at,
                "deadline": deadline,
                "run": run,
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--ingest-worker", json.dumps(job)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        log(f"ingest: {len(devices)} devices in {len(procs)} processes for {args.ingest_seconds} s")
        cpu: dict[str, float] = {}
        sampler = threading.Thread(
            target=sample_cpu,
            args=(cpu, window_start, deadline, svc.process.pid, [p.pid for p in procs]),
            daemon=True,
        )
        sampler.start()
        outputs = [p.communicate(timeout=args.ingest_seconds + 600) for p in procs]
        sampler.join(timeout=5)
        rss_kb = svc.peak_rss_kb()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        svc.stop()
    done: list[float] = []
    errors: list[str] = []
    latencies: list[float] = []
    for out, err in outputs:
        if not out.strip():
            raise SystemExit(f"an ingest worker failed: {err[-2000:]}")
        for d_done, d_errors, d_lat in json.loads(out)["results"].values():
            done += d_done
            errors += d_errors
            latencies += d_lat
    done.sort()
    measured = [t for t in done if window_start <= t < deadline]
    seconds = deadline - window_start
    buckets = [0] * max(1, int(seconds // 10))  # whole 10 s windows
    for t in measured:
        if t < window_start + 10 * len(buckets):
            buckets[int((t - window_start) // 10)] += 1
    latencies.sort()
    with cluster.connect(DBNAME) as conn:
        stored = conn.execute(
            "SELECT count(*), coalesce(sum(byte_size), 0) FROM image WHERE id > %s",
            (gen["max_image_id"],),
        ).fetchone()
        anns = conn.execute(
            "SELECT count(*) FROM annotation WHERE image_id > %s", (gen["max_image_id"],)
        ).fetchone()[0]
        size_after = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    result = {
        "devices": len(devices),
        "processes": len(procs),
        "server_threads": args.ingest_threads,
        "seconds": round(seconds, 1),
        "accepted": len(done),
        "images_per_s": round(len(measured) / seconds, 1),
        "min_10s_images_per_s": round(min(buckets) / 10, 1),
        "max_10s_images_per_s": round(max(buckets) / 10, 1),
        "errors": len(errors),
        "first_errors": errors[:5],
        "latency_ms_p50": load.percentile(latencies, 50) if latencies else None,
        "latency_ms_p95": load.percentile(latencies, 95) if latencies else None,
        "rows_stored": stored[0],
        "annotations_stored": anns,
        "mean_kb": round(stored[1] / max(1, stored[0]) / 1000, 1),
        "peak_rss_mb": round((rss_kb or 0) / 1024, 1),
        # CPU ms per image accepted in the window, per party, and the machine's idle share
        "cpu_ms_per_image": {
            k: round(v * 1000 / max(1, len(measured)), 2) for k, v in cpu.items() if k != "idle"
        },
        "machine_idle_share": round(cpu.get("idle", 0.0), 3),
        "db_bytes_growth": size_after - size_before,
        "db_bytes_per_ingested_image": round((size_after - size_before) / max(1, stored[0])),
    }
    log(f"ingest: {result['images_per_s']} images/s, {result['errors']} errors")
    if not args.keep_ingested:
        cleanup_ingest(cluster, data_dir, gen, devices)
    else:
        with cluster.connect(DBNAME) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_batch_snapshot")
    config.unlink(missing_ok=True)
    return result


def cleanup_ingest(cluster: Cluster, data_dir: Path, gen: dict, devices: list[str]) -> None:
    """Back to the generated catalog: the ingested rows (their counts through the triggers),
    their files, new batches, the device keys; the batches' own columns as they were."""
    started = time.monotonic()
    with cluster.connect(DBNAME, autocommit=False) as conn:
        conn.execute("DELETE FROM image WHERE id > %s", (gen["max_image_id"],))
        conn.execute("DELETE FROM batch WHERE id > %s", (gen["max_batch_id"],))
        conn.execute(
            "UPDATE batch b SET stage = s.stage, image_count = s.image_count, "
            "closed_at = s.closed_at, updated_at = s.updated_at, opened_at = s.opened_at "
            "FROM bench_batch_snapshot s WHERE s.id = b.id AND (b.stage, b.image_count, "
            "b.closed_at, b.updated_at) IS DISTINCT FROM (s.stage, s.image_count, "
            "s.closed_at, s.updated_at)"
        )
        conn.execute("DROP TABLE bench_batch_snapshot")
        conn.execute("DELETE FROM device_key WHERE device_id = ANY(%s)", (devices,))
        conn.commit()
    with cluster.connect(DBNAME) as conn:
        conn.execute("VACUUM ANALYZE image")
        conn.execute("VACUUM ANALYZE annotation")
        conn.execute("VACUUM ANALYZE outbox")
    shutil.rmtree(data_dir / "images" / "raw-data", ignore_errors=True)
    log(f"ingested rows and files removed in {time.monotonic() - started:.0f} s")


# -- report -----------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} vCPU ({cpu}), {mem:.0f} GB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def print_report(result: dict) -> None:
    print()
    print(f"site gateway benchmark, {result['date']}; {result['machine']}; {result['pg_version']}")
    gen = result["generated"]
    print(
        f"catalog: {gen['images']:,} images, {gen['annotations']:,} annotations, "
        f"{gen['devices']} devices, {gen['batches']:,} batches; generated in {gen['seconds']} s "
        f"on {gen['date']} ({gen['steps_s']})"
    )
    for check in result["exactness"]:
        print(
            f"  exact: {check['what']}: count table {check['count_table']:,} vs COUNT(*) "
            f"{check['count_star']:,}: {'same' if check['same'] else 'DIFFERENT'}"
        )
    size = result["db_bytes"]
    print(
        f"database: {size:,} bytes = {size / gen['images']:.0f} bytes/image "
        f"(pg_database_size / images)"
    )
    matrix = result.get("matrix")
    if matrix:
        print(
            f"\nlist matrix: c=1 p50/p95 for {result['args']['duration']} s, req/s at "
            f"c={result['args']['concurrency']} for {result['args']['duration']} s; "
            f"{result['args']['threads']} waitress threads each"
        )
        head = (
            f"{'query':30} {'p50':>7} {'p95':>7} {'rps':>6} {'floor':>6} {'fl p50':>7} "
            f"{'ratio':>6}  p95  ratio  check"
        )
        print(head)
        print("-" * len(head))
        for r in matrix["rows"]:
            s, f = r["service"], r["floor"]
            print(
                f"{r['name'][:30]:30} {s['p50_ms']:7.1f} {s['p95_ms']:7.1f} {s['rps']:6.0f}"
                f"{'*' if r.get('service_rps_bound') else ' '}"
                f"{f['rps']:6.0f}{'*' if r.get('floor_rps_bound') else ' '}{f['p50_ms']:7.1f} {r['ratio'] or 0:6.2f}  "
                f"{'ok ' if r['p95_ok'] else 'NO '}  {'ok ' if r['ratio_ok'] else 'NO '}  "
                f"{r['check']}" + (f"; {r['errors']} errors" if r["errors"] else "")
            )
        print(
            f"* p50 over {SLOW_MS / 1000:g} s: req/s not measured at c="
            f"{result['args']['concurrency']} but bounded by concurrency / p50 (it cannot be "
            "faster); a bounded floor makes the ratio a lower bound, a bounded service an "
            "upper one"
        )
        s = matrix["summary"]
        print(
            f"\nmedian p50 {s['median_p50_ms']:.1f} ms (goal <= {GOAL_MEDIAN_MS:g}): "
            f"{'PASS' if s['median_ok'] else 'FAIL'}"
        )
        print(
            f"p95 <= {GOAL_P95_MS:g} ms on {s['queries'] - len(s['p95_fail'])}/{s['queries']}: "
            f"{'PASS' if not s['p95_fail'] else 'FAIL ' + str(s['p95_fail'])}"
        )
        print(
            f"req/s >= {GOAL_FLOOR_SHARE:.0%} of the floor on "
            f"{s['queries'] - len(s['ratio_fail'])}/{s['queries']} (median ratio "
            f"{s['median_ratio']:.2f}): "
            f"{'PASS' if not s['ratio_fail'] else 'FAIL ' + str(s['ratio_fail'])}"
        )
        print(
            f"exact totals (service == floor COUNT(*)) on {s['same']}/{s['queries']}: "
            f"{'PASS' if s['same'] == s['queries'] else 'FAIL'}"
        )
        print(
            f"peak RSS (VmHWM): serve {matrix['peak_rss_mb'].get('service')} MB, floor "
            f"{matrix['peak_rss_mb'].get('floor')} MB; gateway cold start "
            f"{matrix['cold_start_s']:.2f} s"
        )
    ing = result.get("ingest")
    if ing:
        print(
            f"\ningest: {ing['devices']} devices ({ing['processes']} load processes), serve with "
            f"{ing['server_threads']} threads, {ing['seconds']} s: {ing['images_per_s']} images/s "
            f"(10 s windows: min {ing['min_10s_images_per_s']}, max {ing['max_10s_images_per_s']}) "
            f"of {ing['mean_kb']} KB with 3 annotations; goal >= {GOAL_INGEST:g}: "
            f"{'PASS' if ing['min_10s_images_per_s'] >= GOAL_INGEST else 'FAIL'} (sustained = "
            f"every 10 s window); {ing['accepted']:,} accepted, {ing['errors']} errors "
            f"{ing['first_errors'][:2]}; upload latency p50 {ing['latency_ms_p50']} / p95 "
            f"{ing['latency_ms_p95']} ms; serve VmHWM {ing['peak_rss_mb']} MB; "
            f"{ing['db_bytes_per_ingested_image']} database bytes per ingested image"
        )
        print(
            f"  CPU per image: {ing['cpu_ms_per_image']} ms; machine idle "
            f"{ing['machine_idle_share']:.0%} during the window"
        )


def summarize(rows: list[dict]) -> dict:
    out = {
        "queries": len(rows),
        "median_p50_ms": statistics.median(r["service"]["p50_ms"] for r in rows),
        "p95_fail": [r["name"] for r in rows if not r["p95_ok"]],
        "ratio_fail": [r["name"] for r in rows if not r["ratio_ok"]],
        "median_ratio": statistics.median(r["ratio"] or 0 for r in rows),
        "same": sum(r["check"].startswith("same") for r in rows),
    }
    out["median_ok"] = out["median_p50_ms"] <= GOAL_MEDIAN_MS
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pgdata", type=Path, help="folder of the cluster and the gateway data")
    parser.add_argument("--images", type=int, default=10_000_000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--regenerate", action="store_true", help="build the catalog again")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per matrix phase")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8, help="waitress threads (both servers)")
    parser.add_argument("--only", help="regex: run only the matching queries")
    parser.add_argument(
        "--matrix",
        choices=("site", "adversarial"),
        default="site",
        help="the site's list matrix, or adversarial.py's hard cases made from this catalog",
    )
    parser.add_argument("--skip-matrix", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--ingest-seconds", type=float, default=300.0)
    parser.add_argument("--ingest-devices", type=int, default=20)
    parser.add_argument("--ingest-procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--ingest-threads", type=int, default=8, help="serve threads for ingest")
    parser.add_argument("--kb", type=int, default=100, help="JPEG size of the uploads")
    parser.add_argument("--keep-ingested", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--serve-floor", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ingest-worker", metavar="JOB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        serve_floor(args.serve_floor, args.port, args.threads)
        return 0
    if args.ingest_worker:
        ingest_worker(args.ingest_worker)
        return 0
    if args.pgdata is None:
        parser.error("--pgdata is required")
    cluster = Cluster(args.pgdata)
    data_dir = cluster.base / "data"
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    work = cluster.base / "run"
    work.mkdir(exist_ok=True)
    cluster.start(fsync=True)
    if args.regenerate or not cluster.has_catalog():
        cluster.start(fsync=False)
        log(f"generating {args.images:,} images over {args.devices} devices")
        cluster.state["generated"] = generate(cluster, args.images, args.devices, data_dir)
        cluster.save_state()
        cluster.stop()  # a clean shutdown writes everything out before fsync comes back on
        cluster.start(fsync=True)
    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "generated": cluster.state["generated"],
        "pg_settings": PG_SETTINGS,
    }
    with cluster.connect(DBNAME) as conn:
        result["pg_version"] = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
    log("checking the count tables against COUNT(*)")
    result["exactness"] = check_exact(cluster)
    with cluster.connect(DBNAME) as conn:
        result["db_bytes"] = conn.execute("SELECT pg_database_size(current_database())").fetchone()[
            0
        ]
    if not args.skip_matrix:
        matrix = run_matrix(args, cluster, work, data_dir)
        matrix["summary"] = summarize(matrix["rows"])
        result["matrix"] = matrix
    if not args.skip_ingest:
        result["ingest"] = run_ingest(args, cluster, work, data_dir)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
