"""The list's count tables as ``edgecatalog.listing.counts`` declares them, their triggers
rendered by the engine from that declaration instead of written out per table.

The tables and their rows are those of migrations 0004 and 0005 (same names, same keys, so
nothing is rebuilt); the hand-written triggers of 0004, 0005 and 0006 are dropped and the
rendered ones, with 0006's bulk-load gate on every INSERT trigger, take their place. The
declaration is frozen here as literals: a later change to ``COUNT_TABLES`` needs its own
migration (``python -m edgecatalog.listing.new_migration NAME`` writes it, and
``tests/test_count_declaration.py`` fails until it exists).
"""

from __future__ import annotations

from edgecatalog.engines import engine_of, install_counts
from edgecatalog.listing.counts import CountTable, Key

LEGACY_TRIGGERS = (
    "image_facet_ai",
    "image_facet_ad",
    "image_facet_au",
    "image_class_facet_bd",
    "annotation_class_ai",
    "annotation_class_ad",
    "annotation_class_au_old",
    "annotation_class_au_new",
    "image_total_ai",
    "image_total_ad",
    "image_total_au",
)

_FACET = (
    Key("batch_id", "INTEGER"),
    Key("device_id", "INTEGER"),
    Key("annotation_status", "TEXT"),
    Key("split", "TEXT"),
    Key("sync_state", "TEXT"),
)
TABLES = (
    CountTable("image_total_count", _FACET[1:], per_class=False),
    CountTable("image_facet_count", _FACET, per_class=False),
    CountTable("image_class_count", (), per_class=True),
    CountTable("image_class_facet", _FACET, per_class=True),
)


def up(migrator, db):
    if engine_of(db).name == "postgres":  # 0004 and 0005 made none there: all of them now
        install_counts(db.execute_sql, TABLES, engine=engine_of(db))
        return
    # previous=TABLES: the same tables are there already, only their triggers change.
    install_counts(
        db.execute_sql,
        TABLES,
        previous=TABLES,
        old_triggers=LEGACY_TRIGGERS,
        engine=engine_of(db),
    )
