"""A sidecar that arrives (or changes) after its image was indexed.

The sidecar is the pipeline's word on that image, so applying it *replaces* the image's
sidecar-made annotations (every annotation whose source is not ``manual`` or ``import``) with
its content; annotations a person added through the API, or an import brought, are kept. Applying the same content again changes
nothing. A change touches the image's ``updated_at`` and, for an image already synced
upstream, queues ``delete_annotation`` / ``create_annotation`` items for the sync worker.
A late JSON sidecar also sets ``model_id`` / ``model_version`` when it names them; its
device, timestamp and filename are not applied (the image already has a batch and a place).
"""

from __future__ import annotations

import logging
from typing import Any

from ..catalog import REVIEWED_SOURCES, annotation_columns, queue_change
from ..db import write_tx
from ..models import Annotation, Image
from ..timeutil import now_us
from .metadata import Metadata

log = logging.getLogger("edgecatalog.capture")

COMPARED = ("class_value", "type", "geometry", "confidence", "z_order")


def _signature(rows: list[dict[str, Any]]) -> list[tuple]:
    return sorted(tuple(row[k] for k in COMPARED) for row in rows)


def apply_sidecar(image_id: int, meta: Metadata) -> bool:
    """Replace the image's non-reviewed annotations with the sidecar's. True if anything changed.

    Runs in the caller's transaction when there is one (it nests), else in its own.
    """
    now = now_us()
    with write_tx():
        image = Image.get_or_none(Image.id == image_id)
        if image is None:
            return False
        old = list(
            Annotation.select()
            .where((Annotation.image == image_id) & Annotation.source.not_in(REVIEWED_SOURCES))
            .dicts()
        )
        new = [annotation_columns(a, image.width, image.height) for a in meta.annotations]
        changes: dict[str, Any] = {}
        if meta.model_id and meta.model_id != image.model_id:
            changes["model_id"] = meta.model_id
        if meta.model_version and meta.model_version != image.model_version:
            changes["model_version"] = meta.model_version
        if _signature(old) == _signature(new) and not changes:
            return False
        Annotation.delete().where(Annotation.id.in_([row["id"] for row in old])).execute()
        created = [
            Annotation.create(image=image_id, created_at=now, updated_at=now, **cols)
            for cols in new
        ]
        Image.update(updated_at=now, **changes).where(Image.id == image_id).execute()
        for row in old:
            queue_change(
                image,
                "delete_annotation",
                {"annotation_id": row["id"], "class_value": row["class_value"]},
                now,
            )
        for ann in created:
            queue_change(image, "create_annotation", {"annotation_id": ann.id}, now)
        if changes:
            queue_change(image, "patch_image", changes, now)
    log.info(
        "sidecar applied to image %s: %d annotation(s) replaced by %d",
        image_id,
        len(old),
        len(created),
    )
    return True
