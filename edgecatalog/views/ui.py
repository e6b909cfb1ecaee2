"""GET / (the inspection page) and GET /static/<file> (its scripts, styles and icon).

The page holds no data: everything it shows comes from the public API with the token the
user gives it, so these routes are declared ``public``. The files ship inside the package (no
build step, no CDN: the device is offline). Every response carries a strict Content-Security-Policy
(scripts, styles, images and fetches from this origin only, nothing inline) and is served with
an ETag and ``no-cache``, so a browser revalidates cheaply and never runs a stale script
after an upgrade.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from ..access import public

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

CSP_DIRECTIVES = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
)
CONTENT_SECURITY_POLICY = "; ".join(CSP_DIRECTIVES)

bp = Blueprint("ui", __name__)


def _static(name: str) -> Response:
    # send_from_directory refuses names that leave STATIC_DIR (404), sets ETag/Last-Modified
    # and answers If-None-Match with 304.
    response = send_from_directory(STATIC_DIR, name, max_age=0)
    response.cache_control.no_cache = True
    response.cache_control.public = None
    return response


@bp.get("/")
@public()
def index() -> Response:
    return _static("index.html")


@bp.get("/static/<path:name>")
@public()
def static_file(name: str) -> Response:
    return _static(name)


@bp.after_request
def _page_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    # The token travels in the URL fragment, never sent; no-referrer keeps signed image URLs
    # and filter queries from leaking to anything the page links to.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response
