"""Migrations: every numbered file applied to an empty database gives exactly the models'
schema, the files are frozen and well-formed, and a built (non-editable) wheel ships them.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from peewee import SqliteDatabase
from playhouse.schema_diff import diff_models

from edgecatalog import db as catalog_db
from edgecatalog.engines import postgres
from edgecatalog.engines.postgres import OWN_INDEXES
from edgecatalog.models import GENERATED_COLUMNS, MODELS

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = sorted(p for p in (ROOT / "migrations").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_all_migrations_match_the_models(tmp_path, engine, request):
    """Every migration on an empty database of each engine gives the models' schema (on
    PostgreSQL, besides the trigram index its search uses, which no model declares)."""
    if engine == "sqlite":
        database = SqliteDatabase(str(tmp_path / "fresh.db"), pragmas={"foreign_keys": 1})
    else:
        cluster = request.getfixturevalue("pg_cluster")
        if isinstance(cluster, str):
            pytest.skip(f"PostgreSQL tests skipped: {cluster}")
        name = f"fresh_{tmp_path.name}".lower()[:60]
        cluster.admin(f"CREATE DATABASE {name}")
        request.addfinalizer(lambda: cluster.drop_database(cluster.database_url(name)))
        database = postgres.open_database(cluster.database_url(name))
    with database.connection_context():
        applied = catalog_db.runner(database).up()
        assert applied == [p.stem for p in MIGRATIONS]
        diff = diff_models(database, MODELS)  # a SchemaDiff: a tuple of lists, falsy if equal
        left = [
            d
            for part in diff
            for d in part
            if getattr(d, "name", "") not in OWN_INDEXES and d not in GENERATED_COLUMNS
        ]
        assert not left, f"migrations and models disagree:\n{diff}"
        assert catalog_db.runner(database).up() == []  # idempotent


def test_migration_files_are_numbered_and_frozen():
    numbers = [int(re.match(r"^(\d{4})_[a-z0-9_]+$", p.stem).group(1)) for p in MIGRATIONS]
    assert numbers == list(range(1, len(numbers) + 1))  # no gaps, no duplicates
    for path in MIGRATIONS:
        tree = ast.parse(path.read_text(), str(path))
        ups = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "up"]
        assert ups and [a.arg for a in ups[0].args.args][:2] == ["migrator", "db"], path.name
        for node in ast.walk(tree):
            # A migration must not follow the live models as they change later.
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith(("edgecatalog.models", "models")), (
                    path.name
                )
                assert not (
                    node.module == "edgecatalog" and any(a.name == "models" for a in node.names)
                ), path.name


def test_app_start_migrates_a_fresh_data_dir(tmp_path):
    from conftest import make_settings

    from edgecatalog import create_app
    from edgecatalog.models import database

    create_app(make_settings(tmp_path))
    try:
        with database.connection_context():
            assert not diff_models(database, MODELS)
            assert catalog_db.pending_migrations(database) == []
    finally:
        database.close()


def _build_wheel(tmp_path: Path) -> Path:
    # Build from a copy so the shared tree gets no build/ or egg-info folders.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "edgecatalog", src / "edgecatalog", ignore=ignore)
    shutil.copytree(ROOT / "migrations", src / "migrations", ignore=ignore)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            ".",
            "-w",
            str(out),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("edgecatalog-*.whl")
    return wheel


def test_wheel_ships_migrations_and_every_subpackage(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in MIGRATIONS:
        assert f"edgecatalog/migrations/{path.name}" in names
    for init in (ROOT / "edgecatalog").rglob("__init__.py"):
        rel = init.relative_to(ROOT).as_posix()
        assert rel in names, f"{rel} is not in the wheel (add it to [tool.setuptools] packages)"
    for data_dir in ("static", "openapi"):
        if (ROOT / "edgecatalog" / data_dir).is_dir():
            assert any(n.startswith(f"edgecatalog/{data_dir}/") for n in names)
    # The unpacked wheel (not the source tree) migrates a database on its own.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    env.update(PYTHONPATH=str(site), EDGECATALOG_AUTH_JWT_SECRET="w" * 40)
    where = subprocess.run(
        [sys.executable, "-c", "import edgecatalog.db as d; print(d.migrations_dir())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert Path(where.stdout.strip()) == site / "edgecatalog" / "migrations"
    proc = subprocess.run(
        [sys.executable, "-m", "edgecatalog", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"applied {len(MIGRATIONS)} migration(s)" in proc.stdout
