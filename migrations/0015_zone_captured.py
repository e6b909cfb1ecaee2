"""``image_zone`` gains bounds of ``captured_at`` per zone (``edgecatalog.listing.zones``), so
a ``captured_after``/``captured_before`` range implies an exact ``created_at`` window (the
created_at bounds of the zones whose captured bounds meet the range) that the created_at
indexes serve, without an index of its own on captured_at (~20 bytes an image).

The table is rebuilt rather than altered (its bound columns are NOT NULL, with no default that
would hold): its triggers dropped, the table made again with the three keys, filled from the
images, and its triggers made again.
"""

from __future__ import annotations

from edgecatalog.engines import engine_of

KEYS = {
    "created_at": ("created_lo", "created_hi"),
    "updated_at": ("updated_lo", "updated_hi"),
    "captured_at": ("captured_lo", "captured_hi"),
}


def up(migrator, db):
    engine = engine_of(db)
    for name in engine.zone_triggers(KEYS):
        db.execute_sql(engine.drop_trigger(name))
    db.execute_sql("DROP TABLE IF EXISTS image_zone")
    for sql in engine.zone_ddl(KEYS):
        db.execute_sql(sql)
    for sql in engine.zone_backfill(KEYS):
        db.execute_sql(sql)
    for statements in engine.zone_triggers(KEYS).values():
        for sql in statements:
            db.execute_sql(sql)
