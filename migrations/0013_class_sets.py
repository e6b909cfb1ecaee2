"""Class sets: an image's distinct annotation classes as one id, so a total over several
classes is a sum over count tables instead of a distinct count over the annotations (seconds
at a site's ten million images).

- ``image.class_set_id`` (0: no annotation), ``class_set`` (each set ever seen: its classes
  sorted, joined by U+001F) and ``class_set_member`` (which sets hold each class);
- the triggers that move an image to its new set when a class appears on it or its last
  annotation of a class goes (rendered by the engine: ``class_set_triggers``), and the
  backfill of the sets of the images already there;
- then the count tables as ``edgecatalog.listing.counts`` declared them when this migration
  was written, the three ``image_set_*`` tables new (frozen here: a later declaration needs its
  own migration).

The models below are frozen copies of edgecatalog.models as of this migration.
"""

from __future__ import annotations

from peewee import CompositeKey, IntegerField, Model, TextField

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
)


def up(migrator, db):
    class BaseModel(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class ClassSet(BaseModel):
        classes = TextField(unique=True)

    class ClassSetMember(BaseModel):
        class_value = TextField()
        set_id = IntegerField()

        class Meta:
            primary_key = CompositeKey("class_value", "set_id")

    engine = engine_of(db)
    db.execute_sql("ALTER TABLE image ADD COLUMN class_set_id INTEGER NOT NULL DEFAULT 0")
    db.create_tables([ClassSet, ClassSetMember])
    for sql in engine.class_set_backfill():
        db.execute_sql(sql)
    for statements in engine.class_set_triggers().values():
        for sql in statements:
            db.execute_sql(sql)
    install_counts(db.execute_sql, TABLES, previous=PREVIOUS, engine=engine)
