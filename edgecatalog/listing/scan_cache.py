"""Results of list statements that scan: remembered per database connection until the
database changes; and a search's matches per zone, carried forward across inserts.

Every other total is read from trigger-kept count tables in a few pages; an exact substring
count cannot be: it reads the whole filename index (~100 ms at a million images). A client
paging through one search, or a screen refreshing it, asks the same statement again and again
while nothing was written, so the answer is kept, keyed by the statement and its arguments.

Never stale: an entry is valid only while the engine's fingerprint of the connection (SQLite:
``PRAGMA data_version``, which changes when any other connection commits, and the connection's
own ``total_changes``, which changes with its writes, committed or not) is what it was when
the entry was computed. An engine without such a fingerprint (PostgreSQL: ``remembers`` is
false) gets nothing remembered; only the carried counts below apply there.
Nothing is remembered inside a transaction. Per connection, so no lock: each waitress thread
has its own long-lived connection. Bounded to ``MAX_ENTRIES`` statements per connection.

A device writes an image every few seconds, which would empty that cache before a search is
asked twice. So a term's matches, counted per zone (``listing.zones``: the zones that hold
them are all a search page visits, ``listing.zone_page``; their sum is the total of a search
alone), are carried forward instead (``search_zones``, shared by all threads, at most
``MAX_ENTRIES`` terms): with ``image_name_epoch`` (migration 0007: bumped by every delete or
rename) unchanged and the row count grown by exactly the rows above the old maximum id, the
rows that were there are still there with the same names, and the counts are the old ones plus
the matches among the new rows, counted through the primary key.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

from ..engines import current as engine
from ..models import database
from . import zones

MAX_ENTRIES = 32
_local = threading.local()

# One statement, one snapshot: the state the carried counts are checked against, and the
# term's matches per zone (``listing.zones``), one row per zone that has any (or one row of
# NULLs when none does).
_STATE = (
    "(SELECT n FROM image_name_epoch), (SELECT coalesce(max(id), 0) FROM image), "
    "(SELECT coalesce(sum(n), 0) FROM image_total_count)"
)


def _per_zone(since: bool) -> str:
    above = "t.id > ? AND " if since else ""
    zone = f"t.id >> {zones.ZONE_BITS}"
    return (
        f"SELECT {zone} AS zone, count(*) AS n FROM image t "
        f"WHERE {above}{engine().like('t.filename')} GROUP BY {zone}"
    )


def _full() -> str:
    return f"SELECT s.*, z.zone, z.n FROM (SELECT {_STATE}, 0) s LEFT JOIN ({_per_zone(False)}) z ON 1 = 1"


def _delta() -> str:
    added = "(SELECT count(*) FROM image WHERE id > ?)"
    return (
        f"SELECT s.*, z.zone, z.n FROM (SELECT {_STATE}, {added}) s "
        f"LEFT JOIN ({_per_zone(True)}) z ON 1 = 1"
    )


class Carried(NamedTuple):
    """What a term's count rests on (the name epoch, the largest id, the row count) and its
    matches per zone."""

    epoch: int
    max_id: int
    rows: int
    zones: dict[int, int]

    @property
    def total(self) -> int:
        return sum(self.zones.values())


# (database file, pattern) -> Carried
_carried: dict[tuple[str, str], Carried] = {}
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


def is_carried(pattern: str) -> bool:
    """Whether counts of ``pattern`` are carried (``search_zones`` then reads only new rows)."""
    with _carried_lock:
        return (str(database.location), pattern) in _carried


def search_total(pattern: str) -> int:
    """Images whose filename is LIKE ``pattern``: exact, from the carried counts when they
    still hold, else from a full count (which is then carried)."""
    return search_zones(pattern).total


def search_zones(pattern: str) -> Carried:
    """The images whose filename is LIKE ``pattern``, counted per zone: exact, carried
    forward across inserts (only the rows above the last largest id are counted again), else
    counted in full (the filename index read once) and then carried."""
    key = (str(database.location), pattern)
    with _carried_lock:
        known = _carried.get(key)
    if known is not None:
        rows = database.execute_sql(_delta(), (known.max_id, known.max_id, pattern)).fetchall()
        epoch, max_id, count, added_rows = (int(v) for v in rows[0][:4])
        if epoch == known.epoch and count - known.rows == added_rows:
            merged = dict(known.zones)
            for *_, zone, n in rows:
                if zone is not None:
                    merged[int(zone)] = merged.get(int(zone), 0) + int(n)
            return _carry(key, Carried(epoch, max_id, count, merged))
    rows = database.execute_sql(_full(), (pattern,)).fetchall()
    epoch, max_id, count = (int(v) for v in rows[0][:3])
    found = {int(zone): int(n) for *_, zone, n in rows if zone is not None}
    return _carry(key, Carried(epoch, max_id, count, found))


def _carry(key: tuple[str, str], state: Carried) -> Carried:
    # Rows written by this connection's open transaction could still be rolled back.
    if not _in_transaction(database.connection()):
        with _carried_lock:
            _carried.pop(key, None)
            _carried[key] = state
            while len(_carried) > MAX_ENTRIES:
                _carried.pop(next(iter(_carried)))
    return state


def forget() -> None:
    """Drop every carried total (a new database was opened in this process)."""
    with _carried_lock:
        _carried.clear()
