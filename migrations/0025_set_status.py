"""The count table ``image_set_status``: per status, split, sync state and class set, the
images, so a total over several classes under a status, split or sync state without a device
reads a quarter of image_set_count's rows (62,689 against 252,827 at 1M images), those of the
status one range of its key (5 common classes and a status at 1M: ~47 ms of count rows).

The list's count tables as ``edgecatalog.listing.counts`` declared them when this migration
was written (frozen here: a later declaration needs its own migration).
"""

from __future__ import annotations

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
        "image_class_batch",
        (Key("batch_id", "INTEGER"),),
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
        "image_class_batch",
        (Key("batch_id", "INTEGER"),),
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
        "image_set_status",
        (
            Key("annotation_status", "TEXT"),
            Key("split", "TEXT"),
            Key("sync_state", "TEXT"),
            Key("class_set_id", "INTEGER"),
        ),
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
    install_counts(db.execute_sql, TABLES, previous=PREVIOUS, engine=engine_of(db))
