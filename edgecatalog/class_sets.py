"""An image's set of annotation classes as one id (``image.class_set_id``), so that a total
over several classes is a sum over count tables (``listing.counts``: ``image_set_*``) instead
of a distinct count over the annotations. No Flask.

A set is its classes sorted and joined by U+001F (a class value never holds a control
character); ``class_set`` keeps one row per set ever seen, ``class_set_member`` which sets hold
each class, and 0 is the empty set. Triggers on ``annotation`` (migration 0013) move an image
to its new set whenever a class appears on it or its last annotation of a class goes; the bulk
writer gives a new image its set as it inserts it (``ids_for``), so its annotations' triggers
find their class already in the set and do nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import database

SEP = "\x1f"
EMPTY = 0


def set_key(classes: Iterable[str]) -> str:
    """The set's text: its distinct classes, sorted, joined by SEP; "" for none."""
    return SEP.join(sorted(set(classes)))


def ids_for(keys: Iterable[str]) -> dict[str, int]:
    """The id of each set (``set_key`` text), adding the sets (and their members) not seen
    before; "" is EMPTY. In the caller's write transaction.

    Plain SQL: it runs in every upload's transaction, where the ORM's three statements cost
    ~0.2 ms of CPU. Sets already known (nearly every image's) are found by one SELECT; only
    the others are inserted, with their members, as the triggers of migration 0013 add a set
    and its members together."""
    wanted = sorted({k for k in keys if k})
    ids = {"": EMPTY}
    for start in range(0, len(wanted), 500):  # bounded statements, whatever the chunk
        part = wanted[start : start + 500]
        ids.update(_known(part))
        new = [k for k in part if k not in ids]
        if not new:
            continue
        cursor = database.cursor()
        cursor.executemany(
            "INSERT INTO class_set (classes) VALUES (?) ON CONFLICT DO NOTHING",
            [(k,) for k in new],
        )
        ids.update(_known(new))
        cursor.executemany(
            "INSERT INTO class_set_member (class_value, set_id) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING",
            [(c, ids[k]) for k in new for c in k.split(SEP)],
        )
    return ids


def _known(keys: list[str]) -> dict[str, int]:
    marks = ", ".join("?" * len(keys))
    rows = database.execute_sql(
        f"SELECT classes, id FROM class_set WHERE classes IN ({marks})", keys
    ).fetchall()
    return dict(rows)
