"""GET /files/<id>: the image bytes, by id only, from the path stored in the database.

The resolved real path (symlinks followed) must stay inside the image's root, and that root
must be one the configuration names or the catalog registered (a scanned folder); anything
else is a 404, as if the file did not exist. Conditional (ETag, If-Modified-Since) and Range
requests are answered by Werkzeug.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from flask import Blueprint, g, request
from werkzeug.wsgi import wrap_file
from flask import Response

from .. import params
from ..errors import Gone, NotFound
from ..models import FileRoot, Image
from ..web import authenticator, bearer_principal, settings

bp = Blueprint("files", __name__)


def allowed_roots() -> list[str]:
    """The images dir, the configured watch dirs, and every folder the catalog registered as
    a root (``edgecatalog scan DIR`` in index mode registers DIR: its images are served too)."""
    cfg = settings()
    roots = [cfg.images_dir] + [Path(d).expanduser() for d in cfg["capture.watch_dirs"]]
    roots += [Path(p) for (p,) in FileRoot.select(FileRoot.path).tuples()]
    return [os.path.realpath(r) for r in roots]


def authorize_file(image_id: int) -> None:
    """A bearer token, or a valid signature for exactly this image."""
    if "signature" in request.args or "expires" in request.args:
        g.principal = authenticator().verify_file_signature(
            f"files/{image_id}", request.args.get("expires", ""),
            request.args.get("signature", ""))
    else:
        g.principal = bearer_principal()


def resolve_image_file(image_id: int) -> tuple[Image, str]:
    image = (Image.select(Image, FileRoot.path.alias("root_path"))
             .join(FileRoot, on=(Image.root == FileRoot.id))
             .where(Image.id == image_id).objects().first())
    if image is None:
        raise NotFound(f"image {image_id} does not exist", "id")
    if image.evicted_at is not None:
        raise Gone(f"image {image_id} was evicted from this device after it was synced", "id")
    root = os.path.realpath(image.root_path)
    if root not in allowed_roots():
        raise NotFound(f"image {image_id} has no file here", "id")
    resolved = os.path.realpath(os.path.join(root, image.path))
    if os.path.commonpath([root, resolved]) != root or resolved == root:
        raise NotFound(f"image {image_id} has no file here", "id")
    return image, resolved


@bp.get("/files/<int:image_id>")
def get_file(image_id: int):
    image_id = min(image_id, params.MAX_ID)
    authorize_file(image_id)
    image, path = resolve_image_file(image_id)
    try:
        # O_NOFOLLOW: the last component was resolved above and must not be swapped for a link.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
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
