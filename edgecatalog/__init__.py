"""edgecatalog: an offline, edge-side image catalog.

``create_app(settings)`` builds the Flask application; nothing runs at import time.
"""

from __future__ import annotations

from flask import Flask

from .config import Settings, load_settings

__all__ = ["create_app", "__version__"]
__version__ = "0.1.0"


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> Flask:
    """Wire settings, database, auth, error handling and blueprints into one app."""
    from . import db, web
    from .auth import Authenticator
    from .views import files, images

    settings = settings if settings is not None else load_settings()
    app = Flask(__name__, static_folder=None)
    app.config["EDGECATALOG"] = settings
    app.config["MAX_CONTENT_LENGTH"] = max(
        settings["ingest.max_upload_bytes"], settings["server.max_json_body_bytes"]
    )
    app.json.sort_keys = False  # keep the contract's field order
    db.open_for(settings)
    if migrate:
        db.migrate()
    app.extensions["edgecatalog.auth"] = Authenticator(settings)
    web.install(app)
    app.register_blueprint(images.bp)
    app.register_blueprint(files.bp)
    return app
