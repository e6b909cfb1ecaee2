"""``edgecatalog doctor``: every check an operator would otherwise run by hand, in one list.

Configuration (loaded before we get here), database integrity (``PRAGMA quick_check``, read
only), migrations, the SQLite library Python links, permissions of the data folder and of every
secret file, free disk, clock sanity (not before the newest stored image), transport (keys or
tokens that would cross a network in clear, an unpinned Host), and upstream reachability. Each check is OK, WARN or FAIL; any FAIL makes the command exit 1. No Flask here;
nothing is written.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from .config import CONFIG_ENV, Settings, is_loopback_url
from .health import Check, check_disk, check_writable
from .hosts import WILDCARD_BINDS

SECRET_FILE_SETTINGS = (
    "auth.jwt_secret_file",
    "auth.device_keys_file",
    "upstream.device_key_file",
    "upstream.api_token_file",
)
INLINE_SECRETS = (
    "auth.jwt_secret",
    "auth.device_keys",
    "upstream.device_key",
    "upstream.api_token",
)
UPSTREAM_TIMEOUT = 5.0

# SQLite's documented "WAL-reset" race (https://sqlite.org/wal.html#walresetbug) can corrupt a
# WAL database written by two or more connections; fixed in 3.51.3 and backported to 3.44.6
# and 3.50.7. The service cannot choose the library: the system's Python links its own.
WAL_RESET_FIXED = ((3, 44, 6), (3, 50, 7), (3, 51, 3))


def _ro_connect(db_path: Path) -> sqlite3.Connection:
    # mode=ro: the doctor must never create, migrate or lock the catalog it examines.
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)


def check_database_file(settings: Settings) -> list[Check]:
    path = settings.db_path
    if not path.exists():
        return [Check("database", False, f"{path} does not exist yet; run 'edgecatalog migrate'")]
    try:
        with _ro_connect(path) as conn:
            result = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.Error as exc:
        return [Check("database", False, f"{path} cannot be read: {exc}")]
    if result != ["ok"]:
        return [Check("database", False, "quick_check found problems: " + "; ".join(result[:5]))]
    return [Check("database", True, f"{path}: quick_check ok")]


def check_migrations_state(settings: Settings) -> Check:
    from .db import migrations_dir

    files = sorted(p.stem for p in migrations_dir().glob("[0-9]*.py"))
    try:
        with _ro_connect(settings.db_path) as conn:
            applied = {row[0] for row in conn.execute("SELECT name FROM schema_migration")}
    except sqlite3.Error:
        applied = set()
    pending = [name for name in files if name not in applied]
    if pending:
        return Check(
            "migrations",
            False,
            f"{len(pending)} pending: {', '.join(pending)} "
            "(run 'edgecatalog migrate', or start the service)",
        )
    return Check("migrations", True, f"{len(files)} applied, none pending")


def check_sqlite_library(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> Check:
    """WARN when the linked SQLite has the WAL-reset race: rare, but it corrupts silently."""

    def dotted(v: tuple[int, ...]) -> str:
        return ".".join(map(str, v))

    newest = WAL_RESET_FIXED[-1]
    if version >= newest or any(
        version[:2] == fix[:2] and version >= fix for fix in WAL_RESET_FIXED
    ):
        return Check("sqlite", True, f"SQLite {dotted(version)}")
    fixes = ", ".join(dotted(fix) for fix in reversed(WAL_RESET_FIXED))
    return Check(
        "sqlite",
        False,
        f"SQLite {dotted(version)} has the WAL-reset race (fixed in {fixes}); it is rare, but "
        "back up the catalog and update the system's SQLite when one is offered",
        warning=True,
    )


def check_clock(settings: Settings, now: float | None = None) -> Check:
    now = time.time() if now is None else now
    try:
        with _ro_connect(settings.db_path) as conn:
            newest = conn.execute("SELECT MAX(created_at) FROM image").fetchone()[0]
    except sqlite3.Error:
        return Check("clock", True, "no images to compare the clock with")
    return _clock_check(newest, now)


def _clock_check(newest: int | None, now: float) -> Check:
    if newest is not None and newest / 1_000_000 > now + 60:
        ahead = newest / 1_000_000 - now
        return Check(
            "clock",
            False,
            f"system clock is {ahead:.0f} s behind the newest stored "
            "image; check NTP/RTC before trusting new timestamps",
        )
    return Check("clock", True, "clock is not behind the newest stored image")


def _mode_problem(path: Path, *, secret: bool) -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if secret and mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"mode {stat.S_IMODE(mode):04o} lets group/others read it; chmod 600"
    if not secret and mode & stat.S_IWOTH:
        return f"mode {stat.S_IMODE(mode):04o} is world-writable; chmod o-w"
    return None


def check_permissions(settings: Settings, config_path: str | None) -> list[Check]:
    checks = [check_writable(settings.data_dir)]
    problem = _mode_problem(settings.data_dir, secret=False)
    checks.append(
        Check("data_dir permissions", problem is None, f"{settings.data_dir}: {problem or 'ok'}")
    )
    secrets = [Path(settings[name]) for name in SECRET_FILE_SETTINGS if settings[name]]
    local = settings.data_dir / "jwt.secret"
    if local.exists():
        secrets.append(local)
    if config_path and any(settings[name] for name in INLINE_SECRETS):
        secrets.append(Path(config_path))  # it holds a secret inline, so guard it like one
    for path in secrets:
        if not path.exists():
            checks.append(Check(f"secret {path.name}", False, f"{path} does not exist"))
            continue
        problem = _mode_problem(path, secret=True)
        checks.append(Check(f"secret {path.name}", problem is None, f"{path}: {problem or 'ok'}"))
    return checks


def check_upstream(settings: Settings, timeout: float = UPSTREAM_TIMEOUT) -> Check | None:
    url = settings["upstream.base_url"]
    if not url:
        return None
    enabled = settings["upstream.enabled"]
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code  # any HTTP answer means the host is reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check("upstream", False, f"{url} is unreachable: {reason}", warning=not enabled)
    return Check("upstream", True, f"{url} answered HTTP {status}")


def check_transport(settings: Settings) -> list[Check]:
    """Where keys and tokens would cross a network in clear, or Host is not pinned."""
    checks = []
    url = settings["upstream.base_url"]
    if url.startswith("http://") and not is_loopback_url(url):
        checks.append(
            Check(
                "upstream transport",
                False,
                f"{url} is plain http (allowed by [upstream] allow_insecure_http): "
                "the device key and tokens cross the network in clear; use https",
                warning=True,
            )
        )
    if settings["server.host"] in WILDCARD_BINDS and not (
        settings["server.public_url"] or settings["server.allowed_hosts"]
    ):
        checks.append(
            Check(
                "server hosts",
                False,
                "serving every interface, but neither [server] public_url nor "
                "allowed_hosts is set: LAN clients naming this device by address "
                "get 400 HOST_NOT_ALLOWED",
                warning=True,
            )
        )
    if settings["server.host"] not in ("127.0.0.1", "::1", "localhost") and not settings[
        "server.public_url"
    ].startswith("https://"):
        checks.append(
            Check(
                "server transport",
                False,
                "the API is served on the network without TLS: tokens, device "
                "keys and signed URLs cross it in clear; put the reverse proxy of "
                "docs/reverse-proxy.md in front",
                warning=True,
            )
        )
    return checks


POSTGRES_MIN = 150000  # server_version_num of PostgreSQL 15


def check_postgres(settings: Settings) -> list[Check]:
    """The PostgreSQL catalog of ``[database] url``: reachable, new enough, migrated, and its
    newest image not ahead of this clock. Reads only; the password is never printed."""
    from .config import ConfigError, read_secret_file
    from .engines import postgres

    where = settings.db_location
    try:
        password = None
        if settings["database.password_file"]:
            password = read_secret_file(
                settings["database.password_file"], "database.password_file"
            )
        database = postgres.open_database(settings["database.url"], password)
        database.connect()
    except ConfigError as exc:
        return [Check("database", False, str(exc))]
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the answer
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [Check("database", False, f"cannot connect to {where}: {reason}")]
    try:
        (version,) = database.execute_sql("SHOW server_version_num").fetchone()
        checks = [
            Check(
                "database",
                int(version) >= POSTGRES_MIN,
                f"{where}: PostgreSQL {int(version) // 10000}"
                + ("" if int(version) >= POSTGRES_MIN else " (15 or newer needed)"),
            )
        ]
        from .db import migrations_dir

        files = sorted(p.stem for p in migrations_dir().glob("[0-9]*.py"))
        try:
            applied = {r[0] for r in database.execute_sql("SELECT name FROM schema_migration")}
        except Exception:  # noqa: BLE001 - no table yet: nothing applied
            applied = set()
        pending = [name for name in files if name not in applied]
        checks.append(
            Check("migrations", True, f"{len(files)} applied, none pending")
            if not pending
            else Check(
                "migrations",
                False,
                f"{len(pending)} pending: {', '.join(pending)} (run 'edgecatalog migrate')",
            )
        )
        if not pending:
            (newest,) = database.execute_sql("SELECT max(created_at) FROM image").fetchone()
            checks.append(_clock_check(newest, time.time()))
        return checks
    finally:
        database.close()


def check_select_rules(settings: Settings) -> list[Check]:
    """Rules that can never decide an image (after a ``*``): a warning each."""
    from .sync.rules import parse_rules, unreachable

    return [
        Check("upstream.select", False, warning, warning=True)
        for warning in unreachable(parse_rules(settings["upstream.select"]))
    ]


def run_checks(settings: Settings, config_path: str | None = None) -> list[Check]:
    config_path = config_path or os.environ.get(CONFIG_ENV) or None
    checks = [Check("configuration", True, f"valid ({settings.source})")]
    checks += check_select_rules(settings)
    if settings["database.url"]:
        checks += check_postgres(settings)
    else:
        checks += check_database_file(settings)
        checks.append(check_sqlite_library())
        if settings.db_path.exists():
            checks.append(check_migrations_state(settings))
            checks.append(check_clock(settings))
    checks += check_permissions(settings, config_path)
    if settings.data_dir.exists():
        disk = check_disk(settings)
        checks.append(disk)
    checks += check_transport(settings)
    upstream = check_upstream(settings)
    if upstream is not None:
        checks.append(upstream)
    return checks


def print_report(checks: list[Check], out: IO[str]) -> int:
    """Print one line per check; the exit status is 1 when any check failed."""
    failed = 0
    for check in checks:
        label = "OK" if check.ok else ("WARN" if check.warning else "FAIL")
        failed += label == "FAIL"
        out.write(f"{label:<5} {check.name}: {check.message}\n")
    out.write(f"{len(checks)} checks, {failed} failed\n")
    return 1 if failed else 0
