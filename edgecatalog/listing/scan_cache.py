"""Results of list statements that scan (a common or 1-2 character ``search``): remembered
per database connection until the database changes, and the total of a search alone carried
forward across inserts.

Every other total is read from trigger-kept count tables in a few pages; an exact substring
count cannot be: it reads the whole filename index (~100 ms at a million images). A client
paging through one search, or a screen refreshing it, asks the same statement again and again
while nothing was written, so the answer is kept, keyed by the statement and its arguments.

Never stale: an entry is valid only while the engine's fingerprint of the connection (SQLite:
``PRAGMA data_version``, which changes when any other connection commits, and the connection's
own ``total_changes``, which changes with its writes, committed or not) is what it was when
the entry was computed. An engine without such a fingerprint (PostgreSQL: ``remembers`` is
false) gets nothing remembered; only the carried search total below applies there.
Nothing is remembered inside a transaction. Per connection, so no lock: each waitress thread
has its own long-lived connection. Bounded to ``MAX_ENTRIES`` statements per connection.

A device writes an image every few seconds, which would empty that cache before a search is
asked twice. So the total of a search with no other filter is carried forward instead
(``search_total``, shared by all threads): with ``image_name_epoch`` (migration 0007: bumped by
every delete or rename) unchanged and the row count grown by exactly the rows above the old
maximum id, the rows that were there are still there with the same names, and the total is the
old one plus the matches among the new rows, counted through the primary key.
"""

from __future__ import annotations

import threading
from typing import Any

from ..engines import current as engine
from ..models import database

MAX_ENTRIES = 32
_local = threading.local()

# One statement, one snapshot: the state the carried total is checked against, and the count.
_STATE = (
    "SELECT (SELECT n FROM image_name_epoch), (SELECT coalesce(max(id), 0) FROM image), "
    "(SELECT coalesce(sum(n), 0) FROM image_total_count)"
)


def _full() -> str:
    return _STATE + f", 0, (SELECT count(*) FROM image t WHERE {engine().like('t.filename')})"


def _delta() -> str:
    return (
        _STATE + ", (SELECT count(*) FROM image WHERE id > ?), (SELECT count(*) FROM image t "
        f"WHERE t.id > ? AND {engine().like('t.filename')})"
    )


# (database file, pattern) -> (epoch, max id, rows, total)
_carried: dict[tuple[str, str], tuple[int, int, int, int]] = {}
_carried_lock = threading.Lock()


def _fingerprint(conn: Any) -> tuple:
    return engine().fingerprint(conn)


def _in_transaction(conn: Any) -> bool:
    # sqlite3 knows of implicit transactions too; peewee knows of the ones it opened.
    return bool(getattr(conn, "in_transaction", False)) or database.in_transaction()


def fetchone(sql: str, args: tuple) -> tuple:
    """``database.execute_sql(sql, args).fetchone()``, answered from memory when this same
    statement ran on this connection and the database has not changed since."""
    conn = database.connection()
    if not engine().remembers or _in_transaction(conn):
        return database.execute_sql(sql, args).fetchone()
    state = getattr(_local, "state", None)
    now = _fingerprint(conn)
    if state is None or state[0] is not conn or state[1] != now:
        state = _local.state = (conn, now, {})
    entries: dict = state[2]
    key = (sql, args)
    if key in entries:
        return entries[key]
    row = database.execute_sql(sql, args).fetchone()
    if _fingerprint(conn) != now:  # a write committed while it ran: answer, but do not keep
        return row
    if len(entries) >= MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    entries[key] = row
    return row


def search_total(pattern: str) -> int:
    """Images whose filename is LIKE ``pattern``: exact, from the carried total when it still
    holds, else from a full count (which is then carried)."""
    key = (str(database.location), pattern)
    with _carried_lock:
        known = _carried.get(key)
    if known is not None:
        epoch, max_id, rows, added_rows, added = map(
            int, database.execute_sql(_delta(), (known[1], known[1], pattern)).fetchone()
        )
        if epoch == known[0] and rows - known[2] == added_rows:
            return _carry(key, (epoch, max_id, rows, known[3] + added))
    epoch, max_id, rows, _, total = map(int, database.execute_sql(_full(), (pattern,)).fetchone())
    return _carry(key, (epoch, max_id, rows, total))


def _carry(key: tuple[str, str], state: tuple[int, int, int, int]) -> int:
    # Rows written by this connection's open transaction could still be rolled back.
    if not _in_transaction(database.connection()):
        with _carried_lock:
            _carried.pop(key, None)
            _carried[key] = state
            while len(_carried) > MAX_ENTRIES:
                _carried.pop(next(iter(_carried)))
    return state[3]


def forget() -> None:
    """Drop every carried total (a new database was opened in this process)."""
    with _carried_lock:
        _carried.clear()
