"""Three columns the catalog kept and never needed, dropped: ~160 bytes an image at 1M.

- ``image.path``: every path into the catalog (upload, folder indexing, import, a device's
  upload to the site gateway) wrote the same value as ``storage_key``, which is now where an
  image's bytes are, relative to its root.
- ``capture_file.stem`` and its index: the path less its suffix, so that a late sidecar finds
  its image. ``indexer.image_for_stem`` now looks the stem's image paths up in the
  (root, path) index instead.
- ``image.remote_storage_key``: the cloud's storage key of a synced image, stored and never
  read; ``remote_id`` names the image upstream.

SQLite (3.35 or newer) drops a column by rewriting the table, which it does only when no
index or trigger names the column (none names these); PostgreSQL marks it dropped. On SQLite
the space comes back to the file system after ``VACUUM`` (``edgecatalog`` never runs one by
itself: it rewrites the whole file).
"""


def up(migrator, db):
    db.execute_sql("DROP INDEX IF EXISTS capture_file_root_id_stem")
    db.execute_sql("ALTER TABLE capture_file DROP COLUMN stem")
    db.execute_sql("ALTER TABLE image DROP COLUMN path")
    db.execute_sql("ALTER TABLE image DROP COLUMN remote_storage_key")
