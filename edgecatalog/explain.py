"""``edgecatalog explain URL``: what one ``GET /data/images`` request runs, and why.

Owns running a list request's real code path (``queries.parse_image_query`` and
``queries.select_images``, its annotations consumed as the view consumes them) against a catalog
opened read-only, with peewee's statement log captured; then, per statement, its purpose, its
bound values, SQLite's ``EXPLAIN QUERY PLAN`` rows and the time of one run of it alone; and the
plan choices the code made (which count table answered the total, whether classes were probed,
whether the trigram index narrowed a search). The statements are captured, never re-derived, so
they cannot disagree with what the service runs. No Flask here; ``cli`` prints what this returns.
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

from werkzeug.datastructures import MultiDict

from . import image_sql, queries, scan_cache
from .errors import UriTooLong
from .models import database

LIST_PATH = "/data/images"

# What each statement is for, from the function of ours that issued it (the innermost one on
# the stack): labels follow the code, so a new statement of an old function keeps its label.
PURPOSES: dict[str, str] = {
    "known_device_pk": "device lookup",
    "fts_ids": "search candidates",
    "search_total": "total",
    "_total": "total",
    "page_rows": "page",
    "annotations_in_order": "annotations",
}
_OUR_MODULES = frozenset({queries.__name__, image_sql.__name__, scan_cache.__name__})

# The service's pragmas minus the ones that write (journal_mode, synchronous): a read-only
# connection must not try to change the journal. query_only is a second lock on the door.
READ_ONLY_PRAGMAS: dict[str, Any] = {
    "foreign_keys": 1,
    "busy_timeout": 15_000,
    "cache_size": -2_000,
    "temp_store": "memory",
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
    database.init(uri, uri=True, pragmas=READ_ONLY_PRAGMAS, check_same_thread=False, timeout=15)
    scan_cache.forget()  # carried search totals belong to the database that was open
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


def run_list(query: queries.ImageQuery) -> queries.Page:
    """What the view does with the database for ``query``: the page, and its annotations read
    to the end as the response streams them."""
    page = queries.select_images(query)
    for _row in page.items():
        pass
    return page


def list_statements(query: queries.ImageQuery) -> list[Statement]:
    """The statements a list request for ``query`` runs, in order (inside a connection)."""
    with captured_statements() as statements:
        run_list(query)
    return statements


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


def query_dict(query: queries.ImageQuery) -> dict[str, Any]:
    out = dataclasses.asdict(query)
    out["filters"] = {k: list(v) if isinstance(v, tuple) else v for k, v in query.filters.items()}
    return out


def explain_query(query: queries.ImageQuery, url: str = "") -> Explanation:
    """Run ``query``'s list path on the open database and describe it."""
    with database.connection_context():
        statements = list_statements(query)
        # Straight on the connection: the replays are not statements of the request.
        conn = database.connection()
        for statement in statements:
            statement.plan = plan_rows(conn, statement.sql, statement.params)
            statement.ms, statement.first_row = _timed_run(conn, statement.sql, statement.params)
    return Explanation(url, query_dict(query), statements, choices(query, statements))


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
    args, raw = list_args(url)
    if max_query_bytes is not None and len(raw.encode()) > max_query_bytes:
        raise UriTooLong(f"query string is longer than {max_query_bytes} bytes", "query")
    query = queries.parse_image_query(args, max_class_values=max_class_values, max_chars=max_chars)
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


# Count tables, by what they mean for the total (image_sql's docstring has the strategy).
_TOTAL_SOURCES = (
    ("image_class_facet", "image_class_facet (one class with facet filters)"),
    ("image_class_count", "image_class_count (images per class)"),
    ("image_facet_count", "image_facet_count (a batch or project among the filters)"),
    ("image_total_count", "image_total_count (facet columns only)"),
)


def choices(query: queries.ImageQuery, statements: list[Statement]) -> dict[str, str]:
    """The plan choices the code made, read from the statements it ran and their results."""
    filters = query.filters
    by_purpose: dict[str, list[Statement]] = {}
    for statement in statements:
        by_purpose.setdefault(statement.purpose, []).append(statement)
    out: dict[str, str] = {}
    device = by_purpose.get("device lookup")
    if device:
        found = device[0].first_row
        if found:  # an unknown device ended the request with a 404 before this
            out["device"] = f"device_id {filters['device_id']!r} is row {found[0]}"
    if "search" in filters:
        out["search"] = _search_choice(filters["search"], by_purpose)
    total = by_purpose.get("total")
    if total:
        out["total"] = _total_choice(total[0])
    elif "search candidates" in by_purpose and "search" in out:
        out["total"] = "the count of the rechecked trigram candidates (no count statement)"
    if filters.get("class_values") and total:
        out["classes"] = _class_choice(query, total[0], by_purpose.get("page", []))
    if "page" in by_purpose:
        out["page"] = (
            f"the page's ids from image alone by {query.sort} {query.order} (limit "
            f"{query.limit}, offset {query.offset}), then the joins for those ids only"
        )
        if "search candidates" in by_purpose and "json_each" in by_purpose["page"][0].sql:
            out["page"] += "; the ids are the rechecked trigram candidates"
    else:
        out["page"] = f"no page statement: the total is not above offset {query.offset}"
    if query.include_annotations:
        out["annotations"] = (
            "one statement for the whole page's annotations"
            if "annotations" in by_purpose
            else "no annotations statement: the page is empty"
        )
    return out


def _search_choice(term: str, by_purpose: dict[str, list[Statement]]) -> str:
    candidates = by_purpose.get("search candidates")
    if not candidates:
        return (
            "trigram index not used: the term has no run of 3 literal characters; the exact "
            "LIKE over the filename index decides (its count is remembered until a write)"
        )
    found = candidates[0].first_row[0] if candidates[0].first_row else 0
    if found > image_sql.FTS_PROBE:
        return (
            f"trigram index gave more than {image_sql.FTS_PROBE} candidates: the exact LIKE "
            "over the filename index instead (its count is remembered until a write)"
        )
    return (
        f"trigram index gave {found} candidate(s) (at most {image_sql.FTS_PROBE}), rechecked "
        "by the exact LIKE; total and page ids in one statement"
    )


def _total_choice(total: Statement) -> str:
    sql = total.sql
    if "image_name_epoch" in sql:
        how = "carried forward across inserts" if "WHERE id > ?" in sql else "a full count"
        return (
            f"a search alone: the exact LIKE count over the filename index ({how}), "
            "then carried forward across inserts"
        )
    if sql.startswith("SELECT CASE WHEN"):
        # The statement decides inside itself (CASE evaluates one branch): other < class_images.
        row = total.first_row
        taken = ""
        if row is not None and len(row) >= 4:
            other, class_images = row[2], row[3]
            taken = (
                f"; here {other} < {class_images}: probed"
                if other < class_images
                else f"; here {other} >= {class_images}: the IN list"
            )
        return (
            "several classes with facet filters: COUNT(*) probing the classes per row of the "
            "other filters when they match fewer images than the classes have, else over the "
            f"classes' IN list{taken}"
        )
    first = _first_column(sql)  # the total; the other columns feed the class choice
    if "SELECT DISTINCT image_id FROM annotation" in first:
        return "several classes alone: distinct images over the annotation class index"
    named = [what for table, what in _TOTAL_SOURCES if table in first]
    if named:
        return "count tables kept by triggers: " + ", ".join(named)
    return "COUNT(*) over image with every condition (a filter no count table has)"


def _first_column(sql: str) -> str:
    """The first result column of ``SELECT (...), ...``: the count statement's total."""
    if not sql.startswith("SELECT ("):
        return sql
    depth = 0
    for i, char in enumerate(sql[len("SELECT ") :], len("SELECT ")):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return sql[len("SELECT ") : i + 1]
    return sql


def _class_choice(query: queries.ImageQuery, total: Statement, pages: list[Statement]) -> str:
    probed = bool(pages) and "EXISTS (SELECT 1 FROM annotation a" in pages[0].sql
    row = total.first_row
    if row is None or len(row) < 4:
        return "probed per row" if probed else "the classes' IN list"
    count, _size, other, class_images = row[:4]
    wanted = query.offset + query.limit
    reason = (
        f"(offset+limit)*other = {wanted}*{other} = {wanted * other} vs "
        f"total*class_images = {count}*{class_images} = {count * class_images}"
    )
    if probed:
        return (
            f"the page probes the classes per row while walking the sort index: {reason}, smaller"
        )
    if not pages:
        return f"no page statement; {reason}"
    return f"the page takes the classes' IN list (rare enough): {reason}, not smaller"


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
