"""The list's count tables, declared once: what each counts and by which image columns.

A count table holds, for every combination of its key columns, how many images have it
(``per_class``: how many images carry at least one annotation of a class, per class and
key; with ``annotations``, also how many annotations of the class those images carry).
Triggers keep each one in the writing transaction, so a total read from it is exact at every
commit. Everything about them is derived from ``COUNT_TABLES``:

- the tables, their triggers, their backfill and the grouped statement of a bulk chunk: the
  engine renders them (``engines.sqlite``), and a migration written by ``new_migration``
  installs them (``engines.install_counts``; a test holds the newest one to this declaration);
- the planner's choice of count source (``source_for``): the first declared table of the
  right kind whose key columns cover every filter's columns, so tables are declared smallest
  first.

Adding a facet column: a ``Key`` on the tables that should count it, a ``Filter`` naming it
(``listing.query``), and ``python -m edgecatalog.listing.new_migration NAME`` for its migration.
No Flask, no models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    """An ``image`` column a count table is keyed by, with its SQL type."""

    name: str
    type: str  # "INTEGER" or "TEXT"
    # A column computed from another (a generated column): the one an UPDATE changes.
    of: str | None = None


@dataclass(frozen=True)
class CountTable:
    name: str
    keys: tuple[Key, ...]
    per_class: bool = False  # keyed by an annotation class_value before the image columns
    # Per class only: also count the annotations of the class on those images (column
    # ``annotations``), so the class facet's annotation counts come from the table too.
    annotations: bool = False

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every key column of the table, in order (``class_value`` first when per class)."""
        return (("class_value",) if self.per_class else ()) + self.key_names

    @property
    def update_of(self) -> tuple[str, ...]:
        """The image columns whose update can change a key (a generated key: its source)."""
        return tuple(dict.fromkeys(k.of or k.name for k in self.keys))

    def covers(self, columns: Iterable[str]) -> bool:
        return set(columns) <= set(self.key_names)


BATCH = Key("batch_id", "INTEGER")
DEVICE = Key("device_id", "INTEGER")
STATUS = Key("annotation_status", "TEXT")
SPLIT = Key("split", "TEXT")
SYNC = Key("sync_state", "TEXT")
# The image's set of classes (``class_sets``): a total over several classes is a sum over the
# sets that hold any of them, which per-class tables cannot give (an image with two of the
# classes would count twice).
CLASS_SET = Key("class_set_id", "INTEGER")
# Without the batch, a few hundred rows on a device with a handful of cameras; with it, the
# rows multiply by the batches (22,594 at 1M images over 2,000 batches).
TOTAL_KEYS = (DEVICE, STATUS, SPLIT, SYNC)
# Where an image came from: no filter reads them, the facets do (``listing.facets``); beside
# the total's keys so a facet of them honours those filters from the table too.
SOURCE = Key("source", "TEXT")
MODEL_VERSION = Key("model_version", "TEXT")
FACET_KEYS = (BATCH, *TOTAL_KEYS)
# The hour a capture was taken in (UTC; ``image.captured_hour``, a column generated from
# captured_at, migration 0019): a captured_at range is its whole hours from a table keyed by
# it, plus the rows of the one or two hours it covers in part (``listing.hours``).
CAPTURED_HOUR = Key("captured_hour", "INTEGER", of="captured_at")
CONFIDENCE_BITS = Key("confidence_bits", "INTEGER")

# Smallest first within each kind: the planner takes the first that covers the filters.
COUNT_TABLES: tuple[CountTable, ...] = (
    CountTable("image_total_count", TOTAL_KEYS),
    CountTable("image_facet_count", FACET_KEYS),
    CountTable("image_class_count", (), per_class=True, annotations=True),
    # Without the batch: a class's rows are few (24,482 rows in all at 1M images, against
    # 266,307 with it), so a class facet or total under the total's keys reads a range of them.
    CountTable(
        "image_class_total", (*TOTAL_KEYS, SOURCE, MODEL_VERSION), per_class=True, annotations=True
    ),
    # Under a batch or a project alone (its batches): a class's rows per batch, 50,000 in all
    # at 1M images over 2,000 batches against image_class_facet's 266,307; a project of 750
    # batches reads 19 ms of those, 4 of these.
    CountTable("image_class_batch", (BATCH,), per_class=True, annotations=True),
    CountTable("image_class_facet", FACET_KEYS, per_class=True, annotations=True),
    # Several classes: by set alone (a few thousand rows), then led by the filter column a
    # total most often narrows by (the device; the batch, which a project's filter becomes),
    # so that filter is a range of the key, not a probe per set.
    CountTable("image_set_total", (CLASS_SET,)),
    # Under a status, split or sync state without a device: a quarter of image_set_count's
    # rows (62,689 against 252,827 at 1M images), those of the status a range of the key.
    CountTable("image_set_status", (STATUS, SPLIT, SYNC, CLASS_SET)),
    CountTable("image_set_count", (DEVICE, CLASS_SET, STATUS, SPLIT, SYNC)),
    CountTable("image_set_facet", (BATCH, CLASS_SET, DEVICE, STATUS, SPLIT, SYNC)),
    # Source and model_version: their facets read these, and the model_version filter's
    # totals; alone and under a batch or project (under one class: image_class_total).
    CountTable("image_origin_count", (*TOTAL_KEYS, SOURCE, MODEL_VERSION)),
    CountTable("image_origin_facet", (*FACET_KEYS, SOURCE, MODEL_VERSION)),
    # The review queue's confidence range alone: the images per set of confidence buckets
    # (``confidence_bits``; 16,195 rows at 1M). No filter declares the column, so no other
    # total picks it; the planner reads it for a confidence range without other filters.
    CountTable("image_confidence_count", (CONFIDENCE_BITS,)),
    # Under a captured_at range: its hours alone (a histogram, a range's total: 720 rows for
    # 30 days), with every facet's key (205,128 rows at 1M images over 30 days), and per
    # class (18,000 rows).
    CountTable("image_hour_count", (CAPTURED_HOUR,)),
    CountTable("image_hour_facet", (CAPTURED_HOUR, *FACET_KEYS, SOURCE, MODEL_VERSION)),
    CountTable("image_hour_class", (CAPTURED_HOUR,), per_class=True, annotations=True),
)


def source_for(
    columns: Iterable[str], *, per_class: bool, tables: tuple[CountTable, ...] = COUNT_TABLES
) -> CountTable | None:
    """The count table that answers a total over ``columns`` (the filters' key columns), or
    None when no declared table has them all."""
    wanted = set(columns)
    for table in tables:
        if table.per_class == per_class and table.covers(wanted):
            return table
    return None
