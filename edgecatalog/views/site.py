"""The site gateway's ``/api`` routes (``[site] enabled``): the upstream side of the protocol a
device's sync worker speaks, so a device is pointed at the gateway with ``[upstream] base_url
= "http://gateway:8080/api"`` and its own device key, and nothing else changes.

* ``GET /api/device/self``: the cloud's answer, plus ``data.gateway`` (what may be mirrored);
* ``POST /api/device/images/upload``: the device upload, answered as the cloud does (201, a
  duplicate 409 ``DUPLICATE_IMAGE`` with the image's ids); a device's "manual" annotations
  are its reviewers' and are kept;
* ``PATCH /api/data/images/<id>``, ``POST /api/data/annotations``: the cloud's image update and
  annotation creation;
* ``PUT /api/device/images/<id>/annotations``: the device's whole annotation set (edits and
  deletions, which the cloud has no route for).

A device key changes only its own device's images (403). Writes that carry the device's
``edited_at`` follow ``edit_clock``'s later-edit-wins rule. ``Idempotency-Key`` answers are
remembered in the database (``site``), so a retry, also after a restart, is answered, not
redone. The domain is ``edgecatalog.site``; this module only parses and answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.wsgi import get_input_stream

from .. import catalog, envelope, listing, params, site
from ..annotation_edits import get_annotation_row
from ..catalog import AnnotationLimits
from ..edit_clock import LOCAL, device_origin
from ..errors import CatalogError, DuplicateImage, Forbidden, ValidationError
from ..ingest.metadata import parse_metadata
from ..ingest.upload import ingest_upload
from ..serialize import annotation_to_dict, image_to_dict
from ..timeutil import now_us, parse_ts
from ..web import json_body, settings
from . import bodies
from .upload import UPLOAD_ACCESS, upload_config

bp = Blueprint("site", __name__, url_prefix="/api")
log = logging.getLogger("edgecatalog.site")


def _device() -> str | None:
    """The device of a device key; None for a bearer token (a person or a tool, with write)."""
    principal = g.principal
    return principal.device_id if principal.kind == "device" else None


def _scope() -> str:
    device = _device()
    return f"device:{device}" if device else f"token:{g.principal.subject}"


def _edited_at(body: dict[str, Any]) -> int:
    """The device's ``edited_at`` (RFC 3339), not after now: a clock ahead of the gateway's
    must not make a device's edit win over every later one made here."""
    value = body.get("edited_at")
    if value is None:
        return now_us()
    try:
        stamp = parse_ts(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):
        stamp = None
    if stamp is None:
        raise ValidationError(
            "edited_at", "edited_at must be an RFC 3339 date-time such as 2026-11-28T10:00:00Z"
        )
    return min(stamp, now_us())


def _idempotent(work: Callable[[], tuple[int, dict[str, Any]]]) -> Response:
    """Run ``work`` once per ``Idempotency-Key`` of this caller: a key seen before gets the
    answer it got then. Answers that say "try again" (429, 5xx) are not kept."""
    key = request.headers.get("Idempotency-Key", "")
    where = f"{request.method} {request.path}"
    if key:
        site.check_key(key)
        seen = site.replay(_scope(), key, where)
        if seen is not None:
            return _answer(seen.status, seen.body)
    try:
        status, body = work()
    except CatalogError as err:
        if err.status >= 500 or err.status == 429 or err.headers:
            raise
        data = err.ids if isinstance(err, DuplicateImage) else None
        status, body = err.status, envelope.error_body(err, data)
    if key:
        site.remember(_scope(), key, where, status, body)
        site.forget_expired(settings()["site.idempotency_hours"])
    return _answer(status, body)


def _answer(status: int, body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


@bp.get("/device/self")
@UPLOAD_ACCESS
def device_self():
    device = _device()
    if device is None:
        raise Forbidden(
            "GET /api/device/self answers a device key, not a bearer token", "X-Device-Key"
        )
    return jsonify(envelope.ok(site.describe(device, site.device_label(device))))


@bp.post("/device/images/upload")
@UPLOAD_ACCESS
def upload_image():
    body = get_input_stream(request.environ, max_content_length=None)

    def work() -> tuple[int, dict[str, Any]]:
        result = ingest_upload(
            upload_config(),
            body,
            request.headers.get("Content-Type", ""),
            request.content_length,
            device_id=_device(),
            device_review=True,
        )
        ids = {k: result.to_dict()[k] for k in ("image_id", "batch_id", "storage_key")}
        if result.duplicate:
            raise DuplicateImage(
                f"an image with these bytes is already in the catalog (image {result.image_id})",
                "image",
                ids,
            )
        return 201, envelope.ok(ids)

    return _idempotent(work)


@bp.patch("/data/images/<int:image_id>")
@UPLOAD_ACCESS
def patch_image(image_id: int):
    body = bodies.require_object(json_body())
    edited_at = _edited_at(body)
    changes = bodies.parse_image_patch({k: v for k, v in body.items() if k != "edited_at"})
    image_id = min(image_id, params.MAX_ID)
    device = _device()
    site.owned_image(image_id, device)
    kept = catalog.update_image(
        image_id, changes, edited_at=edited_at, origin=device_origin(device) if device else LOCAL
    )
    data = image_to_dict(listing.get_image_row(image_id))
    data["superseded"] = sorted(kept)  # fields a later edit made here keeps as they are
    return jsonify(envelope.ok(data))


def _annotations(raw: Any, param: str) -> tuple:
    cfg = settings()
    parsed = parse_metadata(
        {"annotations": raw},
        max_annotations=cfg["ingest.max_annotations"],
        param=param,
        limits=AnnotationLimits.from_settings(cfg),
    )
    return parsed.annotations


@bp.post("/data/annotations")
@UPLOAD_ACCESS
def create_annotation():
    body = bodies.require_object(json_body())
    bodies.reject_unknown(body, site.ANNOTATION_FIELDS)
    if "image_id" not in body:
        raise ValidationError("image_id", "image_id is required")
    image_id = body["image_id"]
    if (
        isinstance(image_id, bool)
        or not isinstance(image_id, int)
        or not 1 <= image_id <= params.MAX_ID
    ):
        raise ValidationError("image_id", "image_id must be an integer id")
    try:
        (ann,) = _annotations([{k: v for k, v in body.items() if k != "image_id"}], "body")
    except ValidationError as err:  # name the body's own field, not the list it was put in
        field = err.param.replace("body.annotations[0].", "").replace("body.annotations[0]", "body")
        raise ValidationError(field, err.message.replace("body.annotations[0].", "")) from None

    def work() -> tuple[int, dict[str, Any]]:
        device = _device()
        cfg = settings()
        annotation_id = site.add_annotation(
            image_id,
            device,
            ann,
            cfg["ingest.max_annotations"],
            AnnotationLimits.from_settings(cfg),
        )
        return 201, envelope.ok(annotation_to_dict(get_annotation_row(annotation_id)))

    return _idempotent(work)


@bp.put("/device/images/<int:image_id>/annotations")
@UPLOAD_ACCESS
def put_annotations(image_id: int):
    body = bodies.require_object(json_body())
    bodies.reject_unknown(body, ("annotations", "edited_at"))
    if "annotations" not in body:
        raise ValidationError("annotations", "annotations is required (a list, [] for none)")
    edited_at = _edited_at(body)
    annotations = _annotations(body["annotations"], "body")
    image_id = min(image_id, params.MAX_ID)
    result = site.mirror_annotations(image_id, _device(), annotations, edited_at)
    return jsonify(
        envelope.ok(
            {
                "image_id": image_id,
                "applied": result.applied,
                "added": result.added,
                "removed": result.removed,
            }
        )
    )
