"""Keeps the benchmark harness from rotting: a tiny catalog from benchmarks/generate.py must
have the promised rows and shapes, the real schema, and be served by the app and the floor
with the same answers for every query of the matrix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import LiveServer

from edgecatalog import create_app, db
from edgecatalog.auth import Authenticator
from edgecatalog.config import load_settings
from edgecatalog.models import database

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
N = 300


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "data"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "generate.py"),
            "--images",
            str(N),
            "--out",
            str(out),
            "--files",
            "1",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out


def rows(out: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(out / "catalog.db")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_row_counts_and_links(catalog: Path) -> None:
    assert rows(catalog, "SELECT count(*), count(DISTINCT sha256) FROM image") == [(N, N)]
    assert rows(catalog, "SELECT count(*) FROM annotation") == [(3 * N,)]
    assert rows(catalog, "SELECT count(*) FROM device") == [(40,)]
    assert rows(catalog, "SELECT count(*) FROM batch") == [(40 * 4,)]
    assert rows(catalog, "SELECT count(*) FROM file_root") == [(2,)]
    # Every image points at rows that exist, and batch counts agree with their images.
    assert rows(
        catalog,
        "SELECT count(*) FROM image i LEFT JOIN batch b ON b.id = i.batch_id "
        "LEFT JOIN device d ON d.id = i.device_id WHERE b.id IS NULL OR d.id IS NULL "
        "OR b.device_id != i.device_id",
    ) == [(0,)]
    assert rows(
        catalog,
        "SELECT count(*) FROM batch b WHERE image_count != "
        "(SELECT count(*) FROM image WHERE batch_id = b.id)",
    ) == [(0,)]
    assert rows(
        catalog,
        "SELECT count(*) FROM annotation a LEFT JOIN image i "
        "ON i.id = a.image_id WHERE i.id IS NULL",
    ) == [(0,)]
    assert rows(catalog, "SELECT count(*) FROM outbox") == rows(
        catalog, "SELECT count(*) FROM image WHERE sync_state IN ('pending', 'quarantined')"
    )
    stages = {r[0] for r in rows(catalog, "SELECT DISTINCT stage FROM batch")}
    assert stages == {"collecting", "complete", "unassigned", "annotating"}
    assert rows(catalog, "PRAGMA journal_mode") == [("wal",)]


def test_column_formats(catalog: Path) -> None:
    for filename, path, source, created, captured in rows(
        catalog, "SELECT filename, storage_key, source, created_at, captured_at FROM image"
    ):
        match = re.fullmatch(r"(cam\d\d)_(\d{4})(\d\d)(\d\d)_\d{6}_\d{6}\.jpg", filename)
        assert match, filename
        if source == "capture":
            cam, y, m, d = match.groups()
            assert path == f"{cam}/{y}-{m}-{d}/{filename}"
        assert isinstance(created, int) and created > captured > 1_700_000_000 * 10**6
    ids = [r[0] for r in rows(catalog, "SELECT id FROM image ORDER BY created_at, id")]
    assert ids == sorted(ids)  # ids follow arrival, as the write path's inserts do


def test_class_distribution_is_skewed(catalog: Path) -> None:
    counts = [
        c
        for _, c in rows(
            catalog,
            "SELECT class_value, count(*) FROM annotation "
            "GROUP BY class_value ORDER BY count(*) DESC",
        )
    ]
    harmonic = sum(1 / k**1.3 for k in range(1, 26))
    expected_top = 3 * N / harmonic  # Zipf s=1.3 over 25 classes
    assert abs(counts[0] - expected_top) < 0.25 * expected_top
    assert sum(counts[:3]) > 0.5 * 3 * N
    assert counts[0] > 8 * counts[-1]


def test_schema_is_the_migrated_one(catalog: Path, tmp_path: Path) -> None:
    fresh = db.init_database(tmp_path / "fresh.db")
    db.migrate(fresh)
    fresh.close()
    sql = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
    conn = sqlite3.connect(tmp_path / "fresh.db")
    try:
        migrated = conn.execute(sql).fetchall()
    finally:
        conn.close()
    # The generator drops indexes for the load and re-creates them: all must be back, as-is.
    assert rows(catalog, sql) == migrated


def test_app_and_floor_serve_the_matrix_alike(catalog: Path) -> None:
    matrix, floor = load_module("matrix"), load_module("floor_app")
    settings = load_settings(
        environ={},
        overrides={
            "storage.data_dir": str(catalog),
            "auth.jwt_secret": "b" * 40,
            "capture.watch_dirs": [str(catalog / "captures")],
        },
    )
    token = Authenticator(settings).issue_token("bench", "read")
    headers = {"Authorization": f"Bearer {token}"}
    real_id = json.loads((catalog / "generate.json").read_text())["real_files"][0]
    service = LiveServer(create_app(settings))
    reference = LiveServer(floor.make_app(str(catalog / "catalog.db")))
    try:
        cases = matrix.cases(matrix.read_facts(catalog / "catalog.db"), real_id)
        assert len(cases) == 39  # 27, 3 review queues and 9 with time ranges
        for case in cases:
            a = requests.get(service.url + case.url(), headers=headers, timeout=10)
            b = requests.get(reference.url + case.url(), timeout=10)
            assert a.status_code == b.status_code == 200, (case.name, a.text[:200])
            if case.path == f"/files/{real_id}":
                sha = rows(catalog, "SELECT sha256 FROM image WHERE id = ?", real_id)[0][0]
                assert hashlib.sha256(a.content).hexdigest() == sha
                assert a.content == b.content
                continue
            assert a.json()["meta"] == b.json()["meta"], case.name
            assert a.json()["data"] == b.json()["data"], case.name
        total = requests.get(
            service.url + "/data/images?device_id=cam07", headers=headers, timeout=10
        ).json()["meta"]["total"]
        assert (
            total
            == rows(
                catalog,
                "SELECT count(*) FROM image i JOIN device d ON "
                "d.id = i.device_id WHERE d.device_id = 'cam07'",
            )[0][0]
        )
    finally:
        service.close()
        reference.close()
        if not database.is_closed():
            database.close()


def test_facets_benchmark_oracle_agrees_with_the_service(catalog: Path) -> None:
    """benchmarks/facets.py's GROUP BY oracle and the service agree on every filter case of
    the matrix, and on the histogram by hour."""
    facets, matrix = load_module("facets"), load_module("matrix")
    settings = load_settings(
        environ={},
        overrides={"storage.data_dir": str(catalog), "auth.jwt_secret": "b" * 40},
    )
    headers = {"Authorization": f"Bearer {Authenticator(settings).issue_token('b', 'read')}"}
    real_id = json.loads((catalog / "generate.json").read_text())["real_files"][0]
    service = LiveServer(create_app(settings))
    conn = sqlite3.connect(catalog / "catalog.db")
    try:
        cases = facets.filter_cases(matrix.read_facts(catalog / "catalog.db"), real_id)
        assert len(cases) == 29
        for case in cases:
            got = requests.get(
                f"{service.url}/data/images/facets", params=case.params, headers=headers, timeout=10
            ).json()
            assert got["data"]["facets"] == facets.oracle(conn, case.params), case.name
        got = requests.get(
            f"{service.url}/data/images/facets",
            params={"histogram": "captured_at:hour", "facets": "split"},
            headers=headers,
            timeout=10,
        ).json()
        assert got["data"]["histogram"]["buckets"] == facets.hour_oracle(conn, {})
    finally:
        conn.close()
        service.close()
        if not database.is_closed():
            database.close()


def test_search_live_runs_and_leaves_the_catalog_as_it_was(catalog: Path) -> None:
    state = (
        "SELECT (SELECT count(*) FROM image), (SELECT max(id) FROM image), "
        "(SELECT sum(n) FROM image_total_count)"
    )
    before = rows(catalog, state)
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "search_live.py"),
            "--data",
            str(catalog),
            "--duration",
            "0.5",
            "--writes-per-second",
            "20",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    written = int(re.search(r"\((\d+) written, (\d+) removed\)", done.stdout).group(1))
    assert written > 0 and f"({written} written, {written} removed)" in done.stdout
    assert rows(catalog, "SELECT count(*) FROM image") == [(N,)]
    assert rows(catalog, state) == before
    assert "search common + split" in done.stdout
