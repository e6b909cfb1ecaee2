"""``image.crc32``: the CRC-32 of an image's bytes, counted beside the SHA-256 as they are
read in (upload, folder indexing, import). An export writes it in the ZIP headers instead of
reading every file once more to count it before sending it.

A plain nullable column, so the migration rewrites no row on either engine; an image indexed
before it keeps NULL, and an export counts its CRC from the bytes as it did.
"""

from edgecatalog.engines import engine_of


def up(migrator, db):
    kind = "BIGINT" if engine_of(db).name == "postgres" else "INTEGER"
    db.execute_sql(f"ALTER TABLE image ADD COLUMN crc32 {kind}")
