"""The count tables are declared once (``listing.counts.COUNT_TABLES``) and everything about
them follows: the newest count migration freezes exactly that declaration, and a facet column
added to a scratch catalog (one ``Key``, one ``Filter``, the migration ``migration_source``
writes) is counted on every write path and chosen by the planner, every total equal to a
``COUNT(*)`` written here."""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from werkzeug.datastructures import MultiDict

from edgecatalog import db, param_types
from edgecatalog.catalog import NewAnnotation, NewImage
from edgecatalog.ingest import bulk
from edgecatalog.listing import FILTERS, ImageList, counts, new_migration, parse_image_query
from edgecatalog.listing.counts import CountTable, Key
from edgecatalog.listing.query import Filter
from edgecatalog.listing.sql import column_cond
from edgecatalog.models import database

MIGRATIONS = Path(db.migrations_dir())


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"m_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_newest_count_migration_freezes_the_declaration():
    declared = [
        m
        for m in (_load(p) for p in sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.py")))
        if isinstance(getattr(m, "TABLES", None), tuple)
        and all(isinstance(t, CountTable) for t in m.TABLES)
    ]
    assert declared, "no migration installs the declared count tables"
    assert declared[-1].TABLES == counts.COUNT_TABLES, (
        "listing.counts.COUNT_TABLES changed without a migration: run "
        "python -m edgecatalog.listing.new_migration NAME"
    )


def test_planner_takes_the_first_declared_table_that_covers_the_filters():
    by_name = {t.name: t for t in counts.COUNT_TABLES}
    assert counts.source_for((), per_class=False) is by_name["image_total_count"]
    assert (
        counts.source_for({"device_id", "split"}, per_class=False) is by_name["image_total_count"]
    )
    assert counts.source_for({"batch_id"}, per_class=False) is by_name["image_facet_count"]
    assert counts.source_for((), per_class=True) is by_name["image_class_count"]
    assert counts.source_for({"sync_state"}, per_class=True) is by_name["image_class_total"]
    assert counts.source_for({"batch_id"}, per_class=True) is by_name["image_class_batch"]
    assert counts.source_for({"batch_id", "split"}, per_class=True) is by_name["image_class_facet"]
    assert counts.source_for({"filename"}, per_class=False) is None


def test_the_migrated_tables_are_the_declared_ones(tmp_path: Path):
    database_ = db.init_database(tmp_path / "catalog.db")
    db.migrate(database_)
    with database_.connection_context():
        for table in counts.COUNT_TABLES:
            info = database_.execute_sql(f"PRAGMA table_info({table.name})").fetchall()
            columns = [(row[1], row[2].upper()) for row in info]
            declared = [("class_value", "TEXT")] * table.per_class + [
                (k.name, k.type) for k in table.keys
            ]
            counted = [("n", "INTEGER")] + [("annotations", "INTEGER")] * table.annotations
            assert columns == [*declared, *counted], table.name
            primary_key = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
            assert primary_key == list(table.columns), table.name


# -- a facet column added to a scratch catalog ----------------------------------------------

LENS = Key("lens", "TEXT")
EXTENDED = tuple(
    replace(t, keys=t.keys + (LENS,) if t.keys else t.keys) for t in counts.COUNT_TABLES
)
LENS_FILTER = Filter(
    "lens",
    param_types.TEXT,
    lambda v: column_cond("lens", v),
    "lens of the camera",
    counted_by=("lens",),
    weak_index=True,
)
CLASSES = ("crack", "dent", "scratch")


def _news(start: int, n: int, device: str) -> list[NewImage]:
    out = []
    for i in range(start, start + n):
        anns = tuple(
            NewAnnotation(CLASSES[(i + k) % 3], "bbox", (0.5, 0.5, 0.1, 0.1))
            for k in range(i % 4)  # 0 to 3 annotations, a class twice on some images
        )
        out.append(
            NewImage(
                filename=f"{device}_frame_{i:05d}.jpg",
                storage_key=f"raw-data/{i}.jpg",
                sha256=f"{i:064x}",
                byte_size=100,
                width=64,
                height=48,
                root="/nonexistent-root",
                device_id=device,
                annotations=anns,
            )
        )
    return out


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A migrated catalog, then the change a developer makes: the column, the declaration,
    and the migration written from it (applied as the runner would)."""
    database_ = db.init_database(tmp_path / "catalog.db")
    db.migrate(database_)
    database_.connect(reuse_if_open=True)
    # The column's own migration (a schema change, as any new image field has).
    database_.execute_sql("ALTER TABLE image ADD COLUMN lens TEXT NOT NULL DEFAULT 'wide'")
    monkeypatch.setattr(counts, "COUNT_TABLES", EXTENDED)
    previous = [
        p
        for p in sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))
        if "install_counts(" in p.read_text()
    ][-1]
    source = new_migration.migration_source(EXTENDED, new_migration.declared_in(previous))
    path = tmp_path / "0099_lens_counts.py"
    path.write_text(source)
    with db.write_tx(database_):
        _load(path).up(None, database_)
    yield ImageList((*FILTERS, LENS_FILTER), EXTENDED)
    database_.close()


def _oracle(filters: dict) -> int:
    """COUNT(*) over the plain rows, written independently of the planner."""
    where, args = [], []
    for key, value in filters.items():
        if key == "class_values":
            marks = ",".join("?" * len(value))
            where.append(
                f"i.id IN (SELECT image_id FROM annotation WHERE class_value IN ({marks}))"
            )
            args += list(value)
        elif key == "device_id":
            where.append("d.device_id = ?")
            args.append(value)
        elif key == "search":
            where.append("instr(lower(i.filename), lower(?)) > 0")
            args.append(value)
        else:
            where.append(f"i.{key} = ?")
            args.append(value)
    sql = "SELECT count(*) FROM image i JOIN device d ON d.id = i.device_id"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return database.execute_sql(sql, args).fetchone()[0]


def test_a_facet_column_is_one_declaration_and_its_migration(scratch: ImageList):
    assert bulk.gate_ready()  # the rendered triggers wait on the bulk-load gate
    # Bulk chunks (grouped statements), single images (row triggers), then every other write.
    bulk.add_images(_news(0, 300, "cam01"))
    for new in _news(300, 20, "cam02"):
        bulk.add_image(new)
    with db.write_tx():
        database.execute_sql("UPDATE image SET lens = 'tele' WHERE id % 3 = 0")
        database.execute_sql("UPDATE image SET split = 'val' WHERE id % 4 = 1")
        database.execute_sql("UPDATE image SET annotation_status = 'completed' WHERE id % 5 = 2")
        database.execute_sql("DELETE FROM image WHERE id % 11 = 0")
        database.execute_sql("DELETE FROM annotation WHERE id % 7 = 0")
        database.execute_sql("UPDATE annotation SET class_value = 'dent' WHERE id % 13 = 0")
    bulk.add_images(_news(400, 150, "cam02"))  # new rows all 'wide', grouped with the lens key

    # Every declared table equals its recount from the rows.
    for table in EXTENDED:
        keys = ", ".join(
            ("a.class_value",) * table.per_class + tuple(f"i.{k}" for k in table.key_names)
        )
        counted = "count(DISTINCT i.id)" if table.per_class else "count(*)"
        if table.annotations:
            counted += ", count(*)"
        source = "annotation a JOIN image i ON i.id = a.image_id" if table.per_class else "image i"
        group = f" GROUP BY {keys} ORDER BY {keys}" if keys else ""
        recount = database.execute_sql(
            f"SELECT {keys + ', ' if keys else ''}{counted} FROM {source}{group}"
        ).fetchall()
        cols = ", ".join(table.columns)
        kept = database.execute_sql(
            f"SELECT {cols}, n{', annotations' * table.annotations} FROM {table.name} "
            f"WHERE n > 0 ORDER BY {cols}"
        ).fetchall()
        assert kept == recount, table.name

    batch = database.execute_sql("SELECT min(batch_id) FROM image").fetchone()[0]
    choices = {
        "lens": ["wide", "tele"],
        "device_id": [None, "cam01"],
        "batch_id": [None, batch],
        "split": [None, "val"],
        "class_values": [None, ("crack",), ("crack", "dent")],
        "search": [None, "frame_001"],
    }
    checked = 0
    for combo in itertools.product(*choices.values()):
        filters = {k: v for k, v in zip(choices, combo) if v is not None}
        args = MultiDict(
            {k: ",".join(v) if isinstance(v, tuple) else str(v) for k, v in filters.items()}
        )
        query = parse_image_query(args, filters=scratch.filters)
        page = scratch.select(query)
        assert page.total == _oracle(filters), filters
        if set(filters) <= {"lens", "device_id", "split"}:
            assert "image_total_count" in page.plan["total"], page.plan
        if set(filters) == {"lens", "batch_id"}:
            assert "image_facet_count" in page.plan["total"], page.plan
        if set(filters) == {"lens", "class_values"} and len(filters["class_values"]) == 1:
            assert "image_class_total" in page.plan["total"], page.plan
        checked += 1
    assert checked == 2 * 2 * 2 * 2 * 3 * 2


def test_the_written_migration_is_already_in_the_project_format():
    """What ``new_migration`` writes passes ``ruff`` as it is (CI checks every file)."""
    source = new_migration.migration_source(counts.COUNT_TABLES, counts.COUNT_TABLES)
    ruff = [sys.executable, "-m", "ruff"]
    for command in (["format", "--check"], ["check"]):
        done = subprocess.run(
            [*ruff, *command, "--stdin-filename", "migrations/0099_x.py", "-"],
            input=source,
            check=False,
            text=True,
            capture_output=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert done.returncode == 0, done.stdout + done.stderr
