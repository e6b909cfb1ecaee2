"""The ``edgecatalog`` command: the only place that reads argv, sets up logging and calls
``waitress.serve``. Every failure a user can cause ends in one line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .config import SETTINGS, ConfigError, Settings, load_settings

log = logging.getLogger("edgecatalog")


class UsageError(Exception):
    """A command was given arguments it cannot act on."""


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def setup_logging(settings: Settings | None = None) -> None:
    from .logsetup import configure

    configure(settings)  # [logging] format/level, secrets scrubbed from every line


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    settings = _settings(args)
    setup_logging(settings)
    # serve(): migrate, listen, READY=1, run until SIGTERM/SIGINT, drain, close the database.
    return serve(settings)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import print_report, run_checks

    settings = _settings(args)
    setup_logging(settings)
    return print_report(run_checks(settings, config_path=args.config), sys.stdout)


def cmd_migrate(args: argparse.Namespace) -> int:
    from . import db

    settings = _settings(args)
    setup_logging(settings)
    db.open_for(settings)
    applied = db.migrate()
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from .auth import check_key_files

    settings = _settings(args)
    check_key_files(settings)  # the key files start-up would read, read-only here
    if args.show:
        secret_keys = {"auth.jwt_secret", "upstream.device_key", "upstream.api_token",
                       "auth.device_keys"}
        for setting in SETTINGS:
            value = settings[setting.name]
            shown = "<set>" if setting.name in secret_keys and value else value
            print(f"{setting.name} = {shown!r}")
    print(f"configuration OK ({settings.source})")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from .auth import Authenticator

    settings = _settings(args)
    if args.ttl < 1:
        raise UsageError("--ttl must be a positive number of seconds")
    if not args.sub.strip():
        raise UsageError("--sub must not be empty")
    token = Authenticator(settings).issue_token(args.sub, args.scope, args.ttl)
    print(ui_link(settings, token) if args.ui else token)
    return 0


def ui_link(settings: Settings, token: str) -> str:
    """A link that signs the inspection page in: the token rides in the fragment, which a
    browser never sends to the server, and the page removes it from the address bar."""
    base = settings["server.public_url"].rstrip("/")
    if not base:
        import socket

        host = settings["server.host"]
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()  # the wildcard address is not one a browser can open
        if ":" in host:
            host = f"[{host}]"
        base = f"http://{host}:{settings['server.port']}"
    return f"{base}/#token={token}"


def cmd_sync(args: argparse.Namespace) -> int:
    from .sync.commands import SyncCommandError, run_sync

    settings = _settings(args)
    setup_logging(settings)
    try:
        return run_sync(settings, once=args.once, retry=args.retry_quarantined)
    except SyncCommandError as exc:
        raise UsageError(str(exc)) from None


def cmd_status(args: argparse.Namespace) -> int:
    from .sync.commands import print_status

    settings = _settings(args)
    setup_logging(settings)
    return print_status(settings, as_json=args.json)


def cmd_scan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .ingest.commands import ScanRefused, run_scan

    settings = _settings(args)
    setup_logging(settings)
    try:
        run_scan(settings, Path(args.dir), recursive=args.recursive, mode=args.mode)
    except ScanRefused as exc:
        raise UsageError(str(exc)) from None
    return 0  # rejected files are an outcome, listed by 'edgecatalog rejected', not a failure


def cmd_rejected(args: argparse.Namespace) -> int:
    from .ingest.commands import print_rejected

    settings = _settings(args)
    setup_logging(settings)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be a positive number")
    return print_rejected(settings, limit=args.limit, as_json=args.json)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "serve": (cmd_serve, "apply pending migrations and serve the API"),
    "migrate": (cmd_migrate, "apply pending database migrations"),
    "check-config": (cmd_check_config, "validate the configuration and exit"),
    "token": (cmd_token, "print a signed JWT for calling the API"),
    "sync": (cmd_sync, "send queued images and changes upstream (store-and-forward)"),
    "status": (cmd_status, "print the sync status (as GET /sync/status)"),
    "scan": (cmd_scan, "index the images (and sidecars) of an existing folder"),
    "rejected": (cmd_rejected, "list captures that could not be indexed, and why"),
    "doctor": (cmd_doctor, "check configuration, database, permissions, disk, clock, upstream"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgecatalog", description="Offline, edge-side image catalog.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (func, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--config", metavar="FILE",
                         help="TOML configuration file (default: $EDGECATALOG_CONFIG)")
        cmd.set_defaults(func=func)
        if name == "check-config":
            cmd.add_argument("--show", action="store_true", help="print every effective value")
        if name == "sync":
            cmd.add_argument("--once", action="store_true",
                             help="drain the queue by hand, then exit (ignores backoff and "
                                  "a previous auth failure)")
            cmd.add_argument("--retry-quarantined", action="store_true",
                             help="put quarantined items back in the queue first")
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="print JSON instead")
        if name == "scan":
            cmd.add_argument("dir", metavar="DIR", help="folder to index")
            cmd.add_argument("--recursive", action="store_true", help="descend into subfolders")
            cmd.add_argument("--mode", choices=("index", "move"), default=None,
                             help="index in place or move into the data folder "
                                  "(default: [capture] mode)")
        if name == "rejected":
            cmd.add_argument("--limit", type=int, default=None, help="newest N only")
            cmd.add_argument("--json", action="store_true", help="print JSON instead")
        if name == "token":
            cmd.add_argument("--sub", required=True, help="subject (who the token is for)")
            cmd.add_argument("--scope", choices=("read", "write"), default="read")
            cmd.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
            cmd.add_argument("--ui", action="store_true",
                             help="print a link that opens the inspection page signed in")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"edgecatalog: configuration error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"edgecatalog: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"edgecatalog: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}",
              file=sys.stderr)
        return 1
    except Exception as exc:  # last resort: a line for the user, the traceback in the log
        log.debug("unexpected failure", exc_info=True)
        print(f"edgecatalog: unexpected error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
