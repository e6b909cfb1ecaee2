"""GET /data/exports/<format>: a view of the catalog as a dataset archive, streamed; GET
/data/exports: the exports planned so far, newest first.

The archive is planned first (``datasets.build_export``), so its length and ETag are known
before the first byte. Range (one range; several, or a unit other than bytes, get the whole
archive, as RFC 9110 lets a server do), If-Range (the archive's strong ETag only: a date or
another tag gets the whole archive) and If-None-Match are answered here; every range of the
same plan is the same bytes. The bytes go out through the server's ``wsgi.file_wrapper``
(``datasets.ArchiveFile``), which waitress sends from its I/O thread without copying them
through its output buffer; the service's channel (``server.SendingChannel``) sends its images
with ``sendfile``. The spool behind the archive has no name and is closed when the
response ends, however it ends (a client gone mid-stream included).
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, jsonify, request
from werkzeug.http import parse_range_header
from werkzeug.wsgi import wrap_file

from .. import datasets, envelope, listing
from ..access import requires
from ..datasets import history
from ..errors import RangeNotSatisfiable
from ..timeutil import now_us
from ..web import settings

bp = Blueprint("exports", __name__)
log = logging.getLogger("edgecatalog.exports")
BLOCK = 256 * 1024  # what a server iterating the file (not waitress: it reads) asks for


@bp.get("/data/exports/<fmt>")
@requires("read")
def export_dataset(fmt: str):
    cfg = settings()
    wanted = datasets.parse_export(
        fmt,
        request.args,
        max_class_values=cfg["limits.max_class_values"],
        max_chars=cfg["limits.max_param_chars"],
    )
    started, planned_at = time.monotonic(), now_us()
    archive = datasets.build_export(wanted, cfg.data_dir / "exports")
    log.info(
        "export %s planned in %.0f ms: %d members, %d bytes",
        fmt,
        (time.monotonic() - started) * 1000,
        archive.entries,
        archive.size,
    )
    try:
        response = _answer(archive, fmt)
    except BaseException:
        archive.close()
        raise
    if response.status_code == 200:  # a whole archive (not a resumed range, not a 304)
        history.record(fmt, wanted.filters, planned_at)
    return response


@bp.get("/data/exports")
@requires("read")
def list_exports():
    page = listing.parse_filtered_page(request.args, max_chars=settings()["limits.max_param_chars"])
    rows, total = history.recent(page.limit, page.offset)
    return jsonify(envelope.ok(rows, envelope.page_meta(len(rows), page.limit, page.offset, total)))


def _answer(archive: datasets.Archive, fmt: str) -> Response:
    etag = f'"{archive.etag}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        # no-transform: a proxy that compressed it would break every range.
        "Cache-Control": "private, no-transform",
        "Content-Disposition": f'attachment; filename="edgecatalog-{fmt}-{archive.etag[:12]}.zip"',
    }
    if _matches(request.headers.get("If-None-Match", ""), etag):
        archive.close()
        return Response(status=304, headers=headers)
    start, stop, status = 0, archive.size, 200
    wanted = parse_range_header(request.headers.get("Range"))
    if (
        wanted is not None
        and _if_range_holds(etag)
        and wanted.units == "bytes"
        and len(wanted.ranges) == 1
    ):
        bounds = wanted.range_for_length(archive.size)
        if bounds is None:
            raise RangeNotSatisfiable(
                f"the archive has {archive.size} bytes",
                "Range",
                headers={"Content-Range": f"bytes */{archive.size}", **headers},
            )
        start, stop = bounds
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{archive.size}"
    # Closing the file (the server does, however the response ends) closes the archive.
    body = wrap_file(request.environ, datasets.ArchiveFile(archive, start, stop), BLOCK)
    response = Response(
        body, status=status, headers=headers, mimetype="application/zip", direct_passthrough=True
    )
    response.content_length = stop - start
    return response


def _matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


def _if_range_holds(etag: str) -> bool:
    """No If-Range, or this very (strong) ETag: the range may be sent."""
    given = request.headers.get("If-Range")
    return given is None or given.strip() == etag
