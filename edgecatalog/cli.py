"""The ``edgecatalog`` command: the only place that reads argv, sets up logging and calls
``waitress.serve``. Every failure a user can cause ends in one line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from .config import SETTINGS, ConfigError, Settings, load_settings

log = logging.getLogger("edgecatalog")


class UsageError(Exception):
    """A command was given arguments it cannot act on."""


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def setup_logging(settings: Settings | None = None) -> None:
    level = settings["logging.level"] if settings else "INFO"
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    import waitress

    from . import create_app

    settings = _settings(args)
    setup_logging(settings)
    from . import background

    app = create_app(settings)  # applies pending migrations before listening
    services = background.build_services(settings)
    server = waitress.create_server(
        app,
        host=settings["server.host"],
        port=settings["server.port"],
        threads=settings["server.threads"],
        connection_limit=settings["server.connection_limit"],
        channel_timeout=settings["server.channel_timeout"],
        max_request_header_size=settings["server.max_request_header_bytes"],
        max_request_body_size=max(settings["ingest.max_upload_bytes"],
                                  settings["server.max_json_body_bytes"]),
        ident="edgecatalog",
    )
    log.info("serving on http://%s:%s (data in %s)", settings["server.host"],
             server.effective_port, settings.data_dir)
    background.start_all(services)
    try:
        server.run()
    finally:
        background.stop_all(services, settings["server.shutdown_timeout"])
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from . import db

    settings = _settings(args)
    setup_logging(settings)
    db.open_for(settings)
    applied = db.migrate()
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
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
    print(token)
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "serve": (cmd_serve, "apply pending migrations and serve the API"),
    "migrate": (cmd_migrate, "apply pending database migrations"),
    "check-config": (cmd_check_config, "validate the configuration and exit"),
    "token": (cmd_token, "print a signed JWT for calling the API"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgecatalog",
                                     description="Offline, edge-side image catalog.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (func, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--config", metavar="FILE",
                         help="TOML configuration file (default: $EDGECATALOG_CONFIG)")
        cmd.set_defaults(func=func)
        if name == "check-config":
            cmd.add_argument("--show", action="store_true", help="print every effective value")
        if name == "token":
            cmd.add_argument("--sub", required=True, help="subject (who the token is for)")
            cmd.add_argument("--scope", choices=("read", "write"), default="read")
            cmd.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
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
