"""Rows to contract dicts: the field names, types and order of types.ImageDetailResponse and
types.AnnotationDTO. Empty strings, never null, for string fields without a value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .timeutil import format_ts


def annotation_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "image_id": row["image"],
        "class_value": row["class_value"],
        "type": row["type"],
        "geometry": json.loads(row["geometry"]),
        "x_center": row["x_center"],
        "y_center": row["y_center"],
        "width": row["width"],
        "height": row["height"],
        "confidence": row["confidence"],
        "source": row["source"],
        "z_order": row["z_order"],
        "created_at": format_ts(row["created_at"]),
        "updated_at": format_ts(row["updated_at"]),
    }


def image_to_dict(
    row: dict[str, Any], image_url: Callable[[int], str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "filename": row["filename"],
        "storage_key": row["storage_key"],
    }
    if image_url is not None:
        # An evicted file has no URL to give; the key stays so clients see the same shape.
        out["image_url"] = "" if row.get("evicted_at") else image_url(row["id"])
    out.update(
        width=row["width"],
        height=row["height"],
        device_id=row["device_id"],
        batch_id=row["batch"],
        batch_name=row["batch_name"] or "",
        project_name=row["project_name"] or "",
        annotation_status=row["annotation_status"],
        split=row["split"],
        split_locked=bool(row["split_locked"]),
        version_name=row["version_name"] or "",
        created_at=format_ts(row["created_at"]),
        updated_at=format_ts(row["updated_at"]),
        # Additive fields of the edge catalog.
        sync_state=row["sync_state"],
        synced_at=format_ts(row["synced_at"]),
    )
    if "annotations" in row:
        out["annotations"] = [annotation_to_dict(a) for a in row["annotations"]]
    return out


def project_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "created_at": format_ts(row["created_at"]),
        "updated_at": format_ts(row["updated_at"]),
    }


def batch_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "device_id": row["device_id"],
        "project_id": row["project"],
        "project_name": row["project_name"] or "",
        "stage": row["stage"],
        "image_count": row["image_count"],
        "opened_at": format_ts(row["opened_at"]),
        "closed_at": format_ts(row["closed_at"]),
        "created_at": format_ts(row["created_at"]),
        "updated_at": format_ts(row["updated_at"]),
    }
