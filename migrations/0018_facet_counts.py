"""The list's count tables as ``edgecatalog.listing.counts`` declared them when this
migration was written (frozen here: a later declaration needs its own migration).

The per-class tables also count annotations (the class facet's annotation counts); a per-class
table without the batch; the origin facets (source, model_version) get tables under a batch or
project and under classes.
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
)


def up(migrator, db):
    install_counts(db.execute_sql, TABLES, previous=PREVIOUS, engine=engine_of(db))
