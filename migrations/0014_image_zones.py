"""``image_zone``: the bounds of ``created_at`` and ``updated_at`` per run of 4,096 image ids
(``edgecatalog.listing.zones``), kept by triggers that widen them on every insert and change,
filled here from the images already there. A search page visits the zones that hold the
term's matches in the order of these bounds instead of walking the whole sort index.

The engine renders the table, its triggers and its backfill from the declaration; the zone
size and bound columns are fixed by this migration (a later change needs its own:
0015 added captured_at's).
"""

from __future__ import annotations

from edgecatalog.engines import engine_of

# The keys as this migration installs them, frozen (a migration must not follow later
# declarations; 0015 added captured_at).
KEYS = {
    "created_at": ("created_lo", "created_hi"),
    "updated_at": ("updated_lo", "updated_hi"),
}


def up(migrator, db):
    engine = engine_of(db)
    for sql in engine.zone_ddl(KEYS):
        db.execute_sql(sql)
    for sql in engine.zone_backfill(KEYS):
        db.execute_sql(sql)
    for statements in engine.zone_triggers(KEYS).values():
        for sql in statements:
            db.execute_sql(sql)
