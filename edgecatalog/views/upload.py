"""POST /device/images/upload: the cloud's device upload contract, served locally.

Authenticated by ``X-Device-Key`` or by a bearer token with the ``write`` scope. A device key
is one device: its uploads are that device's (``ingest.upload``: another ``device_id`` or a
"manual" annotation is refused) and spend that device's rate budget (``[auth]
device_requests_per_minute``), checked here, before the body is read. The body is handed to
``ingest.upload.ingest_upload`` as a stream: nothing here reads it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.wsgi import get_input_stream

from .. import envelope
from ..errors import Forbidden
from ..ingest.upload import DeviceShare, UploadConfig, ingest_upload
from ..web import authenticator, bearer_principal, settings

bp = Blueprint("upload", __name__)
# Methods that only ask (GET /auth/upload, the proxy's check before each upload): they are
# refused when the device is over its rate but spend nothing, or every upload behind the
# proxy would cost its device two requests.
_ASKING = frozenset({"GET", "HEAD"})
_config_lock = threading.Lock()


def device_or_bearer(scope: str = "write") -> Callable:
    """A valid ``X-Device-Key`` (within its device's rate), or a bearer token with ``scope``;
    401/403/429 otherwise."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any):
            key = request.headers.get("X-Device-Key")
            if key is not None:
                auth = authenticator()
                principal = auth.verify_device_key(key.strip())
                auth.limit_device(principal, spend=request.method not in _ASKING)
                g.principal = principal
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


def upload_config() -> UploadConfig:
    """The app's upload configuration, made once: it holds the per-device byte totals."""
    config = current_app.extensions.get("edgecatalog.upload_config")
    if config is None:
        with _config_lock:
            config = current_app.extensions.get("edgecatalog.upload_config")
            if config is None:
                config = UploadConfig.from_settings(settings(), DeviceShare(settings()))
                current_app.extensions["edgecatalog.upload_config"] = config
    return config


@bp.post("/device/images/upload")
@device_or_bearer("write")
def upload_image():
    # The raw input stream, without Werkzeug's own size check: ingest_upload checks the
    # declared length first (with the configured limit in its message) and counts the rest.
    body = get_input_stream(request.environ, max_content_length=None)
    principal = g.principal
    result = ingest_upload(upload_config(), body, request.headers.get("Content-Type", ""),
                           request.content_length,
                           device_id=principal.device_id if principal.kind == "device" else None)
    response = jsonify(envelope.ok(result.to_dict()))
    response.status_code = 200 if result.duplicate else 201
    return response
