"""edgecatalog: an offline, edge-side image catalog.

``create_app(settings)`` builds the Flask application; nothing runs at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import pgdriver

pgdriver.hidden_from_peewee()  # before any module imports peewee: pgdriver says why

from .config import Settings, load_settings
from .version import __version__

if TYPE_CHECKING:  # Flask is imported by create_app only, so the domain and CLI load without it
    from flask import Flask

__all__ = ["__version__", "create_app"]


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> Flask:
    """Wire settings, database, auth, error handling and blueprints into one app."""
    from flask import Flask

    from . import jwtload

    settings = settings if settings is not None else load_settings()
    # Before anything imports jwt: jwtload says why.
    jwtload.prepare(public_keys=not settings["auth.jwt_algorithms"][0].startswith("HS"))
    from . import db, web
    from .auth import Authenticator
    from .views import exports, files, images

    app = Flask(__name__, static_folder=None)
    app.config["EDGECATALOG"] = settings
    app.config["MAX_CONTENT_LENGTH"] = max(
        settings["ingest.max_upload_bytes"], settings["server.max_json_body_bytes"]
    )
    app.json.sort_keys = False  # keep the contract's field order
    # Key material first: a bad key file stops start-up before the database is created.
    app.extensions["edgecatalog.auth"] = Authenticator(settings)
    db.open_for(settings)
    if migrate:
        db.migrate()
    web.install(app)
    app.register_blueprint(images.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(exports.bp)
    from .views import sync as sync_views

    app.register_blueprint(sync_views.bp)
    from .ingest.upload import reconcile_at_startup
    from .views import annotations, batches, projects, upload

    if migrate:  # needs the schema; removes files an interrupted ingest left without a row
        with db.database.connection_context():
            app.extensions["edgecatalog.ingest_lock"], _ = reconcile_at_startup(settings.images_dir)
    for blueprint in (upload.bp, projects.bp, batches.bp, annotations.bp):
        app.register_blueprint(blueprint)
    from .views import authcheck  # GET /auth/upload: the reverse proxy's pre-body auth check

    app.register_blueprint(authcheck.bp)
    if settings["site.enabled"]:  # the site gateway: its devices' upstream, under /api
        from .views import site

        app.register_blueprint(site.bp)
    from .views import thumbnails, ui

    app.register_blueprint(thumbnails.bp)
    app.register_blueprint(ui.bp)
    from .views import ops

    ops.install_observers(app)  # access log + request metrics, for every route
    app.register_blueprint(ops.bp)
    return app
