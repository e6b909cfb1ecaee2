"""``edgecatalog explain URL``: what one ``GET /data/images`` request runs, and why.

Owns running a list request's real code path (``listing.parse_image_query`` and
``listing.select_images``, its annotations consumed as the view consumes them) against a catalog
opened read-only (a SQLite file, or a PostgreSQL session set read-only), with peewee's
statement log captured; then, per statement, its purpose, its bound values, the engine's plan
(SQLite's ``EXPLAIN QUERY PLAN``, PostgreSQL's ``EXPLAIN``) and the time of one run of it alone;
and the plan's choices as the planner stated them (``listing.Page.plan``: which count table
answered the total, whether classes were probed, whether the trigram index narrowed a search),
with what the engine decides by itself. The statements are captured, never re-derived, so they
cannot disagree with what the service runs. No Flask here; ``cli`` prints what this returns.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from peewee import SqliteDatabase
from werkzeug.datastructures import MultiDict

from . import db, listing
from .engines import current as engine
from .errors import UriTooLong
from .models import database

LIST_PATH = "/data/images"

# What each statement is for, from the function of ours that issued it (the innermost one on
# the stack): labels follow the code, so a new statement of an old function keeps its label.
PURPOSES: dict[str, str] = {
    "known_device_pk": "device lookup",
    "_class_candidates": "a rare class's images, rechecked",
    "_candidates": "search candidates",
    "search_zones": "search matches per zone",
    "_total": "total",
    "_searchless_count": "other filters' count",
    "walk_ids": "page: bounded walk",
    "page_ids": "page: zone bounds",
    "_rows": "page: zone rows",
    "window": "page: filters' time window",
    "page_rows": "page",
    "annotation_cursor": "annotations",
}
_OUR_MODULES = frozenset(
    {
        listing.plan.__name__,
        listing.sql.__name__,
        listing.scan_cache.__name__,
        listing.zone_page.__name__,
    }
)

# The service's pragmas minus the ones that write (journal_mode, synchronous): a read-only
# connection must not try to change the journal. query_only is a second lock on the door.
READ_ONLY_PRAGMAS: dict[str, Any] = {
    **{
        name: value
        for name, value in engine().pragmas.items()
        if name not in ("journal_mode", "synchronous")
    },
    "query_only": 1,
}


class ExplainError(Exception):
    """The URL or the catalog cannot be explained (one line for the user)."""


@dataclass
class Statement:
    """One statement the request ran, in order."""

    purpose: str
    sql: str
    params: tuple
    plan: list[dict[str, Any]] = field(default_factory=list)  # EXPLAIN QUERY PLAN rows
    ms: float = 0.0  # one run of the statement alone, after the request ran it
    first_row: tuple | None = None  # what the choices are read from; not printed


@dataclass
class Explanation:
    url: str
    query: dict[str, Any]
    statements: list[Statement]
    choices: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "query": self.query,
            "statements": [
                {
                    "purpose": s.purpose,
                    "sql": s.sql,
                    "params": list(s.params),
                    "plan": s.plan,
                    "ms": round(s.ms, 3),
                }
                for s in self.statements
            ],
            "choices": self.choices,
        }


def list_args(url: str) -> tuple[MultiDict, str]:
    """The arguments of a list URL as the web layer sees them (repeated names kept, blank
    values kept), and its raw query string. Only the path and the query matter."""
    parts = urlsplit(url.strip())
    if parts.path.rstrip("/") != LIST_PATH:
        raise ExplainError(
            f"explain takes a list request: {LIST_PATH}?... or http://HOST:PORT{LIST_PATH}?..., "
            f"not {parts.path or url!r}"
        )
    return MultiDict(parse_qsl(parts.query, keep_blank_values=True)), parts.query


def open_read_only(path: Path) -> bool:
    """``models.database`` on ``path``, read-only: never creates, migrates or writes the file.
    True when opened ``immutable`` (see ``_state``).

    ``mode=ro`` still creates the ``-wal`` and ``-shm`` files of a WAL database when they are
    missing, and files made by another user (root running this) would lock the service out of
    its own catalog. No ``-wal`` file means no connection has the catalog open and everything is
    in the main file, so it is read as ``immutable`` (no files, no locks); ``explain_url`` checks
    that nothing started writing meanwhile. With a ``-wal`` file (a service running), ``mode=ro``
    reads through it and creates nothing."""
    if not path.is_file():
        raise ExplainError(f"no catalog at {path} (nothing to explain; 'serve' creates it)")
    immutable = not _wal(path).exists()
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    db.bind(
        SqliteDatabase(
            uri, uri=True, pragmas=READ_ONLY_PRAGMAS, check_same_thread=False, timeout=15
        )
    )
    return immutable


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _state(path: Path) -> tuple[int, int, bool]:
    """What changes when anything writes the catalog: an immutable read is valid while this
    stays the same."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size, _wal(path).exists()


class _StatementLog(logging.Handler):
    """peewee logs ``(sql, params)`` at DEBUG just before it executes a statement."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[Statement] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple) and len(record.msg) == 2:
            sql, params = record.msg
            self.statements.append(Statement(_purpose(), sql, tuple(params or ())))


def _purpose() -> str:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") in _OUR_MODULES:
            label = PURPOSES.get(frame.f_code.co_name)
            if label is not None:
                return label
        frame = frame.f_back
    return "other"


@contextmanager
def captured_statements() -> Iterator[list[Statement]]:
    """Every statement run through peewee inside the block, in order. (Bookkeeping that goes
    to the connection directly, ``scan_cache``'s ``PRAGMA data_version``, is not a statement
    of the request and is not seen.)"""
    handler = _StatementLog()
    logger = logging.getLogger("peewee")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.statements
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run_list(query: listing.ImageQuery) -> listing.Page:
    """What the view does with the database for ``query``: the page, and its annotations read
    to the end as the response streams them."""
    page = listing.select_images(query)
    for _row in page.items():
        pass
    return page


def list_statements(query: listing.ImageQuery) -> tuple[list[Statement], dict[str, str]]:
    """The statements a list request for ``query`` runs, in order (inside a connection), and
    the choices the planner made."""
    with captured_statements() as statements:
        page = run_list(query)
    return statements, page.plan


def plan_rows(conn: sqlite3.Connection, sql: str, params: tuple) -> list[dict[str, Any]]:
    return [
        {"id": row[0], "parent": row[1], "detail": row[3]}
        for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)
    ]


def timed(conn: sqlite3.Connection, sql: str, params: tuple, repeat: int = 1) -> float:
    """Milliseconds of the best of ``repeat`` runs of the statement, every row fetched."""
    return _timed_run(conn, sql, params, repeat)[0]


def _timed_run(
    conn: sqlite3.Connection, sql: str, params: tuple, repeat: int = 1
) -> tuple[float, tuple | None]:
    best, first = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        rows = conn.execute(sql, params).fetchall()
        best = min(best, time.perf_counter() - started)
        first = rows[0] if rows else None
    return best * 1000, first


def query_dict(query: listing.ImageQuery) -> dict[str, Any]:
    out = dataclasses.asdict(query)
    out["filters"] = {k: list(v) if isinstance(v, tuple) else v for k, v in query.filters.items()}
    return out


def explain_query(query: listing.ImageQuery, url: str = "") -> Explanation:
    """Run ``query``'s list path on the open database and describe it."""
    with database.connection_context():
        statements, plan = list_statements(query)
        if engine().name == "sqlite":
            # Straight on the connection: the replays are not statements of the request.
            conn = database.connection()
            for statement in statements:
                statement.plan = plan_rows(conn, statement.sql, statement.params)
                statement.ms, statement.first_row = _timed_run(
                    conn, statement.sql, statement.params
                )
        else:
            for statement in statements:
                statement.plan = _postgres_plan(statement.sql, statement.params)
                statement.ms = _postgres_ms(statement.sql, statement.params)
    explained = choices(query, statements, plan)
    explained["engine"] = ENGINE_NOTES[engine().name]
    return Explanation(url, query_dict(query), statements, explained)


# What the engine plans by itself, beside the choices the code makes (the same on both).
ENGINE_NOTES = {
    "sqlite": (
        "SQLite: no statistics, so the code steers where it must (a unary '+' keeps a 3-4 "
        "valued column's index out of a batch filter's plan); plans are EXPLAIN QUERY PLAN"
    ),
    "postgres": (
        "PostgreSQL: the same statements, planned by PostgreSQL from its own statistics (no "
        "steering); the search candidates come from the pg_trgm index; plans are EXPLAIN"
    ),
}


def _postgres_plan(sql: str, params: tuple) -> list[dict[str, Any]]:
    rows = database.execute_sql("EXPLAIN " + sql, params).fetchall()
    return [{"id": i, "parent": 0, "detail": line} for i, (line,) in enumerate(rows, 1)]


def _postgres_ms(sql: str, params: tuple) -> float:
    started = time.perf_counter()
    database.execute_sql(sql, params).fetchall()
    return (time.perf_counter() - started) * 1000


def explain_postgres(
    url: str,
    database_url: str,
    password: str | None = None,
    *,
    max_class_values: int = 50,
    max_chars: int = 1024,
    max_query_bytes: int | None = None,
) -> Explanation:
    """``explain_url`` for a catalog on PostgreSQL: its session read-only, so nothing the
    request runs can write."""
    from .engines import postgres

    query = _parse(url, max_class_values, max_chars, max_query_bytes)
    db.bind(postgres.open_database(database_url, password))
    try:
        db.connect()
        database.execute_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        return explain_query(query, url)
    finally:
        if not database.is_closed():
            database.close()


def _parse(
    url: str, max_class_values: int, max_chars: int, max_query_bytes: int | None
) -> listing.ImageQuery:
    args, raw = list_args(url)
    if max_query_bytes is not None and len(raw.encode()) > max_query_bytes:
        raise UriTooLong(f"query string is longer than {max_query_bytes} bytes", "query")
    return listing.parse_image_query(args, max_class_values=max_class_values, max_chars=max_chars)


def explain_url(
    url: str,
    db_path: Path,
    *,
    max_class_values: int = 50,
    max_chars: int = 1024,
    max_query_bytes: int | None = None,
) -> Explanation:
    """Parse ``url`` as the service does (a ``ValidationError`` as the API gives it), open
    ``db_path`` read-only and explain the request."""
    query = _parse(url, max_class_values, max_chars, max_query_bytes)
    for _attempt in range(2):
        immutable = open_read_only(db_path)
        before = _state(db_path)
        try:
            explanation = explain_query(query, url)
        finally:
            if not database.is_closed():
                database.close()
        # A writer that started meanwhile made a -wal file (or checkpointed into the file):
        # read again through its WAL, which now exists, with mode=ro.
        if not immutable or _state(db_path) == before:
            break
    return explanation


def choices(
    query: listing.ImageQuery, statements: list[Statement], plan: dict[str, str]
) -> dict[str, str]:
    """The plan's choices as the planner stated them, with the device lookup's answer."""
    out: dict[str, str] = {}
    for statement in statements:
        if statement.purpose == "device lookup" and statement.first_row:
            out["device"] = (
                f"device_id {query.filters['device_id']!r} is row {statement.first_row[0]}"
            )
    for key in ("search", "total", "classes", "page"):
        if key in plan:
            out[key] = plan[key]
    if query.include_annotations:
        out["annotations"] = (
            "one statement for the whole page's annotations"
            if any(s.purpose == "annotations" for s in statements)
            else "no annotations statement: the page is empty"
        )
    return out


def render_text(explanation: Explanation) -> str:
    lines = [f"GET {explanation.url}" if explanation.url else "GET /data/images", "", "query:"]
    for key, value in explanation.query.items():
        lines.append(f"  {key} = {value!r}")
    lines += ["", f"statements ({len(explanation.statements)}, in order):"]
    for n, statement in enumerate(explanation.statements, 1):
        lines.append(f"  {n}. {statement.purpose}  [{statement.ms:.2f} ms, one run]")
        lines.append(f"     sql:    {' '.join(statement.sql.split())}")
        lines.append(f"     params: {list(statement.params)!r}")
        lines.append("     plan:")
        depth: dict[int, int] = {0: 0}
        for row in statement.plan:
            depth[row["id"]] = depth.get(row["parent"], 0) + 1
            lines.append(f"       {'  ' * (depth[row['id']] - 1)}{row['detail']}")
    lines += ["", "choices:"]
    for key, value in explanation.choices.items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)
