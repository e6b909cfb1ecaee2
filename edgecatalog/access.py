"""Who may call each endpoint: the one authentication path of every view, and the one record of
what each endpoint accepts.

Every view is declared with one of two decorators, which share one core (``_admit``):

* ``@requires(scope, device_key=False, signed_url=False, allow_from="")``: a bearer token with
  ``scope`` (``ANY_SCOPE``: any verified token); with ``device_key`` also an ``X-Device-Key``
  (within its device's rate); with ``signed_url`` also a signature for exactly this image
  (``files/<image_id>``); with ``allow_from`` (the name of a setting listing addresses and
  networks) no credential at all from a client address it lists. Sets ``g.principal`` to whoever
  got in (not set for a client let in by address).
* ``@public(database=True)``: no credential; ``database=False`` marks a view that must answer
  without opening a database connection (``/healthz`` while the database is wedged).

The declarations land in one registry keyed by view function; ``route_access(app)`` reads it as
``{endpoint: Access}`` (the route/auth coverage test, an OpenAPI generator) and
``uses_database(view)`` answers web.py's ``_before``. The credential checks themselves are
``auth.Authenticator``'s; this module only decides which of them a request meets.

This module imports nothing from web.py (web.py imports it), so it reads the app's settings and
authenticator straight from ``current_app``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, g, request

from . import params
from .auth import Authenticator
from .errors import AuthError, Forbidden
from .principal import Principal

View = TypeVar("View", bound=Callable[..., Any])

ANY_SCOPE = ""  # ``requires(ANY_SCOPE)``: a verified bearer token, whatever its scopes
# Methods that only ask (GET /auth/upload, the proxy's check before each upload): a device over
# its rate is refused but spends nothing, or every upload behind the proxy would cost its
# device two requests.
_ASKING = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Access:
    """What one endpoint accepts. ``public`` endpoints need no credential; the others accept a
    bearer token with ``scope`` and whatever else is switched on."""

    public: bool = False
    scope: str = ANY_SCOPE
    device_key: bool = False
    signed_url: bool = False
    allow_from: str = ""  # a setting's name, e.g. "metrics.allow_from"
    database: bool = True  # False: the view must not open a database connection


# The one registry: view function (as Flask holds it) -> its declaration. Filled at import
# time by the decorators, read only afterwards.
_DECLARED: dict[Callable[..., Any], Access] = {}


def _undeclared(view: Callable[..., Any]) -> None:
    # Two declarations on one view: the inner one would be a record Flask never calls.
    if view in _DECLARED:
        raise TypeError(f"{view.__qualname__} declares its access twice")


def _declare(view: Callable[..., Any], access: Access) -> None:
    _undeclared(view)
    _DECLARED[view] = access


def requires(
    scope: str, *, device_key: bool = False, signed_url: bool = False, allow_from: str = ""
) -> Callable[[View], View]:
    """Decorate a view: the credentials ``Access(scope, ...)`` describes are needed; 401, 403
    or 429 otherwise (see the module docstring)."""
    access = Access(
        scope=scope, device_key=device_key, signed_url=signed_url, allow_from=allow_from
    )

    def decorate(view: View) -> View:
        _undeclared(view)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _admit(access, kwargs)
            return view(*args, **kwargs)

        _declare(wrapper, access)
        return wrapper  # type: ignore[return-value]

    return decorate


def public(*, database: bool = True) -> Callable[[View], View]:
    """Declare a view that needs no credential; ``database=False``: it must also answer without
    a database connection (web.py then opens none)."""
    access = Access(public=True, database=database)

    def decorate(view: View) -> View:
        _declare(view, access)
        return view

    return decorate


def route_access(app: Flask) -> dict[str, Access]:
    """``{endpoint: Access}`` for every endpoint of ``app`` that declares its access; an
    endpoint missing here declared nothing."""
    return {
        endpoint: _DECLARED[view]
        for endpoint, view in app.view_functions.items()
        if view in _DECLARED
    }


def uses_database(view: Callable[..., Any] | None) -> bool:
    """False only for a view declared ``public(database=False)``; an undeclared view (or no
    view: an unmatched route) gets its connection as before."""
    access = _DECLARED.get(view) if view is not None else None
    return access.database if access is not None else True


# -- the one path every request takes ---------------------------------------------------------


def authenticator() -> Authenticator:
    return current_app.extensions["edgecatalog.auth"]


def bearer_principal() -> Principal:
    header = request.headers.get("Authorization", "")
    if not header:
        raise AuthError("missing Authorization: Bearer token", "Authorization")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(
            "Authorization must be 'Bearer <token>'", "Authorization", code="TOKEN_MALFORMED"
        )
    return authenticator().verify_token(token.strip())


def _admit(access: Access, view_args: dict[str, Any]) -> None:
    """Let this request in under ``access`` (setting ``g.principal``) or raise its refusal."""
    if access.public:
        return
    if access.allow_from and address_allowed(
        request.remote_addr, current_app.config["EDGECATALOG"][access.allow_from]
    ):
        return
    if access.signed_url and ("signature" in request.args or "expires" in request.args):
        # Either parameter present takes the signed path: a half-signed URL is refused as
        # signed, never retried as a bearer request.
        image_id = min(int(view_args["image_id"]), params.MAX_ID)
        g.principal = authenticator().verify_file_signature(
            f"files/{image_id}", request.args.get("expires", ""), request.args.get("signature", "")
        )
        return
    if access.device_key:
        key = request.headers.get("X-Device-Key")
        if key is not None:
            auth = authenticator()
            principal = auth.verify_device_key(key.strip())
            auth.limit_device(principal, spend=request.method not in _ASKING)
            g.principal = principal
            return
    principal = bearer_principal()
    if access.scope != ANY_SCOPE and not principal.can(access.scope):
        needs = f"the '{access.scope}' scope" + (" or a device key" if access.device_key else "")
        raise Forbidden(f"this route needs {needs}", "scope")
    g.principal = principal


def address_allowed(address: str | None, allowed: Iterable[str]) -> bool:
    """``address`` lies in one of ``allowed`` (single addresses or CIDR networks); a malformed
    entry allows nobody."""
    if not address:
        return False
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if client in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False
