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
        secret_keys = {
            "auth.jwt_secret",
            "upstream.device_key",
            "upstream.api_token",
            "auth.device_keys",
        }
        for setting in SETTINGS:
            value = settings[setting.name]
            shown = "<set>" if setting.name in secret_keys and value else value
            print(f"{setting.name} = {shown!r}")
    from .sync.rules import parse_rules, unreachable

    for warning in unreachable(parse_rules(settings["upstream.select"])):
        print(f"warning: upstream.select: {warning}", file=sys.stderr)
    print(f"configuration OK ({settings.source})")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    if args.action == "revoke":
        return _token_revoke(args)
    if args.action == "list-revoked":
        return _token_list_revoked(args)
    import jwt

    from .auth import Authenticator

    settings = _settings(args)
    if args.sub is None:
        raise UsageError("--sub is required to issue a token (who the token is for)")
    if args.ttl < 1:
        raise UsageError("--ttl must be a positive number of seconds")
    if args.ttl > settings["auth.max_token_ttl"]:
        raise UsageError(
            f"--ttl {args.ttl} is longer than [auth] max_token_ttl "
            f"({settings['auth.max_token_ttl']} seconds)"
        )
    if not args.sub.strip():
        raise UsageError("--sub must not be empty")
    token = Authenticator(settings).issue_token(args.sub, args.scope, args.ttl)
    print(ui_link(settings, token) if args.ui else token)
    # The jti is what 'token revoke --jti' takes; on stderr, so stdout stays the token alone.
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    print(
        f"edgecatalog: token jti {jti} (revoke it alone with: edgecatalog token revoke "
        f"--jti {jti})",
        file=sys.stderr,
    )
    return 0


def _open_catalog(settings: Settings) -> None:
    """The catalog database, migrated (the key and revocation tables come with 0008)."""
    from . import db

    db.open_for(settings)
    db.migrate()


def _token_revoke(args: argparse.Namespace) -> int:
    from .models import database
    from .revocation import revoke_tokens

    settings = _settings(args)
    if args.all:
        kind, value, what = "all", "", "every token issued before now"
    elif args.jti is not None:
        kind, value, what = "jti", args.jti.strip(), f"the token with jti {args.jti.strip()!r}"
    else:
        kind, value = "subject", args.subject.strip()
        what = f"every token of subject {value!r} issued before now"
    if kind != "all" and not value:
        raise UsageError(f"--{kind} must not be empty")
    if len(value) > 256:
        raise UsageError(f"--{kind} must be at most 256 characters")
    _open_catalog(settings)
    with database.connection_context():
        revoke_tokens(kind, value)
    print(
        f"revoked {what}; running services refuse it within about a second "
        "(signed image URLs keep working)"
    )
    return 0


def _token_list_revoked(args: argparse.Namespace) -> int:
    from .models import database
    from .revocation import token_revocations
    from .timeutil import format_ts

    _open_catalog(_settings(args))
    with database.connection_context():
        rows = [
            {"id": r.id, "kind": r.kind, "value": r.value, "revoked_at": format_ts(r.created_at)}
            for r in token_revocations()
        ]
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    _print_table(
        ("ID", "KIND", "VALUE", "REVOKED_AT"),
        [(str(r["id"]), r["kind"], r["value"] or "-", r["revoked_at"]) for r in rows],
    )
    return 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def cmd_device_key(args: argparse.Namespace) -> int:
    from .device_keys import configured_device_keys
    from .models import database

    settings = _settings(args)
    configured = configured_device_keys(settings)  # a bad entry is a configuration error
    _open_catalog(settings)
    with database.connection_context():
        return DEVICE_KEY_ACTIONS[args.action][0](args, configured)


def _device_key_add(args: argparse.Namespace, configured: dict[str, str]) -> int:
    from .device_keys import add_device_key, check_device_id, fingerprint
    from .errors import ValidationError

    try:
        device_id = check_device_id(args.device_id, "DEVICE_ID")
    except ValidationError as exc:
        raise UsageError(exc.message) from None
    label = args.label.strip()
    if len(label) > 200 or not label.isprintable():
        raise UsageError("--label must be at most 200 printable characters")
    key, row = add_device_key(device_id, label)
    print(key)
    print(
        f"edgecatalog: device key {fingerprint(row.digest)} for device {device_id!r} stored "
        "(its digest only: this is the one time the key is shown); running services accept "
        "it within about a second",
        file=sys.stderr,
    )
    return 0


def _device_key_list(args: argparse.Namespace, configured: dict[str, str]) -> int:
    from .device_keys import fingerprint, stored_device_keys
    from .timeutil import format_ts

    rows = [
        {
            "device_id": device_id,
            "fingerprint": fingerprint(digest),
            "source": "settings",
            "created_at": "",
            "revoked_at": "",
            "label": "",
        }
        for digest, device_id in sorted(configured.items(), key=lambda kv: kv[1])
    ]
    rows += [
        {
            "device_id": r.device_id,
            "fingerprint": fingerprint(r.digest),
            "source": "database",
            "created_at": format_ts(r.created_at),
            "revoked_at": format_ts(r.revoked_at),
            "label": r.label,
        }
        for r in stored_device_keys()
    ]
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    _print_table(
        ("DEVICE_ID", "FINGERPRINT", "SOURCE", "CREATED", "REVOKED", "LABEL"),
        [
            (
                r["device_id"],
                r["fingerprint"],
                r["source"],
                r["created_at"] or "-",
                r["revoked_at"] or "-",
                r["label"],
            )
            for r in rows
        ],
    )
    return 0


def _device_key_revoke(args: argparse.Namespace, configured: dict[str, str]) -> int:
    from .device_keys import fingerprint, revoke_device_keys

    try:
        result = revoke_device_keys(args.selector, configured)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if result.revoked:
        prints = ", ".join(fingerprint(r.digest) for r in result.revoked)
        print(
            f"revoked {len(result.revoked)} key(s) of device {result.revoked[0].device_id!r}: "
            f"{prints}; running services refuse them within about a second"
        )
    else:
        print(f"nothing to revoke: {len(result.already)} matching key(s) were revoked already")
    return 0


DEVICE_KEY_ACTIONS: dict[str, tuple[Callable[[argparse.Namespace, dict[str, str]], int], str]] = {
    "add": (_device_key_add, "make a key bound to DEVICE_ID and print it, once"),
    "list": (_device_key_list, "list device ids and key fingerprints (never the keys)"),
    "revoke": (_device_key_revoke, "revoke a key by fingerprint, or all keys of a device"),
}
TOKEN_ACTIONS = {
    "revoke": "revoke tokens by jti, by subject or all of them (signed URLs keep working)",
    "list-revoked": "list the token revocations",
}


def ui_link(settings: Settings, token: str) -> str:
    """A link that signs the inspection page in: the token rides in the fragment, which a
    browser never sends to the server, and the page removes it from the address bar."""
    base = settings["server.public_url"].rstrip("/")
    if not base:
        import socket

        from .hosts import WILDCARD_BINDS

        host = settings["server.host"]
        if host in WILDCARD_BINDS:
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
        return run_sync(
            settings, once=args.once, retry=args.retry_quarantined, reselect=args.reselect
        )
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


def cmd_explain(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .config import read_secret_file
    from .errors import CatalogError
    from .explain import ExplainError, explain_postgres, explain_url, render_text

    settings = _settings(args)
    bounds = {
        "max_class_values": settings["limits.max_class_values"],
        "max_chars": settings["limits.max_param_chars"],
        "max_query_bytes": settings["server.max_query_string_bytes"],
    }
    try:
        if settings["database.url"]:
            password_file = settings["database.password_file"]
            password = (
                read_secret_file(password_file, "database.password_file") if password_file else None
            )
            explanation = explain_postgres(args.url, settings["database.url"], password, **bounds)
        else:
            explanation = explain_url(args.url, Path(settings.db_path), **bounds)
    except ExplainError as exc:
        raise UsageError(str(exc)) from None
    except CatalogError as exc:  # what the API would answer (400, 404, 414): the same words
        raise UsageError(f"{exc.code} {exc.details}: {exc.message}") from None
    print(json.dumps(explanation.as_json(), indent=2) if args.json else render_text(explanation))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .datasets.commands import CommandRefused, run_export

    settings = _settings(args)
    setup_logging(settings)
    # The options as a query string gives them, for the API's own parser.
    options = {
        name: value for name in _export_option_names() if (value := getattr(args, name)) is not None
    }
    try:
        run_export(settings, args.format, options, Path(args.out))
    except CommandRefused as exc:
        raise UsageError(str(exc)) from None
    return 0


def _export_option_names() -> list[str]:
    from .datasets import EXPORT_OPTIONS
    from .listing import FILTERS

    return [f.param for f in FILTERS] + [o.param for o in EXPORT_OPTIONS]


def _add_export_options(cmd: argparse.ArgumentParser) -> None:
    from .datasets import EXPORT_OPTIONS, FORMATS
    from .listing import FILTERS

    cmd.add_argument("format", metavar="FORMAT", choices=tuple(FORMATS), help=", ".join(FORMATS))
    cmd.add_argument("--out", metavar="FILE", required=True, help="the ZIP to write")
    _add_declared(cmd, (*FILTERS, *EXPORT_OPTIONS))


def _add_declared(cmd: argparse.ArgumentParser, declared: tuple) -> None:
    """One ``--option VALUE`` per declared filter or option, in its query-string form."""
    for one in declared:
        cmd.add_argument(
            f"--{one.param.replace('_', '-')}",
            dest=one.param,
            metavar="VALUE",
            help=one.help.replace("%", "%%"),
        )


def cmd_stats(args: argparse.Namespace) -> int:
    from .stats_command import StatsRefused, option_names, run_stats

    settings = _settings(args)
    setup_logging(settings)
    options = {n: v for n in option_names() if (v := getattr(args, n)) is not None}
    try:
        return run_stats(settings, options, as_json=args.json)
    except StatsRefused as exc:
        raise UsageError(str(exc)) from None


def _add_stats_options(cmd: argparse.ArgumentParser) -> None:
    from .listing import FACET_OPTIONS, FILTERS

    _add_declared(cmd, (*FILTERS, *FACET_OPTIONS))
    cmd.add_argument("--json", action="store_true", help="print the endpoint's JSON instead")


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .datasets.commands import CommandRefused, run_import

    settings = _settings(args)
    setup_logging(settings)
    try:
        run_import(
            settings,
            Path(args.path),
            args.format,
            device_id=args.device_id,
            project=args.project,
        )
    except CommandRefused as exc:
        raise UsageError(str(exc)) from None
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "serve": (cmd_serve, "apply pending migrations and serve the API"),
    "migrate": (cmd_migrate, "apply pending database migrations"),
    "check-config": (cmd_check_config, "validate the configuration and exit"),
    "token": (cmd_token, "print a signed JWT for calling the API ('token revoke' revokes)"),
    "device-key": (cmd_device_key, "add, list or revoke the keys devices upload with"),
    "sync": (cmd_sync, "send queued images and changes upstream (store-and-forward)"),
    "status": (cmd_status, "print the sync status (as GET /sync/status)"),
    "scan": (cmd_scan, "index the images (and sidecars) of an existing folder"),
    "rejected": (cmd_rejected, "list captures that could not be indexed, and why"),
    "explain": (
        cmd_explain,
        "show the SQL, values and query plans a GET /data/images URL runs (read-only)",
    ),
    "doctor": (cmd_doctor, "check configuration, database, permissions, disk, clock, upstream"),
    "export": (
        cmd_export,
        "write a view of the catalog as a dataset archive (as GET /data/exports/FORMAT)",
    ),
    "import": (cmd_import, "add a COCO or YOLO dataset (a ZIP or a folder) to the catalog"),
    "stats": (
        cmd_stats,
        "print how many images of a view have each value, and when (as facets)",
    ),
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
        cmd.add_argument(
            "--config",
            metavar="FILE",
            help="TOML configuration file (default: $EDGECATALOG_CONFIG)",
        )
        cmd.set_defaults(func=func)
        if name == "check-config":
            cmd.add_argument("--show", action="store_true", help="print every effective value")
        if name == "sync":
            cmd.add_argument(
                "--once",
                action="store_true",
                help="drain the queue by hand, then exit (ignores backoff and "
                "a previous auth failure)",
            )
            cmd.add_argument(
                "--retry-quarantined",
                action="store_true",
                help="put quarantined items back in the queue first",
            )
            cmd.add_argument(
                "--reselect",
                action="store_true",
                help="decide again, by the [upstream] select rules, every image not yet sent "
                "(alone, it does only that)",
            )
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="print JSON instead")
        if name == "scan":
            cmd.add_argument("dir", metavar="DIR", help="folder to index")
            cmd.add_argument("--recursive", action="store_true", help="descend into subfolders")
            cmd.add_argument(
                "--mode",
                choices=("index", "move"),
                default=None,
                help="index in place or move into the data folder (default: [capture] mode)",
            )
        if name == "rejected":
            cmd.add_argument("--limit", type=int, default=None, help="newest N only")
            cmd.add_argument("--json", action="store_true", help="print JSON instead")
        if name == "explain":
            cmd.add_argument(
                "url",
                metavar="URL",
                help="a list request as a client writes it: '/data/images?class_values=crack'",
            )
            cmd.add_argument("--json", action="store_true", help="print JSON instead")
        if name == "export":
            _add_export_options(cmd)
        if name == "stats":
            _add_stats_options(cmd)
        if name == "import":
            cmd.add_argument("path", metavar="PATH", help="the dataset: a ZIP or a folder")
            cmd.add_argument("--format", required=True, choices=("coco", "yolo"))
            cmd.add_argument(
                "--device-id",
                default=None,
                help="the device its images are put under (default: [device] id)",
            )
            cmd.add_argument("--project", default=None, help="a project (made if new) to hold them")
        if name == "token":
            cmd.add_argument(
                "--sub", default=None, help="subject (who the token is for); required to issue one"
            )
            cmd.add_argument("--scope", choices=("read", "write"), default="read")
            cmd.add_argument(
                "--ttl",
                type=int,
                default=3600,
                help="lifetime in seconds, at most [auth] max_token_ttl",
            )
            cmd.add_argument(
                "--ui",
                action="store_true",
                help="print a link that opens the inspection page signed in",
            )
            _add_actions(cmd, TOKEN_ACTIONS, required=False)
        if name == "device-key":
            _add_actions(cmd, {a: h for a, (_, h) in DEVICE_KEY_ACTIONS.items()}, required=True)
    return parser


def _add_actions(cmd: argparse.ArgumentParser, actions: dict[str, str], required: bool) -> None:
    """ACTION sub-commands of ``cmd`` (``token revoke``, ``device-key add`` ...)."""
    sub = cmd.add_subparsers(dest="action", metavar="ACTION", required=required)
    for action, help_text in actions.items():
        parser = sub.add_parser(action, help=help_text, description=help_text)
        # SUPPRESS: given after the action it counts; not given, the command's own stays.
        parser.add_argument(
            "--config",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="TOML configuration file (default: $EDGECATALOG_CONFIG)",
        )
        if action == "revoke" and "list-revoked" in actions:  # token revoke
            which = parser.add_mutually_exclusive_group(required=True)
            which.add_argument("--jti", help="the token with this jti")
            which.add_argument("--subject", help="every token of this subject issued before now")
            which.add_argument("--all", action="store_true", help="every token issued before now")
        elif action == "add":
            parser.add_argument(
                "device_id",
                metavar="DEVICE_ID",
                help="the device the key is bound to (as an upload's device_id)",
            )
            parser.add_argument("--label", default="", help="a note kept with the key")
        elif action == "revoke":
            parser.add_argument(
                "selector",
                metavar="DEVICE_ID|FINGERPRINT",
                help="a key's fingerprint (from 'list'), or a device id: all of its stored keys",
            )
        if action in ("list", "list-revoked"):
            parser.add_argument("--json", action="store_true", help="print JSON instead")


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
        print(
            f"edgecatalog: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # last resort: a line for the user, the traceback in the log
        log.debug("unexpected failure", exc_info=True)
        print(f"edgecatalog: unexpected error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
