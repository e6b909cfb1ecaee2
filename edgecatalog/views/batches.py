"""GET /data/batches, GET /data/batches/<id>, PATCH /data/batches/<id>."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import batches, envelope, listing, params
from ..access import requires
from ..serialize import batch_to_dict
from ..web import json_body, settings
from . import bodies

bp = Blueprint("batches", __name__)


@bp.get("/data/batches")
@requires("read")
def list_batches():
    query = listing.parse_filtered_page(
        request.args, batches.BATCH_FILTERS, max_chars=settings()["limits.max_param_chars"]
    )
    page = batches.select_batches(query)
    data = [batch_to_dict(row) for row in page.rows]
    return jsonify(
        envelope.ok(data, envelope.page_meta(len(data), page.limit, page.offset, page.total))
    )


@bp.get("/data/batches/<int:batch_id>")
@requires("read")
def get_batch(batch_id: int):
    return jsonify(envelope.ok(batch_to_dict(batches.get_batch_row(min(batch_id, params.MAX_ID)))))


@bp.patch("/data/batches/<int:batch_id>")
@requires("write")
def patch_batch(batch_id: int):
    changes = bodies.parse_batch_patch(json_body())
    batch_id = min(batch_id, params.MAX_ID)
    batches.update_batch(batch_id, changes)
    return jsonify(envelope.ok(batch_to_dict(batches.get_batch_row(batch_id))))
