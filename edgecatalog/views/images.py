"""GET /data/images, PATCH /data/images (bulk), GET /data/images/<id>, PATCH
/data/images/<id>."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from flask import Blueprint, Response, g, jsonify, request

from .. import bulk_edits, catalog, envelope, listing, params, site
from ..access import authenticator, requires
from ..serialize import annotation_writer, image_json, image_to_dict
from ..web import json_body, public_base, settings
from . import bodies

bp = Blueprint("images", __name__)


def signed_url_maker() -> Callable[[int], str]:
    base, auth = public_base(), authenticator()

    def url(image_id: int) -> str:
        expires, signature = auth.sign_file(image_id)
        return f"{base}/files/{image_id}?expires={expires}&signature={signature}"

    return url


@bp.get("/data/images")
@requires("read")
def list_images():
    cfg = settings()
    query = listing.parse_image_query(
        request.args,
        max_class_values=cfg["limits.max_class_values"],
        max_chars=cfg["limits.max_param_chars"],
    )
    page = listing.select_images(query)
    url = signed_url_maker() if query.include_image_url else None
    meta = envelope.page_meta(len(page.rows), page.limit, page.offset, page.total)
    if query.include_annotations:
        # A page of images at the annotation caps can be tens of MB: read and written out a
        # few images at a time, so the process never holds it whole (docs/threat-model.md).
        write = annotation_writer(listing.ANNOTATION_COLUMNS)
        texts = (image_json(row, write, url) for row in page.items(tuples=True))
        return Response(envelope.stream_texts(texts, meta), mimetype="application/json")
    return jsonify(envelope.ok([image_to_dict(row, url) for row in page.rows], meta))


@bp.patch("/data/images")
@requires("write")
def patch_images():
    cfg = settings()
    body = json_body()
    change = bodies.parse_bulk_patch(
        body,
        max_class_values=cfg["limits.max_class_values"],
        max_chars=cfg["limits.max_param_chars"],
    )
    key = request.headers.get("Idempotency-Key", "")
    idem = None
    if key:
        # The key belongs to this body: the same key with another change is refused.
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
        idem = bulk_edits.Idempotency(
            f"token:{g.principal.subject}", site.check_key(key), f"PATCH /data/images {digest}"
        )
        site.forget_expired(cfg["site.idempotency_hours"])
    return jsonify(envelope.ok(bulk_edits.apply(change, idem)))


@bp.get("/data/images/facets")
@requires("read")
def image_facets():
    cfg = settings()
    stats_request = listing.parse_facet_request(
        request.args,
        max_class_values=cfg["limits.max_class_values"],
        max_chars=cfg["limits.max_param_chars"],
    )
    data, total = listing.answer_stats(stats_request)
    return jsonify(envelope.ok(data, {"total": total}))


@bp.get("/data/images/<int:image_id>")
@requires("read")
def get_image(image_id: int):
    given = params.single_values(
        request.args, ["include_image_url"], max_chars=settings()["limits.max_param_chars"]
    )
    with_url = (
        params.parse_bool("include_image_url", given["include_image_url"])
        if "include_image_url" in given
        else False
    )
    row = listing.get_image_row(min(image_id, params.MAX_ID))
    return jsonify(envelope.ok(image_to_dict(row, signed_url_maker() if with_url else None)))


@bp.patch("/data/images/<int:image_id>")
@requires("write")
def patch_image(image_id: int):
    changes = bodies.parse_image_patch(json_body())
    image_id = min(image_id, params.MAX_ID)
    catalog.update_image(image_id, changes)
    return jsonify(envelope.ok(image_to_dict(listing.get_image_row(image_id))))
