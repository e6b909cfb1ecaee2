"""GET /files/<id>: the image bytes, by id only, from the path stored in the database.

The file is opened beneath the image's root (a folder the catalog registered, ``file_root``:
the images dir, a watch dir, a scanned folder) without following any link (``safeopen``):
a link or anything but a regular file is a 404, as if the file did not exist. It is served as
the format its first bytes show (the same detection as ingest), never as its name says, with
a policy that lets a browser do nothing with it but show an image. Conditional (ETag,
If-Modified-Since) and Range requests are answered by Werkzeug.

Who may read it (``FILE_ACCESS``): a bearer token with the read scope, or a signed URL for
exactly this image (``expires`` or ``signature`` present takes the signed path); the thumbnail
route shares it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import BinaryIO

from flask import Blueprint, Response, request
from werkzeug.wsgi import wrap_file

from .. import params, safeopen
from ..access import requires
from ..errors import Gone, NotFound
from ..ingest.store import sniff_format
from ..models import database

bp = Blueprint("files", __name__)

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp"}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
# A file from a device is data, never a document: even if a browser were made to render it
# as one, it runs no script, loads nothing and gets an opaque origin.
FILE_CSP = "default-src 'none'; sandbox"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# A bearer token with the read scope, or the signature of this image's own URL. Shared with
# the thumbnail route.
FILE_ACCESS = requires("read", signed_url=True)


@dataclass
class OpenedFile:
    """An image's file, open for reading; the caller closes ``handle``."""

    image_id: int
    filename: str
    sha256: str
    byte_size: int  # as indexed; ``stat.st_size`` is what is there now
    handle: BinaryIO
    stat: os.stat_result
    format: str | None  # JPEG, PNG, WEBP or BMP from the first bytes; None: not an image now


# One statement, no model instance: this route serves every image of every grid.
FILE_SQL = """SELECT i.filename, i.sha256, i.byte_size, i.evicted_at, r.path, i.storage_key
 FROM image i JOIN file_root r ON r.id = i.root_id WHERE i.id = ?"""


def open_image_file(image_id: int) -> OpenedFile:
    """The image's file: its root and relative path from the database only, opened beneath
    the root without following links; NotFound when there is no such regular file."""
    row = database.execute_sql(FILE_SQL, (image_id,)).fetchone()
    if row is None:
        raise NotFound(f"image {image_id} does not exist", "id")
    filename, sha256, byte_size, evicted_at, root_path, rel_path = row
    if evicted_at is not None:
        raise Gone(f"image {image_id} was evicted from this device after it was synced", "id")
    try:
        fd = safeopen.open_fd(root_path, rel_path)
    except (OSError, ValueError):
        raise NotFound(f"image {image_id} has no file here", "id") from None
    handle = os.fdopen(fd, "rb")
    head = os.pread(fd, 32, 0)
    return OpenedFile(
        image_id, filename, sha256, byte_size, handle, os.fstat(fd), sniff_format(head)
    )


def disposition(opened: OpenedFile) -> str:
    """``inline`` with an ASCII name whose extension is the detected format's, so a saved
    file never gets the ``.html`` a device may have named it; ``attachment`` for a file that
    is no image any more."""
    stem = _UNSAFE_NAME.sub("_", os.path.splitext(opened.filename)[0]).strip("._")[:100]
    stem = stem or f"image-{opened.image_id}"
    if opened.format is None:
        return f'attachment; filename="{stem}.bin"'
    return f'inline; filename="{stem}.{EXTENSIONS[opened.format]}"'


def protect(response: Response) -> Response:
    """The headers every answer carrying a device's bytes (or a picture made from them) has."""
    response.headers["Content-Security-Policy"] = FILE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cross-Origin-Resource-Policy"] = "same-site"
    return response


@bp.get("/files/<int:image_id>")
@FILE_ACCESS
def get_file(image_id: int):
    image_id = min(image_id, params.MAX_ID)
    opened = open_image_file(image_id)
    mimetype = MEDIA_TYPES.get(opened.format or "", "application/octet-stream")
    response = Response(
        wrap_file(request.environ, opened.handle), mimetype=mimetype, direct_passthrough=True
    )
    response.content_length = opened.stat.st_size
    response.last_modified = opened.stat.st_mtime
    response.set_etag(opened.sha256)
    response.cache_control.private = True
    response.cache_control.max_age = 3600
    response.headers["Content-Disposition"] = disposition(opened)
    protect(response)
    return response.make_conditional(
        request.environ, accept_ranges=True, complete_length=opened.stat.st_size
    )
