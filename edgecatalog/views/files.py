"""GET /files/<id>: the image bytes, by id only, from the path stored in the database.

The resolved real path (symlinks followed) must stay inside the image's root, a folder the
catalog registered (``file_root``: the images dir, a watch dir, a scanned folder); anything
else is a 404, as if the file did not exist. Conditional (ETag, If-Modified-Since) and Range
requests are answered by Werkzeug.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass

from flask import Blueprint, Response, g, request
from werkzeug.wsgi import wrap_file

from .. import params
from ..errors import Gone, NotFound
from ..models import database
from ..web import authenticator, bearer_principal

bp = Blueprint("files", __name__)


def authorize_file(image_id: int) -> None:
    """A bearer token, or a valid signature for exactly this image."""
    if "signature" in request.args or "expires" in request.args:
        g.principal = authenticator().verify_file_signature(
            f"files/{image_id}", request.args.get("expires", ""),
            request.args.get("signature", ""))
    else:
        g.principal = bearer_principal()


@dataclass(frozen=True)
class StoredFile:
    filename: str
    sha256: str
    byte_size: int
    path: str  # real path, inside the image's root


# One statement, no model instance: this route serves every image of every grid.
FILE_SQL = """SELECT i.filename, i.sha256, i.byte_size, i.evicted_at, r.path, i.path
 FROM image i JOIN file_root r ON r.id = i.root_id WHERE i.id = ?"""


def resolve_image_file(image_id: int) -> StoredFile:
    """The image's file: its root (a ``file_root`` row: the images dir, a watch dir or a
    scanned folder) joined with its relative path, both from the database only, and the
    resolved real path (symlinks followed) still inside the resolved root."""
    row = database.execute_sql(FILE_SQL, (image_id,)).fetchone()
    if row is None:
        raise NotFound(f"image {image_id} does not exist", "id")
    filename, sha256, byte_size, evicted_at, root_path, rel_path = row
    if evicted_at is not None:
        raise Gone(f"image {image_id} was evicted from this device after it was synced", "id")
    root = os.path.realpath(root_path)
    resolved = os.path.realpath(os.path.join(root, rel_path))
    if os.path.commonpath([root, resolved]) != root or resolved == root:
        raise NotFound(f"image {image_id} has no file here", "id")
    return StoredFile(filename, sha256, byte_size, resolved)


@bp.get("/files/<int:image_id>")
def get_file(image_id: int):
    image_id = min(image_id, params.MAX_ID)
    authorize_file(image_id)
    image = resolve_image_file(image_id)
    try:
        # O_NOFOLLOW: the last component was resolved above and must not be swapped for a link.
        fd = os.open(image.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise NotFound(f"image {image_id} has no file here", "id") from None
    handle = os.fdopen(fd, "rb")
    stat = os.fstat(fd)
    mimetype = mimetypes.guess_type(image.filename)[0] or "application/octet-stream"
    response = Response(wrap_file(request.environ, handle), mimetype=mimetype,
                        direct_passthrough=True)
    response.content_length = stat.st_size
    response.last_modified = stat.st_mtime
    response.set_etag(image.sha256)
    response.cache_control.private = True
    response.cache_control.max_age = 3600
    return response.make_conditional(request.environ, accept_ranges=True,
                                      complete_length=stat.st_size)
