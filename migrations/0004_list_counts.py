"""Structures that keep the image list fast at a million images, all kept by triggers.

- ``image_facet_count``: how many images have each (batch, device, annotation_status, split,
  sync_state). Every filter of the list except class, search and filename is a condition on
  these columns (project and stage through the batch), so the exact ``total`` is a sum over a
  few thousand rows instead of a count over a million.
- ``image_class_count``: how many distinct images carry at least one annotation of a class,
  for the total of a one-class filter.
- ``image_class_facet``: the same per class and facet key (~12 bytes/image at 1M), for the total
  of one class together with facet filters.
- ``image_fts``: an FTS5 trigram index of filenames (external content, ``detail=none``: rowids
  only, ~49 bytes/image) that narrows a 3+ character ``search`` to candidates, which the exact
  LIKE then rechecks; ``image_fts_vocab`` reads its per-trigram document counts.

The triggers run inside the writing statement's transaction, so a reader never sees a count
that disagrees with the rows (no cache, nothing to invalidate). ``backfill`` rebuilds all
three from the tables; the benchmark generator calls it after a bulk load with the triggers
dropped. Frozen: plain SQL, no models imported.
"""

from __future__ import annotations

from edgecatalog.engines import engine_of

TABLES = (
    """CREATE TABLE IF NOT EXISTS image_facet_count (
        batch_id INTEGER NOT NULL, device_id INTEGER NOT NULL, annotation_status TEXT NOT NULL,
        split TEXT NOT NULL, sync_state TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (batch_id, device_id, annotation_status, split, sync_state)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS image_class_count (
        class_value TEXT NOT NULL PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS image_class_facet (
        class_value TEXT NOT NULL, batch_id INTEGER NOT NULL, device_id INTEGER NOT NULL,
        annotation_status TEXT NOT NULL, split TEXT NOT NULL, sync_state TEXT NOT NULL,
        n INTEGER NOT NULL, PRIMARY KEY (class_value, batch_id, device_id, annotation_status,
        split, sync_state)) WITHOUT ROWID""",
    """CREATE VIRTUAL TABLE IF NOT EXISTS image_fts USING fts5(
        filename, content='image', content_rowid='id', tokenize='trigram', detail='none')""",
    "CREATE VIRTUAL TABLE IF NOT EXISTS image_fts_vocab USING fts5vocab(image_fts, 'row')",
)

_FACET_KEY = (
    "batch_id = {r}.batch_id AND device_id = {r}.device_id AND annotation_status = "
    "{r}.annotation_status AND split = {r}.split AND sync_state = {r}.sync_state"
)
_FACET_ADD = (
    "INSERT INTO image_facet_count VALUES (new.batch_id, new.device_id, "
    "new.annotation_status, new.split, new.sync_state, 1) "
    "ON CONFLICT DO UPDATE SET n = n + 1;"
)
_FACET_SUB = "UPDATE image_facet_count SET n = n - 1 WHERE " + _FACET_KEY.format(r="old") + ";"
# A class is counted once per image: +1 when the image's first annotation of it appears,
# -1 when its last one goes (the (class_value, image_id) index makes both probes cheap).
_CLASS_ADD = (
    "INSERT INTO image_class_count VALUES (new.class_value, 1) ON CONFLICT DO UPDATE SET n = n + 1;"
)
_CLASS_SUB = "UPDATE image_class_count SET n = n - 1 WHERE class_value = old.class_value;"
_NEW_FIRST = (
    "NOT EXISTS (SELECT 1 FROM annotation a WHERE a.class_value = new.class_value "
    "AND a.image_id = new.image_id AND a.id != new.id)"
)
_OLD_GONE = (
    "NOT EXISTS (SELECT 1 FROM annotation a WHERE a.class_value = old.class_value "
    "AND a.image_id = old.image_id)"
)
_FACET_COLS = "batch_id, device_id, annotation_status, split, sync_state"
# Per class and facet: the annotation side adds or removes one class of one image (looked up
# in ``image``); the image side moves all of an image's classes when its facet key changes.
# A deleted image: its BEFORE DELETE trigger removes its classes while the row and its
# annotations still exist; the cascaded annotation deletes then find no image and do nothing.
_CF_ADD_ANN = (
    "INSERT INTO image_class_facet SELECT new.class_value, " + _FACET_COLS + ", 1 "
    "FROM image WHERE id = new.image_id ON CONFLICT DO UPDATE SET n = n + 1;"
)
_CF_SUB_ANN = (
    "UPDATE image_class_facet SET n = n - 1 WHERE class_value = old.class_value AND "
    f"({_FACET_COLS}) = (SELECT {_FACET_COLS} FROM image WHERE id = old.image_id);"
)
_CF_SUB_IMG = (
    "UPDATE image_class_facet SET n = n - 1 WHERE "
    + _FACET_KEY.format(r="old")
    + " AND class_value IN (SELECT class_value FROM annotation WHERE image_id = old.id);"
)
_CF_ADD_IMG = (
    "INSERT INTO image_class_facet SELECT DISTINCT class_value, new.batch_id, "
    "new.device_id, new.annotation_status, new.split, new.sync_state, 1 "
    "FROM annotation WHERE image_id = new.id ON CONFLICT DO UPDATE SET n = n + 1;"
)
_FTS_ADD = "INSERT INTO image_fts(rowid, filename) VALUES (new.id, new.filename);"
_FTS_SUB = (
    "INSERT INTO image_fts(image_fts, rowid, filename) VALUES ('delete', old.id, old.filename);"
)

TRIGGERS = {
    "image_facet_ai": f"AFTER INSERT ON image BEGIN {_FACET_ADD} END",
    "image_facet_ad": f"AFTER DELETE ON image BEGIN {_FACET_SUB} END",
    "image_class_facet_bd": f"BEFORE DELETE ON image BEGIN {_CF_SUB_IMG} END",
    "image_facet_au": (
        "AFTER UPDATE OF batch_id, device_id, annotation_status, split, "
        "sync_state ON image WHEN old.batch_id IS NOT new.batch_id "
        "OR old.device_id IS NOT new.device_id "
        "OR old.annotation_status IS NOT new.annotation_status "
        "OR old.split IS NOT new.split OR old.sync_state IS NOT new.sync_state "
        f"BEGIN {_FACET_SUB} {_FACET_ADD} {_CF_SUB_IMG} {_CF_ADD_IMG} END"
    ),
    "annotation_class_ai": (
        f"AFTER INSERT ON annotation WHEN {_NEW_FIRST} BEGIN {_CLASS_ADD} {_CF_ADD_ANN} END"
    ),
    "annotation_class_ad": (
        f"AFTER DELETE ON annotation WHEN {_OLD_GONE} BEGIN {_CLASS_SUB} {_CF_SUB_ANN} END"
    ),
    # Two triggers for an update: the old class may lose its image and the new one gain it.
    "annotation_class_au_old": (
        "AFTER UPDATE OF class_value, image_id ON annotation WHEN "
        "(old.class_value IS NOT new.class_value OR "
        f"old.image_id IS NOT new.image_id) AND {_OLD_GONE} "
        f"BEGIN {_CLASS_SUB} {_CF_SUB_ANN} END"
    ),
    "annotation_class_au_new": (
        "AFTER UPDATE OF class_value, image_id ON annotation WHEN "
        "(old.class_value IS NOT new.class_value OR "
        f"old.image_id IS NOT new.image_id) AND {_NEW_FIRST} "
        f"BEGIN {_CLASS_ADD} {_CF_ADD_ANN} END"
    ),
    "image_fts_ai": f"AFTER INSERT ON image BEGIN {_FTS_ADD} END",
    "image_fts_ad": f"AFTER DELETE ON image BEGIN {_FTS_SUB} END",
    "image_fts_au": (
        "AFTER UPDATE OF filename ON image WHEN old.filename IS NOT new.filename "
        f"BEGIN {_FTS_SUB} {_FTS_ADD} END"
    ),
}

BACKFILL = (
    "DELETE FROM image_facet_count",
    """INSERT INTO image_facet_count SELECT batch_id, device_id, annotation_status, split,
        sync_state, count(*) FROM image GROUP BY 1, 2, 3, 4, 5""",
    "DELETE FROM image_class_count",
    """INSERT INTO image_class_count SELECT class_value, count(DISTINCT image_id)
        FROM annotation GROUP BY class_value""",
    "DELETE FROM image_class_facet",
    """INSERT INTO image_class_facet SELECT a.class_value, i.batch_id, i.device_id,
        i.annotation_status, i.split, i.sync_state, count(DISTINCT i.id)
        FROM annotation a JOIN image i ON i.id = a.image_id GROUP BY 1, 2, 3, 4, 5, 6""",
    "INSERT INTO image_fts(image_fts) VALUES ('rebuild')",
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
        # The count tables come from their declaration (migration 0010); the substring index
        # is pg_trgm's, kept by PostgreSQL itself.
        for sql in engine_of(db).search_index_ddl():
            db.execute_sql(sql)
        return
    for sql in TABLES:
        db.execute_sql(sql)
    backfill(db.execute_sql)
    create_triggers(db.execute_sql)
