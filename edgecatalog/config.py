"""Every setting of the service, declared once.

``SETTINGS`` is the single table (section, key, type, default, help). Values are layered
defaults < TOML file < ``EDGECATALOG_<SECTION>_<KEY>`` environment variables and checked
before anything is bound or written; a bad or unknown value raises ``ConfigError`` naming
the key and where it came from. ``config.example.toml`` mirrors this table (a test checks it).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Jetson boards ship Python 3.10
    import tomli as tomllib

ENV_PREFIX = "EDGECATALOG_"
CONFIG_ENV = "EDGECATALOG_CONFIG"
MiB = 1024 * 1024


class ConfigError(Exception):
    """A setting is unknown, of the wrong type, or contradicts another one."""


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    type: type  # str, int, float, bool or list (of str)
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    # Checks what the type alone cannot (a rule, a window); raises ValueError saying what.
    check: Callable[[Any], Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env_name(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}_{self.key.upper()}"


def _check_select(value: Any) -> Any:
    from .sync.rules import parse_rules

    parse_rules(value)
    return value


def _check_windows(value: Any) -> Any:
    from .sync.rules import parse_windows

    parse_windows(value)
    return value


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # [server]
    S("server", "host", str, "127.0.0.1", "Address to listen on; 0.0.0.0 serves the whole LAN."),
    S("server", "port", int, 8080, "TCP port to listen on.", minimum=1, maximum=65535),
    S("server", "threads", int, 4, "waitress worker threads.", minimum=1, maximum=64),
    S(
        "server",
        "public_url",
        str,
        "",
        "Base for absolute URLs (image_url); empty = taken from each request's Host.",
    ),
    S(
        "server",
        "allowed_hosts",
        list,
        [],
        "Host names a request's Host header may name (a 400 otherwise); empty = public_url's "
        "host, this machine's names and loopback.",
    ),
    S(
        "server",
        "trusted_proxies",
        list,
        [],
        "Addresses of reverse proxies whose X-Forwarded-For/-Proto/-Host are believed; "
        "empty = none.",
    ),
    S(
        "server",
        "connection_limit",
        int,
        100,
        "Most simultaneous connections waitress accepts before it stops accepting.",
        minimum=1,
    ),
    S("server", "channel_timeout", int, 120, "Seconds an idle connection is kept open.", minimum=1),
    S(
        "server",
        "max_request_header_bytes",
        int,
        65536,
        "Largest request line plus headers accepted.",
        minimum=1024,
    ),
    S(
        "server",
        "max_query_string_bytes",
        int,
        8192,
        "Longest query string accepted (414 beyond).",
        minimum=256,
    ),
    S(
        "server",
        "max_json_body_bytes",
        int,
        1 * MiB,
        "Largest JSON request body (PATCH/POST) accepted (413 beyond).",
        minimum=1024,
    ),
    S(
        "server",
        "cors_origins",
        list,
        [],
        "Origins allowed to call the API from a browser; empty = CORS off, '*' = any.",
    ),
    S(
        "server",
        "shutdown_timeout",
        float,
        30.0,
        "Seconds in-flight work may take to finish after SIGTERM.",
        minimum=0,
    ),
    # [database]
    S(
        "database",
        "url",
        str,
        "",
        "Empty: the SQLite file <data_dir>/catalog.db. postgresql://user@host:port/dbname: "
        "PostgreSQL 15 or newer (pip install 'edgecatalog[postgres]').",
    ),
    S(
        "database",
        "password_file",
        str,
        "",
        "Read the PostgreSQL password from this file instead of the URL.",
    ),
    # [site]
    S(
        "site",
        "enabled",
        bool,
        False,
        "Serve this catalog's devices as their upstream under /api (the site gateway): they "
        "upload to it and mirror their edits; docs/site-gateway.md.",
    ),
    S(
        "site",
        "idempotency_hours",
        float,
        24.0,
        "How long the gateway remembers the answer to each Idempotency-Key a device sent "
        "(a retried upload is also found by its bytes, however old).",
        minimum=1,
    ),
    # [storage]
    S(
        "storage",
        "data_dir",
        str,
        "data",
        "Folder for catalog.db, images/ and secrets; relative paths are from the working dir.",
    ),
    # [auth]
    S(
        "auth",
        "jwt_secret",
        str,
        "",
        "HMAC secret for HS* tokens and signed image URLs, at least 32 bytes; empty = generated "
        "once at <data_dir>/jwt.secret (0600).",
    ),
    S(
        "auth",
        "jwt_secret_file",
        str,
        "",
        "Read the HMAC secret (at least 32 bytes) from this file instead.",
    ),
    S(
        "auth",
        "jwt_algorithms",
        list,
        ["HS256"],
        "Accepted algorithms, never taken from the token.",
        choices=("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"),
    ),
    S("auth", "jwt_public_key_file", str, "", "PEM public key for RS*/ES* tokens issued upstream."),
    S("auth", "audience", str, "", "Required 'aud' claim; empty = not checked."),
    S("auth", "issuer", str, "", "Required 'iss' claim; empty = not checked."),
    S(
        "auth",
        "url_signing_ttl",
        int,
        3600,
        "Seconds a signed image_url stays valid.",
        minimum=1,
        maximum=7 * 24 * 3600,
    ),
    S(
        "auth",
        "max_token_ttl",
        int,
        30 * 24 * 3600,
        "Longest lifetime a bearer token may have, issued or presented ('exp' minus 'iat', or "
        "minus now without 'iat'), in seconds.",
        minimum=60,
        maximum=366 * 24 * 3600,
    ),
    S(
        "auth",
        "device_keys",
        list,
        [],
        "Accepted X-Device-Key values, each bound to one device: 'DEVICE_ID=sha256:<hex>' or "
        "'DEVICE_ID=adk_...'; a bare 'sha256:<hex>' or 'adk_...' entry is this device's own "
        "([device] id). Keys made with 'edgecatalog device-key add' live in the database.",
    ),
    S(
        "auth",
        "device_keys_file",
        str,
        "",
        "File with one entry per line, as in device_keys; lines starting with '#' are comments.",
    ),
    S(
        "auth",
        "device_requests_per_minute",
        int,
        1200,
        "Requests one device (all its keys) may make per minute, with a burst of 10 seconds' "
        "worth (429 beyond); 0 = unlimited.",
        minimum=0,
    ),
    # [device]
    S(
        "device",
        "id",
        str,
        "",
        "This device's id: for images that name none, and the device of bare [auth] device_keys "
        "entries; empty = hostname.",
    ),
    # [ingest]
    S(
        "ingest",
        "max_upload_bytes",
        int,
        50 * MiB,
        "Largest upload body (413 beyond), as upstream.",
        minimum=1024,
    ),
    S("ingest", "max_annotations", int, 1000, "Most annotations one image may carry.", minimum=1),
    # [capture]
    S(
        "ingest",
        "max_polygon_points",
        int,
        4096,
        "Most vertices one polygon annotation may have.",
        minimum=3,
        maximum=1_000_000,
    ),
    S(
        "ingest",
        "max_annotation_bytes",
        int,
        256 * 1024,
        "Most bytes the annotations of one image may take as stored JSON.",
        minimum=1024,
    ),
    S(
        "ingest",
        "device_disk_share",
        float,
        0.5,
        "Share of the catalog's room (its images plus free space) one device may fill while "
        "other devices have images too; 1.0 = no limit.",
        minimum=0.01,
        maximum=1.0,
    ),
    S("capture", "watch_dirs", list, [], "Folders watched for new captures."),
    S(
        "capture",
        "mode",
        str,
        "index",
        "Index files in place, or move them into the data folder.",
        choices=("index", "move"),
    ),
    S(
        "capture",
        "settle_seconds",
        float,
        2.0,
        "A file is taken once its size and mtime have not changed for this long.",
        minimum=0,
    ),
    S(
        "capture",
        "scan_interval_seconds",
        float,
        60.0,
        "Period of the reconciliation scan that catches lost events.",
        minimum=1,
    ),
    S("capture", "classes", list, [], "Class names for YOLO sidecars without a classes.txt."),
    # [batches]
    S("batches", "max_images", int, 1000, "A collecting batch completes at this size.", minimum=1),
    S(
        "batches",
        "window_minutes",
        float,
        30.0,
        "A collecting batch completes after being open this long.",
        minimum=0.01,
    ),
    # [upstream]
    S("upstream", "enabled", bool, False, "Run the sync worker inside 'serve'."),
    S("upstream", "base_url", str, "", "Cloud API base, e.g. https://acusight.io/api."),
    S("upstream", "device_key", str, "", "adk_ device key for uploads."),
    S("upstream", "device_key_file", str, "", "Read the device key from this file instead."),
    S("upstream", "api_token", str, "", "Bearer token for PATCH/annotation updates upstream."),
    S("upstream", "api_token_file", str, "", "Read the upstream API token from this file instead."),
    S(
        "upstream",
        "interval_seconds",
        float,
        30.0,
        "Pause between sync passes when idle.",
        minimum=0.01,
    ),
    S("upstream", "batch_size", int, 20, "Items taken per pass.", minimum=1, maximum=1000),
    S(
        "upstream",
        "max_attempts",
        int,
        10,
        "Transient failures before an item is quarantined.",
        minimum=1,
    ),
    S("upstream", "timeout_seconds", float, 30.0, "Per-request timeout.", minimum=0.1),
    S(
        "upstream",
        "max_bytes_per_second",
        int,
        0,
        "Upload bandwidth cap over any 10 s window; 0 = unlimited.",
        minimum=0,
    ),
    S(
        "upstream",
        "allow_insecure_http",
        bool,
        False,
        "Allow an http:// base_url that is not loopback (keys and tokens cross in clear).",
    ),
    S(
        "upstream",
        "max_backoff_seconds",
        float,
        300.0,
        "Ceiling of the exponential backoff.",
        minimum=1,
    ),
    S(
        "upstream",
        "order",
        str,
        "oldest",
        "Which records leave first.",
        choices=("oldest", "newest"),
    ),
    S(
        "upstream",
        "select",
        list,
        [],
        'Ordered rules of what is sent, e.g. [{ match = "class:crack", share = 1.0 }, '
        '{ match = "*", share = 0.05 }]; the first that matches decides; empty = everything '
        "(docs/operations.md#what-goes-upstream). As an environment variable: a JSON array.",
        check=_check_select,
    ),
    S(
        "upstream",
        "windows",
        list,
        [],
        'Local times uploads may go, e.g. ["22:00-06:00"]; empty = any time.',
        check=_check_windows,
    ),
    S(
        "upstream",
        "always_priority",
        int,
        0,
        "Rules of this priority or higher (1 is highest) send outside the windows too; 0 = none.",
        minimum=0,
    ),
    # [retention]
    S(
        "retention",
        "max_disk_percent",
        float,
        90.0,
        "Evict synced image files when the data disk is fuller than this.",
        minimum=1,
        maximum=100,
    ),
    S(
        "retention",
        "min_free_bytes",
        int,
        256 * MiB,
        "Evict synced image files when less than this is free.",
        minimum=0,
    ),
    # [logging]
    S("logging", "format", str, "text", "Log line format.", choices=("text", "json")),
    S("logging", "level", str, "INFO", "Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    # [metrics]
    S(
        "metrics",
        "allow_from",
        list,
        [],
        "Addresses that may read /metrics without a token; others need one.",
    ),
    # [limits]
    S(
        "limits",
        "max_class_values",
        int,
        50,
        "Most comma-separated items in class_values.",
        minimum=1,
    ),
    S("limits", "max_param_chars", int, 1024, "Longest single query parameter value.", minimum=16),
    # [ui]
    S(
        "ui",
        "thumbnail_max_pixels",
        int,
        24_000_000,
        "Largest image (width x height) a thumbnail is made from; larger ones get 422, "
        "so a decompression bomb cannot exhaust memory.",
        minimum=1,
        maximum=89_478_485,
    ),
)
del S

_BY_NAME = {s.name: s for s in SETTINGS}
_SECTIONS = {s.section for s in SETTINGS}


class Settings(Mapping[str, Any]):
    """The frozen, validated settings, read as ``settings["server.port"]``."""

    def __init__(self, values: Mapping[str, Any], source: str = "<defaults>") -> None:
        self._values = MappingProxyType(dict(values))
        self.source = source

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Settings(source={self.source!r})"

    @property
    def data_dir(self) -> Path:
        return Path(self["storage.data_dir"]).expanduser().absolute()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "catalog.db"

    @property
    def db_location(self) -> str:
        """Which catalog these settings open, as ``models.database.location`` names it: the
        SQLite file, or ``postgresql://host:port/dbname`` (never a password)."""
        url = self["database.url"]
        if not url:
            return str(self.db_path)
        parts = urlsplit(url)
        return f"postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed, validated; keys use '__' for '.'."""
        raw = {k.replace("__", "."): v for k, v in changes.items()}
        return build_settings(dict(self._values), raw, "<replace>")


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    where = f"{setting.name} (from {origin})"
    t = setting.type
    if isinstance(value, str) and origin.startswith("environment"):
        value = _parse_env(setting, value, where)
    if t is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
    elif t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
    elif t is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
    elif t is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    elif t is list and setting.name == "upstream.select":
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of rules, got {value!r}")
        value = list(value)
    elif t is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        value = list(value)
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"{where}: must be >= {setting.minimum:g}, got {value!r}")
    if setting.maximum is not None and value > setting.maximum:
        raise ConfigError(f"{where}: must be <= {setting.maximum:g}, got {value!r}")
    if setting.choices is not None:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item not in setting.choices:
                allowed = ", ".join(setting.choices)
                raise ConfigError(f"{where}: {item!r} is not one of {allowed}")
    if setting.check is not None:
        try:
            setting.check(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return value


def _parse_env(setting: Setting, text: str, where: str) -> Any:
    t = setting.type
    if t is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    if t is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {text!r}") from None
    if t is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {text!r}") from None
    if t is list and setting.name == "upstream.select":
        try:
            return json.loads(text)
        except ValueError:
            raise ConfigError(f"{where}: expected a JSON array of rules, got {text!r}") from None
    if t is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _flatten_toml(doc: Mapping[str, Any], origin: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        if not isinstance(body, dict):
            # e.g. 'port = 80' above any [section]: say where it belongs, not "unknown section".
            owners = sorted(s.section for s in SETTINGS if s.key == section)
            hint = f" (did you mean [{owners[0]}] {section}?)" if owners else ""
            raise ConfigError(f"{section} in {origin}: settings go under a [section] table{hint}")
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}] in {origin}")
        for key, value in body.items():
            name = f"{section}.{key}"
            if name not in _BY_NAME:
                raise ConfigError(f"unknown key {name} in {origin}")
            flat[name] = value
    return flat


def build_settings(base: Mapping[str, Any], raw: Mapping[str, Any], origin: str) -> Settings:
    values = dict(base)
    for name, value in raw.items():
        if name not in _BY_NAME:
            raise ConfigError(f"unknown key {name} in {origin}")
        values[name] = _coerce(_BY_NAME[name], value, origin)
    _check_consistency(values, origin)
    return Settings(values, origin)


def _check_consistency(values: Mapping[str, Any], origin: str) -> None:
    algorithms = values["auth.jwt_algorithms"]
    if not algorithms:
        raise ConfigError(f"auth.jwt_algorithms (from {origin}): at least one algorithm is needed")
    families = {a[:2] for a in algorithms}
    if "HS" in families and len(families) > 1:
        # Mixing HMAC with public-key algorithms is the classic key-confusion hole.
        raise ConfigError(
            f"auth.jwt_algorithms (from {origin}): HS* cannot be mixed with RS*/ES* algorithms"
        )
    if families & {"RS", "ES"} and not values["auth.jwt_public_key_file"]:
        raise ConfigError(
            f"auth.jwt_public_key_file (from {origin}): required when jwt_algorithms uses RS*/ES*"
        )
    if values["auth.jwt_secret"] and values["auth.jwt_secret_file"]:
        raise ConfigError(
            f"auth.jwt_secret (from {origin}): set jwt_secret or jwt_secret_file, not both"
        )
    if values["upstream.enabled"] and not values["upstream.base_url"]:
        raise ConfigError(f"upstream.base_url (from {origin}): required when upstream.enabled")
    for entry in values["server.trusted_proxies"]:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"server.trusted_proxies (from {origin}): {entry!r} is not an "
                "IP address or network (e.g. 127.0.0.1 or 10.0.0.0/24)"
            ) from None
    base_url = values["upstream.base_url"]
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"upstream.base_url (from {origin}): expected an https:// URL")
    if (
        base_url.startswith("http://")
        and not values["upstream.allow_insecure_http"]
        and not is_loopback_url(base_url)
    ):
        raise ConfigError(
            f"upstream.base_url (from {origin}): {base_url} is plain http: the device key and "
            "tokens would cross the network in clear; use https:// or set [upstream] "
            "allow_insecure_http = true"
        )
    url = values["database.url"]
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ConfigError(
                f"database.url (from {origin}): expected postgresql://user@host:port/dbname "
                "or empty for the SQLite file"
            )
        if not parts.path.strip("/"):
            raise ConfigError(f"database.url (from {origin}): the URL names no database")
        if parts.password and values["database.password_file"]:
            raise ConfigError(
                f"database.url (from {origin}): a password in the URL and "
                "database.password_file: give one"
            )
    elif values["database.password_file"]:
        raise ConfigError(
            f"database.password_file (from {origin}): only for a PostgreSQL database.url"
        )
    public_url = values["server.public_url"]
    if public_url and not public_url.startswith(("http://", "https://")):
        raise ConfigError(f"server.public_url (from {origin}): expected an http:// or https:// URL")


def is_loopback_url(url: str) -> bool:
    """True for a URL whose host is this machine's loopback (nothing crosses a network)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def defaults() -> dict[str, Any]:
    return {s.name: s.default for s in SETTINGS}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Layer defaults, the TOML file and the environment; raise ConfigError on any problem."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV) or None
    values = defaults()
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
        values = dict(build_settings(values, _flatten_toml(doc, source), source))
    env_raw = {}
    for setting in SETTINGS:
        if setting.env_name in environ:
            env_raw[setting.name] = environ[setting.env_name]
    known = {s.env_name for s in SETTINGS} | {CONFIG_ENV}
    for key in environ:
        if key.startswith(ENV_PREFIX) and key not in known:
            raise ConfigError(f"unknown environment variable {key}")
    for name, value in env_raw.items():
        setting = _BY_NAME[name]
        values[name] = _coerce(setting, value, f"environment {setting.env_name}")
    if overrides:
        for name, value in overrides.items():
            if name not in _BY_NAME:
                raise ConfigError(f"unknown key {name} in overrides")
            values[name] = _coerce(_BY_NAME[name], value, "overrides")
    return build_settings(values, {}, source)


def read_secret_file(path: str | os.PathLike[str], name: str) -> str:
    """The stripped contents of a file a setting points at; ConfigError naming the setting."""
    path = Path(path).expanduser()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{name}: {path} is empty")
    return value


def describe(setting: Setting) -> str:
    """One line for check-config and docs."""
    return f"{setting.name} = {setting.default!r}  # {setting.help}"
