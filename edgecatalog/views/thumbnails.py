"""GET /files/<id>/thumbnail?size=N: a small JPEG of an image, for grids.

Same rules as ``/files/<id>``: a bearer token or the signature of the image's own URL (so a
page turns ``image_url`` into a thumbnail URL by inserting ``/thumbnail`` and adding
``&size=``), the file found only through the database and checked against its root, 410 for
an evicted image. A thumbnail not cached yet may be answered 503 ``THUMBNAILS_BUSY`` with
``Retry-After`` when enough requests already wait for a decode (``waiting_bound``).
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from .. import params, thumbnails
from ..errors import NotFound, ValidationError
from ..web import settings
from .files import FILE_ACCESS, open_image_file, protect

bp = Blueprint("thumbnails", __name__)


def parse_size(args) -> int:
    given = params.single_values(args, ["size"], max_chars=16)
    allowed = ", ".join(str(s) for s in thumbnails.SIZES)
    if "size" not in given:
        raise ValidationError("size", f"size is required: one of {allowed}")
    size = params.parse_int("size", given["size"])
    if size not in thumbnails.SIZES:
        raise ValidationError("size", f"size must be one of {allowed}, got {size}")
    return size


def waiting_bound(server_threads: int) -> int:
    """How many requests may wait for a thumbnail decode: half the server's threads (at least
    one), so the other half is always free for list requests, files and cached thumbnails."""
    return max(1, server_threads // 2)


@bp.get("/files/<int:image_id>/thumbnail")
@FILE_ACCESS
def get_thumbnail(image_id: int):
    image_id = min(image_id, params.MAX_ID)
    size = parse_size(request.args)
    opened = open_image_file(image_id)
    cfg = settings()
    try:
        with opened.handle:
            thumb = thumbnails.get_thumbnail(
                opened.handle,
                opened.stat,
                opened.sha256,
                opened.byte_size,
                size,
                cfg.data_dir / thumbnails.CACHE_DIRNAME,
                cfg["ui.thumbnail_max_pixels"],
                max_waiting=waiting_bound(cfg["server.threads"]),
            )
    except OSError:
        raise NotFound(f"image {image_id} has no file here", "id") from None
    response = protect(Response(thumb.data, mimetype="image/jpeg"))
    response.set_etag(thumb.etag)
    response.cache_control.private = True
    if thumb.cached:
        response.cache_control.max_age = 3600
    else:
        response.cache_control.no_store = True
    return response.make_conditional(request.environ)
