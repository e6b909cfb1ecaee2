"""``image_name_epoch``: a counter bumped by every write that can take a filename away from
the catalog (a deleted image, a renamed or renumbered one), kept by triggers on ``image``.

A substring ``search`` total is a scan of the filename index (~100 ms at a million images).
While this counter stays the same, the only way the set of (id, filename) pairs changes is by
new rows, so a total computed earlier plus the matches among rows added since is the total now
(``edgecatalog/scan_cache.py`` checks the row count too, for rows inserted below the old
maximum id). Inserts, the device's steady stream of writes, do not touch it. Frozen: plain SQL.
"""

from __future__ import annotations

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


def up(migrator, db):
    for sql in STATEMENTS:
        db.execute_sql(sql)
