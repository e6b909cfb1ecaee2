"""Lets a bulk ingest keep the list's counts and search index per chunk instead of per row.

The insert triggers of 0004 and 0005 (facet count, total count, FTS row, class counts) cost
more than the inserts they follow: about 65 us of SQLite work per image with three
annotations, against about 40 us for all the rows themselves. A folder scan inserts a
thousand images per transaction and can apply the same changes in five grouped statements.

So the four INSERT triggers are re-created here with one extra condition: they do nothing
while ``ingest_bulk`` holds a row. The bulk writer (``edgecatalog/ingest/counts.py``)
inserts that row at the start of its chunk, inserts the chunk's rows, applies the grouped
counts and FTS rows, and deletes the row, all inside one write transaction: the row is never
committed, so no other connection ever sees it and for every other writer the triggers run
exactly as before; a rolled-back chunk takes the row with it. The CHECK keeps it one row.
Update and delete triggers are untouched (a bulk chunk only inserts).

Bodies are 0004's and 0005's, copied (frozen): plain SQL, no models imported.
"""

from __future__ import annotations

from edgecatalog.engines import engine_of

TABLES = ("CREATE TABLE IF NOT EXISTS ingest_bulk (id INTEGER PRIMARY KEY CHECK (id = 1))",)

GATE = "NOT EXISTS (SELECT 1 FROM ingest_bulk)"

TRIGGERS = {
    "image_facet_ai": (
        f"AFTER INSERT ON image WHEN {GATE} BEGIN "
        "INSERT INTO image_facet_count VALUES (new.batch_id, new.device_id, "
        "new.annotation_status, new.split, new.sync_state, 1) "
        "ON CONFLICT DO UPDATE SET n = n + 1; END"
    ),
    "image_total_ai": (
        f"AFTER INSERT ON image WHEN {GATE} BEGIN "
        "INSERT INTO image_total_count VALUES (new.device_id, new.annotation_status, new.split, "
        "new.sync_state, 1) ON CONFLICT DO UPDATE SET n = n + 1; END"
    ),
    "image_fts_ai": (
        f"AFTER INSERT ON image WHEN {GATE} BEGIN "
        "INSERT INTO image_fts(rowid, filename) VALUES (new.id, new.filename); END"
    ),
    "annotation_class_ai": (
        f"AFTER INSERT ON annotation WHEN {GATE} AND NOT EXISTS (SELECT 1 FROM annotation a "
        "WHERE a.class_value = new.class_value AND a.image_id = new.image_id AND a.id != new.id) "
        "BEGIN INSERT INTO image_class_count VALUES (new.class_value, 1) "
        "ON CONFLICT DO UPDATE SET n = n + 1; "
        "INSERT INTO image_class_facet SELECT new.class_value, batch_id, device_id, "
        "annotation_status, split, sync_state, 1 FROM image WHERE id = new.image_id "
        "ON CONFLICT DO UPDATE SET n = n + 1; END"
    ),
}


def create_triggers(execute) -> None:
    """Replace the ungated triggers of the same names (also after a tool re-created them)."""
    for name, body in TRIGGERS.items():
        execute(f"DROP TRIGGER IF EXISTS {name}")
        execute(f"CREATE TRIGGER {name} {body}")


def drop_triggers(execute) -> None:
    for name in TRIGGERS:
        execute(f"DROP TRIGGER IF EXISTS {name}")


def backfill(execute) -> None:
    """Nothing of its own to rebuild: the counts are 0004's and 0005's tables."""


def up(migrator, db):
    for sql in TABLES:
        db.execute_sql(sql)
    if engine_of(db).name != "postgres":  # there the triggers come from migration 0010
        create_triggers(db.execute_sql)
