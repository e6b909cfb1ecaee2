"""The engine is a setting: ``[database] url`` picks PostgreSQL, checked when loaded; an
unreachable server is one line naming where, never a traceback; ``doctor`` examines the
server; the migrations build the same declared count tables there. Real PostgreSQL (the
throwaway cluster of tests/pg_cluster.py), real processes for the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import jpeg_bytes, make_settings
from seeded_catalog import FILENAMES, build_catalog, expected

from edgecatalog import db
from edgecatalog.config import ConfigError, load_settings
from edgecatalog.engines import postgres
from edgecatalog.listing import counts
from edgecatalog.models import database

UNREACHABLE = "postgresql://edge@127.0.0.1:1/catalog"
UPLOAD_PATH = "/device/images/upload"


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"database.url": "mysql://h/db"}, "database.url"),
        ({"database.url": "postgresql:///db"}, "database.url"),  # no host
        ({"database.url": "postgresql://h:5432/"}, "database.url"),  # no database
        (
            {"database.url": "postgresql://u:pw@h/db", "database.password_file": "/x"},
            "database.url",
        ),
        ({"database.password_file": "/x"}, "database.password_file"),
    ],
)
def test_a_bad_database_setting_names_itself(tmp_path, values, names):
    with pytest.raises(ConfigError) as err:
        make_settings(tmp_path, **{k.replace(".", "__"): v for k, v in values.items()})
    assert str(err.value).startswith(names)


def test_the_url_comes_from_the_environment_and_the_password_from_a_file(tmp_path):
    secret = tmp_path / "pg.password"
    secret.write_text("s3cret-pw\n")
    secret.chmod(0o600)
    settings = load_settings(
        environ={
            "EDGECATALOG_DATABASE_URL": "postgresql://edge@db.site:6543/catalog?sslmode=require",
            "EDGECATALOG_DATABASE_PASSWORD_FILE": str(secret),
            "EDGECATALOG_STORAGE_DATA_DIR": str(tmp_path / "data"),
        }
    )
    assert settings.db_location == "postgresql://db.site:6543/catalog"  # no password in it
    try:
        opened = db.open_for(settings)
        params = opened.obj.connect_params
        assert (opened.obj.database, params["host"], params["port"]) == ("catalog", "db.site", 6543)
        assert (params["user"], params["password"], params["sslmode"]) == (
            "edge",
            "s3cret-pw",
            "require",
        )
        assert database.location == "postgresql://db.site:6543/catalog"
    finally:
        db.init_database(tmp_path / "back.db")  # rebind: nothing of this test stays bound


def _cli(tmp_path: Path, *args: str, url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    env.update(
        EDGECATALOG_DATABASE_URL=url,
        EDGECATALOG_STORAGE_DATA_DIR=str(tmp_path / "data"),
        EDGECATALOG_AUTH_JWT_SECRET="s" * 40,
    )
    return subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [["migrate"], ["serve"]])
def test_an_unreachable_database_is_one_line_naming_the_host(tmp_path, command):
    done = _cli(tmp_path, *command, url=UNREACHABLE)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert any("127.0.0.1:1/catalog" in line for line in lines), done.stderr
    assert len([line for line in lines if "cannot open the catalog database" in line]) == 1


def test_doctor_examines_the_server(tmp_path, pg_cluster):
    if isinstance(pg_cluster, str):
        pytest.skip(pg_cluster)
    url = pg_cluster.new_database()
    try:
        good = _cli(tmp_path, "doctor", url=url)
        lines = good.stdout.splitlines()
        assert any(
            line.startswith("OK") and "database:" in line and "PostgreSQL 1" in line
            for line in lines
        ), good.stdout
        assert any(line.startswith("OK") and "migrations:" in line for line in lines), good.stdout
    finally:
        pg_cluster.drop_database(url)
    bad = _cli(tmp_path, "doctor", url=UNREACHABLE)
    assert bad.returncode == 1
    assert any(
        line.startswith("FAIL") and "database:" in line and "127.0.0.1:1/catalog" in line
        for line in bad.stdout.splitlines()
    ), bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_the_migrated_count_tables_are_the_declared_ones(tmp_path, pg_cluster):
    """Migrations 0001-0010 on an empty PostgreSQL database: every declared count table, with
    its key columns as the primary key, and the trigram index of the search."""
    if isinstance(pg_cluster, str):
        pytest.skip(pg_cluster)
    url = pg_cluster.new_database()
    try:
        db.bind(postgres.open_database(url))
        with database.connection_context():
            for table in counts.COUNT_TABLES:
                key = database.execute_sql(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = ?::regclass AND i.indisprimary "
                    "ORDER BY array_position(i.indkey, a.attnum)",
                    (table.name,),
                ).fetchall()
                assert [k for (k,) in key] == list(table.columns), table.name
            (index,) = database.execute_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'image_filename_trgm'"
            ).fetchone()
            assert "gin_trgm_ops" in index
            kinds = {
                r[0]: r[1]
                for r in database.execute_sql(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'annotation'"
                )
            }
            assert kinds["class_value"] == "text"  # no VARCHAR(255) SQLite would not have
    finally:
        db.init_database(tmp_path / "back.db")
        pg_cluster.drop_database(url)


def test_explain_runs_the_list_on_postgres_and_shows_its_plans(tmp_path, pg_cluster):
    """``edgecatalog explain`` on a PostgreSQL catalog: the statements the list runs, each with
    PostgreSQL's own EXPLAIN, the planner's choices, and a total equal to the API's answer."""
    if isinstance(pg_cluster, str):
        pytest.skip(pg_cluster)
    url = pg_cluster.new_database()
    try:
        cat = build_catalog(tmp_path / "cat", url)
        # No class: a rare class with a search would be answered from the class's images.
        query = "/data/images?search=jpg&limit=5"
        answer = cat.client.get(query, headers=cat.headers).get_json()
        database.close()
        done = _cli(tmp_path, "explain", "--json", query, url=url)
        assert done.returncode == 0, done.stderr
        explained = json.loads(done.stdout)
        assert explained["choices"]["engine"].startswith("PostgreSQL")
        purposes = [s["purpose"] for s in explained["statements"]]
        assert "search candidates" in purposes
        assert all(s["plan"] and s["sql"] for s in explained["statements"]), explained
        plans = " ".join(row["detail"] for s in explained["statements"] for row in s["plan"])
        assert "Scan" in plans  # PostgreSQL's EXPLAIN, not SQLite's
        total = answer["meta"]["total"]
        assert total == len(expected(cat.records, {"search": "jpg"}))
        # The candidates are every name with "jpg" in any case (the trigram index, exact here).
        with_jpg = sum("jpg" in name.lower() for name in FILENAMES)
        assert f"gave {with_jpg} candidate(s)" in explained["choices"]["search"]
    finally:
        db.init_database(tmp_path / "back.db")
        pg_cluster.drop_database(url)


def test_serve_on_postgres_answers_and_stops_cleanly(tmp_path, pg_cluster):
    """The real ``edgecatalog serve`` on PostgreSQL: ready, an upload listed with its exact
    total by another connection, and a clean SIGTERM (no SQLite step attempted at shutdown)."""
    if isinstance(pg_cluster, str):
        pytest.skip(pg_cluster)
    from serve_process import ServeProcess, free_port, write_config
    from upload_helpers import CONTENT_TYPE, upload_body

    from edgecatalog.auth import Authenticator

    url = pg_cluster.new_database()
    port = free_port()
    config = write_config(tmp_path / "serve.toml", tmp_path / "data", port, database={"url": url})
    server = ServeProcess(config, port)
    try:
        server.wait_ready()
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
        settings = make_settings(tmp_path, database__url=url)
        auth = Authenticator(settings)
        headers = {"Authorization": "Bearer " + auth.issue_token("t", "write")}
        for i in range(3):
            resp = requests.post(
                server.url + UPLOAD_PATH,
                headers={**headers, "Content-Type": CONTENT_TYPE},
                data=upload_body(jpeg_bytes(seed=i), {"device_id": "cam01"}, f"pg{i}.jpg"),
                timeout=10,
            )
            assert resp.status_code == 201, resp.text
        listed = requests.get(
            server.url + "/data/images?device_id=cam01", headers=headers, timeout=10
        ).json()
        assert listed["meta"]["total"] == 3 and len(listed["data"]) == 3
        server.terminate()
        status, log = server.wait()
        assert status == 0, log[-2000:]
        assert "failed" not in log.lower(), log[-2000:]
    finally:
        server.close()
        pg_cluster.drop_database(url)
