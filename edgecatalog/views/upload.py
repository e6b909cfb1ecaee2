"""POST /device/images/upload: the cloud's device upload contract, served locally.

Authenticated by ``X-Device-Key`` or by a bearer token with the ``write`` scope. The body is
handed to ``ingest.upload.ingest_upload`` as a stream: nothing here reads it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Blueprint, g, jsonify, request
from werkzeug.wsgi import get_input_stream

from .. import envelope
from ..errors import Forbidden
from ..ingest.upload import UploadConfig, ingest_upload
from ..web import authenticator, bearer_principal, settings

bp = Blueprint("upload", __name__)


def device_or_bearer(scope: str = "write") -> Callable:
    """A valid ``X-Device-Key``, or a bearer token with ``scope``; 401/403 otherwise."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any):
            key = request.headers.get("X-Device-Key")
            if key is not None:
                g.principal = authenticator().verify_device_key(key.strip())
            else:
                principal = bearer_principal()
                if not principal.can(scope):
                    raise Forbidden(f"this route needs the '{scope}' scope or a device key",
                                    "scope")
                g.principal = principal
            return view(*args, **kwargs)

        wrapper.required_scope = scope  # read by the route/auth coverage test
        return wrapper

    return decorate


@bp.post("/device/images/upload")
@device_or_bearer("write")
def upload_image():
    # The raw input stream, without Werkzeug's own size check: ingest_upload checks the
    # declared length first (with the configured limit in its message) and counts the rest.
    body = get_input_stream(request.environ, max_content_length=None)
    result = ingest_upload(UploadConfig.from_settings(settings()), body,
                           request.headers.get("Content-Type", ""), request.content_length)
    response = jsonify(envelope.ok(result.to_dict()))
    response.status_code = 200 if result.duplicate else 201
    return response
