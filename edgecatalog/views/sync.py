"""GET /sync/status: the store-and-forward state, as ``edgecatalog status`` prints it."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import envelope
from ..access import requires
from ..config import ConfigError
from ..sync.client import load_credentials
from ..sync.state import status_report
from ..web import settings

bp = Blueprint("sync", __name__)


@bp.get("/sync/status")
@requires("read")
def sync_status():
    cfg = settings()
    try:
        fingerprint = load_credentials(cfg).fingerprint(cfg["upstream.base_url"])
    except ConfigError:
        fingerprint = None  # an unreadable key file: show the stored state as it is
    return jsonify(envelope.ok(status_report(cfg, fingerprint)))
