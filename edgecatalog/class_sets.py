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

from .models import ClassSet, ClassSetMember

SEP = "\x1f"
EMPTY = 0


def set_key(classes: Iterable[str]) -> str:
    """The set's text: its distinct classes, sorted, joined by SEP; "" for none."""
    return SEP.join(sorted(set(classes)))


def ids_for(keys: Iterable[str]) -> dict[str, int]:
    """The id of each set (``set_key`` text), adding the sets (and their members) not seen
    before; "" is EMPTY. In the caller's write transaction."""
    wanted = sorted({k for k in keys if k})
    ids = {"": EMPTY}
    if not wanted:
        return ids
    for start in range(0, len(wanted), 500):  # bounded statements, whatever the chunk
        part = wanted[start : start + 500]
        ClassSet.insert_many([{"classes": k} for k in part]).on_conflict_ignore().execute()
        found = ClassSet.select(ClassSet.id, ClassSet.classes).where(ClassSet.classes.in_(part))
        ids.update({row.classes: row.id for row in found})
        members = [{"class_value": c, "set_id": ids[k]} for k in part for c in k.split(SEP)]
        ClassSetMember.insert_many(members).on_conflict_ignore().execute()
    return ids
