"""POST /device/images/upload: the cloud's device upload contract, served locally.

Authenticated by ``X-Device-Key`` or by a bearer token with the ``write`` scope
(``UPLOAD_ACCESS``, shared with ``GET /auth/upload``). A device key is one device: its uploads
are that device's (``ingest.upload``: another ``device_id`` or a "manual" annotation is
refused) and spend that device's rate budget (``[auth] device_requests_per_minute``), checked
by access.py before the body is read. The body is handed to ``ingest.upload.ingest_upload`` as
a stream: nothing here reads it.
"""

from __future__ import annotations

import threading

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.wsgi import get_input_stream

from .. import envelope
from ..access import requires
from ..ingest.upload import DeviceShare, UploadConfig, ingest_upload
from ..web import settings

bp = Blueprint("upload", __name__)
# A device key (within its device's rate; GET /auth/upload only asks, see access._ASKING) or a
# bearer token with the write scope. One object, so the upload and its pre-body check agree.
UPLOAD_ACCESS = requires("write", device_key=True)
_config_lock = threading.Lock()


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
@UPLOAD_ACCESS
def upload_image():
    # The raw input stream, without Werkzeug's own size check: ingest_upload checks the
    # declared length first (with the configured limit in its message) and counts the rest.
    body = get_input_stream(request.environ, max_content_length=None)
    principal = g.principal
    result = ingest_upload(
        upload_config(),
        body,
        request.headers.get("Content-Type", ""),
        request.content_length,
        device_id=principal.device_id if principal.kind == "device" else None,
    )
    response = jsonify(envelope.ok(result.to_dict()))
    response.status_code = 200 if result.duplicate else 201
    return response
