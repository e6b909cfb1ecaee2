"""The HTTP edge of the service: the one place errors become responses, plus the
per-request plumbing every view shares (request ids, allowed hosts, limits, CORS, JSON bodies).
Who may call which view is access.py's (its decorators run inside the view); ``_before`` only
asks it whether the view may open a database connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import uuid
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from peewee import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from . import access, envelope
from .config import Settings
from .engines import current as engine
from .errors import (
    CatalogError,
    DatabaseUnavailable,
    InsufficientStorage,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    UnsupportedMediaType,
    UriTooLong,
    ValidationError,
)
from .hosts import HostPolicy, forwarded_headers_middleware, host_name
from .models import database

log = logging.getLogger("edgecatalog.web")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def settings() -> Settings:
    return current_app.config["EDGECATALOG"]


def error_response(err: CatalogError) -> Response:
    response = jsonify(envelope.error_body(err))
    response.status_code = err.status
    for name, value in err.headers.items():
        response.headers[name] = value
    return response


def _http_exception(exc: HTTPException) -> Response:
    mapped: dict[int, CatalogError] = {
        404: NotFound("no such route", request.path),
        405: MethodNotAllowed(f"{request.method} is not allowed on {request.path}", request.method),
        413: PayloadTooLarge("request body is too large", "body"),
        414: UriTooLong("request URI is too long", "query"),
        415: UnsupportedMediaType("unsupported content type", "Content-Type"),
        416: RangeNotSatisfiable("requested range is outside the file", "Range"),
    }
    err = mapped.get(exc.code or 500)
    if err is None:
        if exc.code and exc.code < 500:
            err = CatalogError(exc.description or exc.name, "")
            err.status, err.code = exc.code, re.sub(r"\W+", "_", exc.name).upper().strip("_")
        else:
            err = InternalError("internal error")
    response = error_response(err)
    # Headers the status needs to be useful: Allow on 405, Content-Range (bytes */size) on 416.
    for name in ("Allow", "Content-Range"):
        value = exc.get_response().headers.get(name)
        if value:
            response.headers[name] = value
    return response


def _disk_full(exc: BaseException | None) -> bool:
    """ENOSPC from a file write, or SQLite's SQLITE_FULL (which carries no errno), anywhere in
    the exception's chain (peewee wraps sqlite3's error, a failed rollback wraps that)."""
    for _ in range(10):  # chains are short; bounded all the same
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "database or disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _database_down(exc: BaseException) -> bool:
    """Whether ``exc`` says the database server is gone (as opposed to a bad statement): a
    connection that cannot be made, or one the server closed (a restart). SQLite has no
    server; its errors keep their meaning."""
    if engine().name == "sqlite" or not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    conn = None if database.is_closed() else database.connection()
    return conn is None or bool(getattr(conn, "broken", False) or getattr(conn, "closed", False))


def _unexpected(exc: Exception) -> Response:
    if _database_down(exc):
        # The broken connection goes; the next request on this thread opens a new one.
        log.warning(
            "database unreachable on %s %s (request %s): %s",
            request.method,
            request.path,
            g.get("request_id", "-"),
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        )
        with contextlib.suppress(Exception):
            database.close()
        return error_response(DatabaseUnavailable())
    if _disk_full(exc):
        # A full data disk is an operating condition (507, as the upload's own space check
        # answers), not a bug: one line in the log, no traceback.
        log.warning(
            "data disk full on %s %s (request %s): %s",
            request.method,
            request.path,
            g.get("request_id", "-"),
            exc,
        )
        return error_response(
            InsufficientStorage(
                "the data disk is full; free space (or let synced files be evicted) and retry",
                "disk",
            )
        )
    # The traceback goes to the log with the request id, never into the body.
    log.exception(
        "unhandled error on %s %s (request %s)",
        request.method,
        request.path,
        g.get("request_id", "-"),
    )
    return error_response(InternalError("internal error", f"request id {g.get('request_id', '')}"))


def _before() -> Response | None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    if not current_app.extensions["edgecatalog.hosts"].allows(request.host):
        err = ValidationError(
            "Host",
            f"this service does not answer to the host "
            f"{host_name(request.host)!r}; name it in [server] "
            "allowed_hosts or set [server] public_url",
        )
        err.code = "HOST_NOT_ALLOWED"
        return error_response(err)
    if len(request.query_string) > settings()["server.max_query_string_bytes"]:
        return error_response(
            UriTooLong(
                f"query string is longer than {settings()['server.max_query_string_bytes']} bytes",
                "query",
            )
        )
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        return Response(status=204)  # CORS pre-flight; headers added in _after
    too_large = _enforce_body_limit()
    if too_large is not None:
        return too_large
    view = current_app.view_functions.get(request.endpoint or "")
    # A view declared public(database=False), /healthz, must answer with the database wedged.
    if access.uses_database(view):
        try:
            database.connect(reuse_if_open=True)  # one long-lived connection per thread
        except (OperationalError, InterfaceError) as exc:
            if engine().name == "sqlite":
                raise
            log.warning(
                "database unreachable on %s %s: %s",
                request.method,
                request.path,
                (str(exc).strip().splitlines() or [type(exc).__name__])[0],
            )
            return error_response(DatabaseUnavailable())
    return None


# Routes whose body may be larger than [server] max_json_body_bytes: (method, rule) -> setting.
BODY_LIMITS = {("POST", "/device/images/upload"): "ingest.max_upload_bytes"}


def body_limit() -> int:
    """The largest body this request's route accepts."""
    rule = request.url_rule.rule if request.url_rule is not None else ""
    name = BODY_LIMITS.get((request.method, rule), "server.max_json_body_bytes")
    return settings()[name]


def _enforce_body_limit() -> Response | None:
    limit = body_limit()
    # Werkzeug then stops any read (form parsing, chunked bodies) at this many bytes.
    request.max_content_length = limit
    if request.content_length is not None and request.content_length > limit:
        return error_response(PayloadTooLarge(f"request body is larger than {limit} bytes", "body"))
    return None


def _after(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    _cors(response)
    return response


def _cors(response: Response) -> None:
    origins = settings()["server.cors_origins"]
    origin = request.headers.get("Origin")
    if not origins or not origin:
        return
    if "*" in origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    else:
        return
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = (
            "Authorization, Content-Type, X-Device-Key, X-Request-ID"
        )
        response.headers["Access-Control-Max-Age"] = "600"
    response.headers["Access-Control-Expose-Headers"] = "X-Request-ID, ETag"


def install(app: Flask) -> None:
    cfg: Settings = app.config["EDGECATALOG"]
    app.extensions["edgecatalog.hosts"] = HostPolicy.from_settings(cfg)
    # Forwarded headers count only from [server] trusted_proxies; build_server leaves them
    # for this to judge (and a server that does not, such as a test's, clears them).
    app.wsgi_app = forwarded_headers_middleware(
        app.wsgi_app,  # type: ignore[method-assign]
        cfg["server.trusted_proxies"],
    )
    app.register_error_handler(CatalogError, error_response)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(Exception, _unexpected)
    app.before_request(_before)
    app.after_request(_after)


def json_body() -> Any:
    limit = settings()["server.max_json_body_bytes"]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"JSON body is larger than {limit} bytes", "body")
    if not request.is_json:
        raise UnsupportedMediaType("body must be application/json", "Content-Type")
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise PayloadTooLarge(f"JSON body is larger than {limit} bytes", "body")
    import json

    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("body", "body is not valid JSON") from None


def public_base() -> str:
    """The base of absolute URLs: ``[server] public_url``, else this request's scheme and
    Host, which ``_before`` has checked against the allowed hosts."""
    configured = settings()["server.public_url"]
    return (configured or request.host_url).rstrip("/")
