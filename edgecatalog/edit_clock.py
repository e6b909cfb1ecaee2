"""When each field of an image last changed, and where: the rule that, between a site
gateway's reviewers and a device mirroring its own edits, the later edit of a field wins.

A field is one of ``catalog.PATCHABLE`` or ``ANNOTATIONS`` (an image's annotation set, as one
field: a device mirrors the whole set). Every change through this catalog's API records its
fields with the time of the change (``LOCAL``); a device's mirrored change records them with
the time the device made it (``device_origin``). A mirrored change of a field applies only when
it was made after the time recorded for that field; at the same microsecond the recorded one
stays. Edit times are the clocks of the machines that made the edits: a site keeps its
devices' clocks in step (NTP), as it must for capture times anyway. No Flask.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import FieldEdit

ANNOTATIONS = "annotations"
LOCAL = "local"


def device_origin(device_id: str) -> str:
    return f"device:{device_id}"


def record(image_id: int, fields: Iterable[str], edited_at: int, origin: str) -> None:
    """``fields`` of the image changed at ``edited_at``; in the caller's transaction."""
    rows = [
        {"image": image_id, "field": name, "edited_at": edited_at, "origin": origin}
        for name in sorted(set(fields))
    ]
    if not rows:
        return
    FieldEdit.insert_many(rows).on_conflict(
        conflict_target=[FieldEdit.image, FieldEdit.field],
        update={FieldEdit.edited_at: edited_at, FieldEdit.origin: origin},
    ).execute()


def superseded(image_id: int, fields: Iterable[str], edited_at: int) -> set[str]:
    """The ``fields`` changed at or after ``edited_at``: a change made at ``edited_at`` loses
    to them."""
    names = sorted(set(fields))
    if not names:
        return set()
    query = FieldEdit.select(FieldEdit.field).where(
        (FieldEdit.image == image_id)
        & FieldEdit.field.in_(names)
        & (FieldEdit.edited_at >= edited_at)
    )
    return {row.field for row in query}


def last_edits(image_id: int) -> dict[str, tuple[int, str]]:
    """field -> (edited_at, origin) of every field of the image with a recorded edit."""
    query = FieldEdit.select().where(FieldEdit.image == image_id)
    return {row.field: (row.edited_at, row.origin) for row in query}
