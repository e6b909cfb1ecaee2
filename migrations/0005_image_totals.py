"""``image_total_count``: images per (device, annotation_status, split, sync_state), kept by
triggers on ``image`` in the writing transaction, as the counts of migration 0004 are.

The list's total without a batch or project filter used to be a sum over
``image_facet_count``, whose batch column multiplies its rows (22,594 at 1M images over 2,000
batches: ~2 ms to sum). Without the batch, the key has at most devices x 3 x 4 x 4 rows (a few
hundred on a device with a handful of cameras), so the total of every single-column filter,
and of no filter at all, is a sum over a table that fits in a page or two. Frozen: plain SQL.
"""

from __future__ import annotations

from edgecatalog.engines import engine_of

TABLES = (
    """CREATE TABLE IF NOT EXISTS image_total_count (
        device_id INTEGER NOT NULL, annotation_status TEXT NOT NULL, split TEXT NOT NULL,
        sync_state TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (device_id, annotation_status, split, sync_state)) WITHOUT ROWID""",
)

_KEY = (
    "device_id = {r}.device_id AND annotation_status = {r}.annotation_status "
    "AND split = {r}.split AND sync_state = {r}.sync_state"
)
_ADD = (
    "INSERT INTO image_total_count VALUES (new.device_id, new.annotation_status, new.split, "
    "new.sync_state, 1) ON CONFLICT DO UPDATE SET n = n + 1;"
)
_SUB = "UPDATE image_total_count SET n = n - 1 WHERE " + _KEY.format(r="old") + ";"

TRIGGERS = {
    "image_total_ai": f"AFTER INSERT ON image BEGIN {_ADD} END",
    "image_total_ad": f"AFTER DELETE ON image BEGIN {_SUB} END",
    "image_total_au": (
        "AFTER UPDATE OF device_id, annotation_status, split, sync_state ON image "
        "WHEN old.device_id IS NOT new.device_id "
        "OR old.annotation_status IS NOT new.annotation_status "
        "OR old.split IS NOT new.split OR old.sync_state IS NOT new.sync_state "
        f"BEGIN {_SUB} {_ADD} END"
    ),
}

BACKFILL = (
    "DELETE FROM image_total_count",
    """INSERT INTO image_total_count SELECT device_id, annotation_status, split, sync_state,
        count(*) FROM image GROUP BY 1, 2, 3, 4""",
)


def create_triggers(execute) -> None:
    for name, body in TRIGGERS.items():
        execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")


def drop_triggers(execute) -> None:
    for name in TRIGGERS:
        execute(f"DROP TRIGGER IF EXISTS {name}")


def backfill(execute) -> None:
    for sql in BACKFILL:
        execute(sql)


def up(migrator, db):
    if engine_of(db).name == "postgres":
        return  # declared and installed by migration 0010 there
    for sql in TABLES:
        db.execute_sql(sql)
    backfill(db.execute_sql)
    create_triggers(db.execute_sql)
