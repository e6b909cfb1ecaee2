"""The one error hierarchy of the service.

Every failure a client can see is a ``CatalogError`` with an HTTP status and an UPPER_SNAKE
code; ``envelope.error_body`` turns it into the JSON envelope. The domain raises these without
knowing about Flask; the web layer maps them to responses in one place (``web.py``).
"""

from __future__ import annotations

from typing import Any


class CatalogError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, details: str = "", *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class ValidationError(CatalogError):
    """A parameter or body field has a value the contract does not accept.

    ``details`` names the offending parameter, so a client can point at it.
    """

    status = 400
    code = "VALIDATION_ERROR"

    def __init__(self, param: str, message: str):
        super().__init__(message, details=param)
        self.param = param


class AuthError(CatalogError):
    status = 401
    code = "UNAUTHORIZED"

    def __init__(self, message: str, details: str = "", *, code: str | None = None):
        # RFC 6750: every 401 to a bearer-protected resource carries a challenge.
        super().__init__(
            message, details, headers={"WWW-Authenticate": 'Bearer realm="edgecatalog"'}
        )
        if code is not None:
            self.code = code


class TokenExpired(AuthError):
    code = "TOKEN_EXPIRED"


class InvalidToken(AuthError):
    code = "INVALID_TOKEN"


class Forbidden(CatalogError):
    status = 403
    code = "FORBIDDEN"


class NotOwnImage(Forbidden):
    """A device key asked to change an image another device captured (a site gateway)."""

    code = "NOT_OWN_IMAGE"


class NotFound(CatalogError):
    status = 404
    code = "NOT_FOUND"


class MethodNotAllowed(CatalogError):
    status = 405
    code = "METHOD_NOT_ALLOWED"


class Conflict(CatalogError):
    status = 409
    code = "CONFLICT"


class DuplicateImage(Conflict):
    """The same bytes are already in the catalog (the cloud's answer to a duplicate upload);
    ``ids``: the stored image's, sent as the error's ``data``."""

    code = "DUPLICATE_IMAGE"

    def __init__(self, message: str, details: str, ids: dict[str, Any]):
        super().__init__(message, details)
        self.ids = ids


class Gone(CatalogError):
    status = 410
    code = "GONE"


class UnprocessableImage(CatalogError):
    """The stored file cannot be turned into a thumbnail: too many pixels, or not decodable."""

    status = 422
    code = "UNPROCESSABLE_IMAGE"

    def __init__(self, message: str, details: str = "", *, code: str | None = None):
        super().__init__(message, details)
        if code is not None:
            self.code = code


class PayloadTooLarge(CatalogError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class UriTooLong(CatalogError):
    status = 414
    code = "URI_TOO_LONG"


class UnsupportedMediaType(CatalogError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class RangeNotSatisfiable(CatalogError):
    status = 416
    code = "RANGE_NOT_SATISFIABLE"


class InsufficientStorage(CatalogError):
    status = 507
    code = "INSUFFICIENT_STORAGE"


class ServiceUnavailable(CatalogError):
    status = 503
    code = "SERVICE_UNAVAILABLE"


class NotReady(ServiceUnavailable):
    """A readiness check failed (``GET /readyz``)."""

    code = "NOT_READY"


class DatabaseUnavailable(ServiceUnavailable):
    """The database server cannot be reached (restarting, or the network to it is down). The
    request wrote nothing; the client retries after ``Retry-After``, and the service
    reconnects on its own when the server is back."""

    code = "DATABASE_UNAVAILABLE"

    def __init__(self, retry_after: int = 2):
        super().__init__(
            f"the catalog database cannot be reached; retry in {retry_after} s",
            "database",
            headers={"Retry-After": str(retry_after), "Cache-Control": "no-store"},
        )


class ThumbnailsBusy(ServiceUnavailable):
    """Enough requests already wait for a thumbnail to be decoded; this one would hold a
    server thread that list requests need. The client retries after ``Retry-After``."""

    code = "THUMBNAILS_BUSY"

    def __init__(self, retry_after: int):
        super().__init__(
            f"thumbnails are being made for other requests; retry in {retry_after} s",
            "",
            # no-store: a retry must reach the server, not a cached copy of this refusal.
            headers={"Retry-After": str(retry_after), "Cache-Control": "no-store"},
        )
        self.retry_after = retry_after


class RateLimited(CatalogError):
    """A device made more requests than ``[auth] device_requests_per_minute`` allows."""

    status = 429
    code = "RATE_LIMITED"


class DeviceMismatch(Forbidden):
    """A device key's upload names another device."""

    code = "DEVICE_MISMATCH"


class ReviewForbidden(Forbidden):
    """A device key's upload marks an annotation as reviewed ("manual" or "import")."""

    code = "MANUAL_SOURCE_FORBIDDEN"


class DeviceShareExceeded(InsufficientStorage):
    """One device would fill more than ``[ingest] device_disk_share`` of the catalog's room."""

    code = "DEVICE_SHARE_EXCEEDED"


class InternalError(CatalogError):
    status = 500
    code = "INTERNAL_ERROR"
