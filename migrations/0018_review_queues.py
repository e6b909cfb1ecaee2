"""The review queues' indexes: ``annotation (confidence, image_id)``, so a confidence range
(``min_confidence``/``max_confidence``) reads its images from the index alone, and
``image (pinned, created_at)``, so the pinned queue is a range of an index in the list's
default order. Both are plain indexes, made the same way on either engine.
"""


def up(migrator, db):
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS annotation_confidence_image_id "
        "ON annotation (confidence, image_id)"
    )
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS image_pinned_created_at ON image (pinned, created_at)"
    )
