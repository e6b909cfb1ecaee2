"""Two copies the catalog kept of what it already had, dropped: ~100 bytes an image.

- ``image.path``: every path into the catalog (upload, folder indexing, import, a device's
  upload to the site gateway) wrote the same value as ``storage_key``, which is now where an
  image's bytes are, relative to its root.
- ``capture_file.stem`` and its index: the path less its suffix, so that a late sidecar finds
  its image. ``indexer.image_for_stem`` now looks the stem's image paths up in the
  (root, path) index instead.

SQLite (3.35 or newer) drops a column by rewriting the table, which it does only when no index
or trigger names the column (none does); PostgreSQL marks it dropped. The space comes back to
the file system after ``VACUUM`` on SQLite (``edgecatalog`` never runs one by itself: it
rewrites the whole file).
"""


def up(migrator, db):
    db.execute_sql("DROP INDEX IF EXISTS capture_file_root_id_stem")
    db.execute_sql("ALTER TABLE capture_file DROP COLUMN stem")
    db.execute_sql("ALTER TABLE image DROP COLUMN path")
