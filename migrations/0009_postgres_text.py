"""PostgreSQL only: every ``VARCHAR(255)`` column peewee made for a ``CharField`` becomes
``TEXT``, the type SQLite gives every such column. The catalog's own bounds (a class value, a
filename, a label) are checked by its code, the same on both engines; a 255-character limit
in the database alone would turn a value SQLite takes into an error on PostgreSQL.
"""

from __future__ import annotations

from edgecatalog.engines import engine_of


def up(migrator, db):
    if engine_of(db).name != "postgres":
        return
    columns = db.execute_sql(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND data_type = 'character varying' "
        "ORDER BY table_name, column_name"
    ).fetchall()
    # A column a trigger names cannot change type: 0007's rename trigger names filename.
    db.execute_sql("DROP TRIGGER IF EXISTS image_name_epoch_au ON image")
    for table, column in columns:
        db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE text')
    db.execute_sql(
        "CREATE TRIGGER image_name_epoch_au AFTER UPDATE OF id, filename ON image FOR EACH ROW "
        "WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.filename IS DISTINCT FROM NEW.filename) "
        "EXECUTE FUNCTION image_name_epoch_bump()"
    )
