"""What is sent upstream for an outbox row: the upload's file and ``metadata`` JSON, and the
bodies of later changes. Geometry goes back to the normalized form the upload contract uses:
a bbox from its stored normalized centre and size, a polygon from its stored pixels.
"""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO

from .. import safeopen
from ..models import Annotation, Device, FileRoot, Image, Outbox
from ..timeutil import format_ts
from .client import UploadRequest

CONTENT_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


class LocalFileProblem(Exception):
    """The image's file is missing or outside its root: the item cannot be sent."""


def _clamp(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def annotation_to_upload(ann: Annotation, width: int, height: int) -> dict[str, Any]:
    if ann.type == "bbox":
        geometry = [
            _clamp(ann.x_center),
            _clamp(ann.y_center),
            _clamp(ann.width),
            _clamp(ann.height),
        ]
    else:
        pixels = json.loads(ann.geometry)
        geometry = [
            _clamp(v / (width if i % 2 == 0 else height)) if (width and height) else 0.0
            for i, v in enumerate(pixels)
        ]
    out: dict[str, Any] = {"class_value": ann.class_value, "type": ann.type, "geometry": geometry}
    if ann.confidence is not None:
        out["confidence"] = ann.confidence
    if ann.source:
        out["source"] = ann.source
    out["z_order"] = ann.z_order
    return out


def open_image(image: Image, root_path: str) -> BinaryIO:
    """The image's file, opened beneath its root without following links (``safeopen``):
    a link planted in its place since it was indexed never sends what it points at."""
    try:
        return safeopen.open_file(root_path, image.storage_key)
    except FileNotFoundError:
        raise LocalFileProblem(f"the file of image {image.id} is missing") from None
    except safeopen.UnsafeFile as exc:
        raise LocalFileProblem(f"the file of image {image.id} {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise LocalFileProblem(f"the file of image {image.id} cannot be opened: {exc}") from None


def load_images(ids: list[int]) -> dict[int, Image]:
    """The images of a batch of rows, with ``device_name`` (the device's device_id; the
    attribute ``device_id`` is the foreign key) and ``root_path``, in one query."""
    query = (
        Image.select(Image, Device.device_id.alias("device_name"), FileRoot.path.alias("root_path"))
        .join(Device, on=(Image.device == Device.id))
        .switch(Image)
        .join(FileRoot, on=(Image.root == FileRoot.id))
        .where(Image.id.in_(ids))
        .objects()
    )
    return {image.id: image for image in query}


def load_annotations(ids: list[int]) -> dict[int, list[Annotation]]:
    """The annotations of a batch of images, in one query, in the order they are sent."""
    grouped: dict[int, list[Annotation]] = {i: [] for i in ids}
    query = (
        Annotation.select()
        .where(Annotation.image.in_(ids))
        .order_by(Annotation.image, Annotation.z_order, Annotation.id)
    )
    for ann in query:
        grouped[ann.image_id].append(ann)
    return grouped


def upload_request(row: Outbox, image: Image, annotations: list[Annotation]) -> UploadRequest:
    """``image`` comes from ``load_images`` (it carries device_name and root_path)."""
    with open_image(image, image.root_path) as fh:
        head = fh.read(16)
        size = os.fstat(fh.fileno()).st_size
    if size != image.byte_size:
        raise LocalFileProblem(
            f"the file of image {image.id} changed after it was indexed "
            f"({size} bytes, indexed with {image.byte_size})"
        )
    content_type = next(
        (t for magic, t in CONTENT_TYPES.items() if head.startswith(magic)),
        "application/octet-stream",
    )
    metadata = {
        "model_id": image.model_id,
        "model_version": image.model_version,
        "source": image.source,
        "timestamp": format_ts(image.captured_at),
        "device_id": image.device_name,
        "filename": image.filename,
        "sha256": image.sha256,
        "annotations": [annotation_to_upload(a, image.width, image.height) for a in annotations],
    }
    return UploadRequest(
        image.root_path,
        image.storage_key,
        size,
        image.filename,
        content_type,
        metadata,
        row.idempotency_key,
    )


DEFAULT_FIELDS = {"annotation_status": "pending", "split": "none", "split_locked": False}


def fields_after_upload(image: Image) -> dict[str, Any]:
    """Fields that differ from what a fresh upstream image has; PATCHed right after upload
    because the upload contract has no place for them."""
    current = {
        "annotation_status": image.annotation_status,
        "split": image.split,
        "split_locked": bool(image.split_locked),
    }
    return {k: v for k, v in current.items() if v != DEFAULT_FIELDS[k]}


def annotation_body(row: Outbox, image: Image) -> dict[str, Any] | None:
    """The POST /data/annotations body of a create_annotation row, or None if it is gone.

    The payload names the local annotation (``annotation_id``); its current columns are sent,
    so an edit made before the row left is not lost. A payload that carries the annotation
    itself (``class_value`` ...) is sent as it is.
    """
    payload = json.loads(row.payload or "{}")
    if "class_value" in payload:
        body = {k: v for k, v in payload.items() if k != "annotation_id"}
    else:
        ann = Annotation.get_or_none(Annotation.id == payload.get("annotation_id"))
        if ann is None:
            return None
        body = annotation_to_upload(ann, image.width, image.height)
    body["image_id"] = _remote_id_value(image.remote_id)
    return body


def _remote_id_value(remote_id: str) -> Any:
    # Ids are opaque, but a number upstream gave must go back as a number, not a string.
    return int(remote_id) if remote_id.isdigit() else remote_id


def mirror_set(image: Image) -> list[dict[str, Any]]:
    """The image's annotations now, as a site gateway's ``PUT .../annotations`` takes them."""
    query = (
        Annotation.select()
        .where(Annotation.image == image.id)
        .order_by(Annotation.z_order, Annotation.id)
    )
    return [annotation_to_upload(ann, image.width, image.height) for ann in query]
