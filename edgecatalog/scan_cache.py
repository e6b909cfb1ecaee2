"""Results of list statements that scan (a common or 1-2 character ``search``), remembered per
database connection until the database changes.

Every other total is read from trigger-kept count tables in a few pages; an exact substring
count cannot be: it reads the whole filename index (~100 ms at a million images). A client
paging through one search, or a screen refreshing it, asks the same statement again and again
while nothing was written, so the answer is kept, keyed by the statement and its arguments.

Never stale: an entry is valid only while the connection's ``PRAGMA data_version`` (changes when
any other connection, in this process or another, commits) and its own ``total_changes``
(changes with its own writes, committed or not) are what they were when it was computed.
Nothing is remembered inside a transaction. Per connection, so no lock: each waitress thread
has its own long-lived connection. Bounded to ``MAX_ENTRIES`` statements per connection.
"""

from __future__ import annotations

import threading
from typing import Any

from .models import database

MAX_ENTRIES = 32
_local = threading.local()


def _fingerprint(conn: Any) -> tuple[int, int]:
    return conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes


def fetchone(sql: str, args: tuple) -> tuple:
    """``database.execute_sql(sql, args).fetchone()``, answered from memory when this same
    statement ran on this connection and the database has not changed since."""
    conn = database.connection()
    if conn.in_transaction:
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
