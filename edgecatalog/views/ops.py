"""Operations endpoints and per-request observation.

* ``GET /healthz``: liveness; no auth and no database work (declared
  ``public(database=False)``, so web.py does not even open a connection), so it answers while
  the database is wedged.
* ``GET /readyz``: the ``health.readiness`` checks; 503 ``NOT_READY`` (the usual error envelope,
  with the checks as its ``data``) listing the failing ones. No auth, so the body carries check
  names, messages and disk figures only, never paths or secrets.
* ``GET /metrics``: Prometheus text; a bearer token with ``read``, or no token from an address
  in ``[metrics] allow_from`` (single addresses or CIDR networks).
* ``GET /openapi.json``: the API document (``openapi.document()``); public, like the docs.
* ``install_observers``: one access-log line and one metrics observation per request.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from .. import apidoc, envelope, health
from ..access import public, requires
from ..errors import NotReady
from ..logsetup import scrub_query
from ..metrics import CONTENT_TYPE, Metrics
from ..web import settings

bp = Blueprint("ops", __name__)
access_log = logging.getLogger("edgecatalog.access")
_T0 = "edgecatalog.t0"


@bp.get("/healthz")
@public(database=False)
def healthz():
    return jsonify(envelope.ok({"status": "ok"}))


@bp.get("/readyz")
@public()
def readyz():
    checks = health.readiness(settings())
    failing = [c.name for c in checks if not c.ok]
    data = {
        "status": "fail" if failing else "ok",
        "checks": {c.name: {"ok": c.ok, "message": c.message, **c.figures} for c in checks},
    }
    if not failing:
        return jsonify(envelope.ok(data))
    err = NotReady("service is not ready: " + ", ".join(failing), ",".join(failing))
    # The one error envelope, with the checks as its data, so a probe's log shows which
    # failed and why.
    return jsonify(envelope.error_body(err, data)), err.status


@bp.get("/metrics")
@requires("read", allow_from="metrics.allow_from")
def metrics():
    body = current_app.extensions["edgecatalog.metrics"].render()
    return Response(body, content_type=CONTENT_TYPE)


@bp.get("/openapi.json")
@public(database=False)
def openapi_json():
    response = jsonify(apidoc.document())
    response.cache_control.max_age = 300
    return response


def _observe(response: Response) -> Response:
    started = request.environ.get(_T0)
    seconds = time.perf_counter() - started if started else 0.0
    rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    current_app.extensions["edgecatalog.metrics"].observe_request(
        request.method, rule, response.status_code, seconds
    )
    query = scrub_query(request.query_string.decode("latin-1"))
    path = request.path + ("?" + query if query else "")
    access_log.info(
        "%s %s %d %.1fms",
        request.method,
        path,
        response.status_code,
        seconds * 1000,
        extra={
            "route": rule,
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 2),
            "request_id": g.get("request_id", "-"),
            "remote": request.remote_addr or "-",
        },
    )
    return response


class _StartClock:
    """WSGI middleware stamping the arrival time, before any Flask hook can return early."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        environ[_T0] = time.perf_counter()
        return self.wsgi_app(environ, start_response)


def install_observers(app: Flask) -> None:
    app.extensions["edgecatalog.metrics"] = Metrics(app.config["EDGECATALOG"])
    app.wsgi_app = _StartClock(app.wsgi_app)
    app.after_request(_observe)
