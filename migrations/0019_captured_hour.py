"""``image.captured_hour``: the UTC hour of captured_at, a column the engine computes (so no
writer sets it), and count tables keyed by it: a captured_at range is then its whole hours
from a table plus the rows of the hours it covers in part (``listing.hours``).

The count tables as ``edgecatalog.listing.counts`` declared them when this migration was
written (frozen here: a later declaration needs its own migration).
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


# Floor division (Python's //) on both engines, negative instants included.
HOUR = (
    "CASE WHEN captured_at >= 0 THEN captured_at / 3600000000 "
    "ELSE -((3599999999 - captured_at) / 3600000000) END"
)


def up(migrator, db):
    if engine_of(db).name == "postgres":
        db.execute_sql(
            f"ALTER TABLE image ADD COLUMN captured_hour BIGINT GENERATED ALWAYS AS ({HOUR}) STORED"
        )
    else:  # SQLite adds a VIRTUAL generated column only: computed when read, nothing stored
        db.execute_sql(
            f"ALTER TABLE image ADD COLUMN captured_hour INTEGER GENERATED ALWAYS AS ({HOUR}) "
            "VIRTUAL"
        )
    install_counts(db.execute_sql, TABLES, previous=PREVIOUS, engine=engine_of(db))
