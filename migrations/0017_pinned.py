"""``image.pinned``: an image a reviewer wants kept. Retention never evicts a pinned image's
bytes, the list serves and filters the flag, and upstream selection rules can match it.

Added as a plain column with a default, so the migration rewrites no row on either engine
(SQLite adds the column to the schema only; PostgreSQL 11+ keeps the default in the catalog).
"""

from edgecatalog.engines import engine_of


def up(migrator, db):
    if engine_of(db).name == "postgres":
        db.execute_sql("ALTER TABLE image ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT false")
    else:
        db.execute_sql("ALTER TABLE image ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")
