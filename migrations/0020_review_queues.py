"""The review queues: their indexes, and ``image.confidence_bits`` with its count table.

- ``annotation (confidence, image_id)``: a confidence range (``min_confidence`` /
  ``max_confidence``) reads its annotations' images from the index alone;
- ``image (pinned, created_at)``: the pinned queue is a range of an index in the list's
  default order;
- ``dataset_export``: when each dataset export was planned, its format and filters (the
  "changed since the last export" queue);
- ``image.confidence_bits`` (``edgecatalog.confidence_bits``: one bit per bucket of 0.05
  its annotations' confidences fall in), filled from the annotations and kept by triggers on
  ``annotation``; and the count table ``image_confidence_count`` keyed by it, so the
  uncertainty queue's total is a sum over a few hundred rows.

And ``image_origin_set`` goes (272k rows at 1M images, ~11 bytes per image, for the
source and model_version facets under several classes, which the rows now answer; under one
class ``image_class_total`` has them).

The count tables as ``edgecatalog.listing.counts`` declared them when this migration was
written are frozen below (a later declaration needs its own migration).
"""

from __future__ import annotations

from peewee import BigIntegerField, Model, TextField

from edgecatalog.engines import engine_of, install_counts
from edgecatalog.listing.counts import CountTable, Key

# What the previous count migration installed.
PREVIOUS = (
    CountTable(
        "image_total_count",
        (
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_facet_count",
        (
            Key("batch_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_class_count",
        (),
        per_class=True,
        annotations=True,
    ),
    CountTable(
        "image_class_total",
        (
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("source", "TEXT"),
            Key("model_version", "TEXT"),
        ),
        per_class=True,
        annotations=True,
    ),
    CountTable(
        "image_class_facet",
        (
            Key("batch_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=True,
        annotations=True,
    ),
    CountTable(
        "image_set_total",
        (Key("class_set_id", "INTEGER"),),
        per_class=False,
    ),
    CountTable(
        "image_set_count",
        (
            Key("device_id", "INTEGER"),
            Key("class_set_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_set_facet",
        (
            Key("batch_id", "INTEGER"),
            Key("class_set_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_origin_count",
        (
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("source", "TEXT"),
            Key("model_version", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_origin_facet",
        (
            Key("batch_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("source", "TEXT"),
            Key("model_version", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_origin_set",
        (
            Key("class_set_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("source", "TEXT"),
            Key("model_version", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_hour_count",
        (Key("captured_hour", "INTEGER", of="captured_at"),),
        per_class=False,
    ),
    CountTable(
        "image_hour_facet",
        (
            Key("captured_hour", "INTEGER", of="captured_at"),
            Key("batch_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("source", "TEXT"),
            Key("model_version", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_hour_class",
        (Key("captured_hour", "INTEGER", of="captured_at"),),
        per_class=True,
        annotations=True,
    ),
)
TABLES = (
    CountTable(
        "image_total_count",
        (
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_facet_count",
        (
            Key("batch_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_class_count",
        (),
        per_class=True,
        annotations=True,
    ),
    CountTable(
        "image_class_total",
        (
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("source", "TEXT"),
            Key("model_version", "TEXT"),
        ),
        per_class=True,
        annotations=True,
    ),
    CountTable(
        "image_class_facet",
        (
            Key("batch_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=True,
        annotations=True,
    ),
    CountTable(
        "image_set_total",
        (Key("class_set_id", "INTEGER"),),
        per_class=False,
    ),
    CountTable(
        "image_set_count",
        (
            Key("device_id", "INTEGER"),
            Key("class_set_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_set_facet",
        (
            Key("batch_id", "INTEGER"),
            Key("class_set_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_origin_count",
        (
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("source", "TEXT"),
            Key("model_version", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_origin_facet",
        (
            Key("batch_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("source", "TEXT"),
            Key("model_version", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_confidence_count",
        (Key("confidence_bits", "INTEGER"),),
        per_class=False,
    ),
    CountTable(
        "image_hour_count",
        (Key("captured_hour", "INTEGER", of="captured_at"),),
        per_class=False,
    ),
    CountTable(
        "image_hour_facet",
        (
            Key("captured_hour", "INTEGER", of="captured_at"),
            Key("batch_id", "INTEGER"),
            Key("device_id", "INTEGER"),
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("source", "TEXT"),
            Key("model_version", "TEXT"),
        ),
        per_class=False,
    ),
    CountTable(
        "image_hour_class",
        (Key("captured_hour", "INTEGER", of="captured_at"),),
        per_class=True,
        annotations=True,
    ),
)


def up(migrator, db):
    class DatasetExport(Model):  # frozen copy of edgecatalog.models.DatasetExport
        format = TextField()
        filters = TextField(default="{}")
        planned_at = BigIntegerField()

        class Meta:
            database = db
            legacy_table_names = False
            indexes = ((("planned_at",), False),)

    db.create_tables([DatasetExport])
    engine = engine_of(db)
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS annotation_confidence_image_id "
        "ON annotation (confidence, image_id)"
    )
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS image_pinned_created_at ON image (pinned, created_at)"
    )
    wide = "BIGINT" if engine.name == "postgres" else "INTEGER"  # 41 bits
    db.execute_sql(f"ALTER TABLE image ADD COLUMN confidence_bits {wide} NOT NULL DEFAULT 0")
    for sql in engine.confidence_backfill():
        db.execute_sql(sql)
    for statements in engine.confidence_triggers().values():
        for sql in statements:
            db.execute_sql(sql)
    install_counts(db.execute_sql, TABLES, previous=PREVIOUS, engine=engine)
