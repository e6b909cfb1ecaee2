"""POST /data/annotations, PATCH /data/annotations/<id>, DELETE /data/annotations/<id>.

Edits meet the configured ``[ingest]`` annotation caps (``catalog.AnnotationLimits``), as
uploads and sidecars do.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import annotation_edits, envelope, params
from ..access import requires
from ..catalog import AnnotationLimits
from ..serialize import annotation_to_dict
from ..web import json_body, settings
from . import bodies

bp = Blueprint("annotations", __name__)


@bp.post("/data/annotations")
@requires("write")
def create_annotation():
    cfg = settings()
    limits = AnnotationLimits.from_settings(cfg)
    new = bodies.parse_new_annotation(json_body(), limits)
    annotation_id = annotation_edits.create_annotation(
        new, max_annotations=cfg["ingest.max_annotations"], limits=limits
    )
    row = annotation_edits.get_annotation_row(annotation_id)
    return jsonify(envelope.ok(annotation_to_dict(row))), 201


@bp.patch("/data/annotations/<int:annotation_id>")
@requires("write")
def patch_annotation(annotation_id: int):
    changes = bodies.parse_annotation_patch(json_body())
    annotation_id = min(annotation_id, params.MAX_ID)
    annotation_edits.update_annotation(
        annotation_id, changes, AnnotationLimits.from_settings(settings())
    )
    return jsonify(
        envelope.ok(annotation_to_dict(annotation_edits.get_annotation_row(annotation_id)))
    )


@bp.delete("/data/annotations/<int:annotation_id>")
@requires("write")
def delete_annotation(annotation_id: int):
    annotation_id = min(annotation_id, params.MAX_ID)
    annotation_edits.delete_annotation(annotation_id)
    return jsonify(envelope.ok({"id": annotation_id, "deleted": True}))
