"""GET /auth/upload: may this request's credentials upload? Asked by the reverse proxy.

The nginx front (deploy/nginx/edgecatalog.conf) sends every POST /device/images/upload's
headers here with ``auth_request`` before it reads a byte of the body, so an unauthenticated
client is refused without its (up to 50 MiB) body being read, streamed or spooled anywhere.

The answer is the upload route's own: the same ``UPLOAD_ACCESS`` declaration (access.py), so
the two can never disagree on who may upload; as a GET it only asks a device's rate budget,
never spends it. 204 with no body when the credentials are good; the service's usual
401/403/429 error envelope otherwise. No body is read. It opens a database connection like
every authenticated route: credential checks may consult state kept in the database (device
keys, token revocations), exactly as they do on the upload route.
"""

from __future__ import annotations

from flask import Blueprint, Response

from .upload import UPLOAD_ACCESS

bp = Blueprint("authcheck", __name__)


@bp.get("/auth/upload")
@UPLOAD_ACCESS
def upload_allowed() -> Response:
    return Response(status=204)
