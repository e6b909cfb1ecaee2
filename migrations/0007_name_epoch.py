"""``image_name_epoch``: a counter bumped by every write that can take a filename away from
the catalog (a deleted image, a renamed or renumbered one), kept by triggers on ``image``.

A substring ``search`` total is a scan of the filename index (~100 ms at a million images).
While this counter stays the same, the only way the set of (id, filename) pairs changes is by
new rows, so a total computed earlier plus the matches among rows added since is the total now
(``edgecatalog/scan_cache.py`` checks the row count too, for rows inserted below the old
maximum id). Inserts, the device's steady stream of writes, do not touch it. Frozen: plain SQL.
"""

from __future__ import annotations

from edgecatalog.engines import engine_of

STATEMENTS = (
    """CREATE TABLE IF NOT EXISTS image_name_epoch (
        id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)""",
    "INSERT OR IGNORE INTO image_name_epoch VALUES (1, 0)",
    """CREATE TRIGGER IF NOT EXISTS image_name_epoch_ad AFTER DELETE ON image
        BEGIN UPDATE image_name_epoch SET n = n + 1; END""",
    """CREATE TRIGGER IF NOT EXISTS image_name_epoch_au AFTER UPDATE OF id, filename ON image
        WHEN old.id IS NOT new.id OR old.filename IS NOT new.filename
        BEGIN UPDATE image_name_epoch SET n = n + 1; END""",
)


# PostgreSQL: the same table and counter, the triggers as PL/pgSQL.
POSTGRES = (
    (
        "CREATE TABLE IF NOT EXISTS image_name_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "n BIGINT NOT NULL)"
    ),
    "INSERT INTO image_name_epoch VALUES (1, 0) ON CONFLICT DO NOTHING",
    (
        "CREATE OR REPLACE FUNCTION image_name_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN UPDATE image_name_epoch SET n = n + 1; RETURN NULL; END $$"
    ),
    (
        "CREATE TRIGGER image_name_epoch_ad AFTER DELETE ON image FOR EACH ROW "
        "EXECUTE FUNCTION image_name_epoch_bump()"
    ),
    (
        "CREATE TRIGGER image_name_epoch_au AFTER UPDATE OF id, filename ON image FOR EACH ROW "
        "WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.filename IS DISTINCT FROM NEW.filename) "
        "EXECUTE FUNCTION image_name_epoch_bump()"
    ),
)


def up(migrator, db):
    postgres = engine_of(db).name == "postgres"
    for sql in POSTGRES if postgres else STATEMENTS:
        db.execute_sql(sql)
