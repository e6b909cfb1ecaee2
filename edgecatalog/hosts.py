"""Which ``Host`` a request may name, and whose forwarded headers are believed. No Flask.

Absolute URLs (``image_url``, signed for a reviewer's browser) are built from ``[server]
public_url`` or, without it, from the request's Host. A Host the service does not answer to
would otherwise put a valid signature on a URL pointing at another machine, and a browser on
the LAN could be turned against the service by DNS rebinding. So, as Django's
``ALLOWED_HOSTS`` does, a request naming any other host is refused (400 ``HOST_NOT_ALLOWED``).

``X-Forwarded-For/-Proto/-Host`` are believed only from ``[server] trusted_proxies`` (the
reverse proxy in front, see docs/reverse-proxy.md); from anyone else they are removed before
the application sees them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from waitress.proxy_headers import proxy_headers_middleware

from .config import Settings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")
FORWARDED = {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"}


def host_name(host: str) -> str:
    """The name in a Host header or URL netloc, without port or brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class HostPolicy:
    """The host names a request may name. Entries as in ``[server] allowed_hosts``: a name,
    ``.example.com`` for it and its subdomains, or ``*`` for any (the check switched off)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = frozenset(
            host_name(e) if e not in ("*",) and not e.startswith(".") else e.lower()
            for e in entries
            if e.strip()
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        configured = list(settings["server.allowed_hosts"])
        public = settings["server.public_url"]
        if public:
            configured.append(urlsplit(public).netloc)
        if not settings["server.allowed_hosts"]:
            # The names a newcomer or an operator on the box itself uses.
            configured += LOOPBACK_NAMES
            name = socket.gethostname()
            configured += [name, f"{name}.local"]
            if settings["server.host"] not in WILDCARD_BINDS:
                configured.append(settings["server.host"])
        return cls(configured)

    def allows(self, host: str) -> bool:
        name = host_name(host)
        if not name:
            return False
        if "*" in self.entries or name in self.entries:
            return True
        return any(e.startswith(".") and (name == e[1:] or name.endswith(e)) for e in self.entries)


def trusted_networks(entries: Iterable[str]) -> tuple[ipaddress._BaseNetwork, ...]:
    """``[server] trusted_proxies`` as networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def forwarded_headers_middleware(
    app: Callable[..., Any], proxies: Iterable[str]
) -> Callable[..., Any]:
    """WSGI middleware: forwarded headers from a trusted proxy become the request's client
    address, scheme and host (waitress's own parser, one proxy deep); from anyone else they
    are dropped. The service's server is told not to clear them itself (``server.py``)."""
    networks = trusted_networks(proxies)
    trusting = proxy_headers_middleware(
        app,
        trusted_proxy="*",
        trusted_proxy_count=1,
        trusted_proxy_headers=FORWARDED,
        clear_untrusted=True,
    )
    clearing = proxy_headers_middleware(app, trusted_proxy=None, clear_untrusted=True)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if networks and _in(environ.get("REMOTE_ADDR", ""), networks):
            return trusting(environ, start_response)
        return clearing(environ, start_response)

    return wsgi


def _in(address: str, networks: tuple[ipaddress._BaseNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
