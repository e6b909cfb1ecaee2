"""Captures that could not be indexed: recorded in ``RejectedFile`` with the reason, logged,
listed by ``edgecatalog rejected``, and retried once the file changes (new size or mtime).

Paths are absolute, as found on disk; a file that is later indexed loses its record, and one
that is gone from the disk loses it at the watcher's next reconciliation (``prune_missing``),
so the table holds what is still there to fix.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..db import write_tx
from ..models import RejectedFile, database
from ..timeutil import now_us

log = logging.getLogger("edgecatalog.capture")


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: str
    byte_size: int
    mtime_ns: int


def record_rejected(rej: Rejection) -> None:
    """Upsert the record (the caller may already be in a transaction: this nests)."""
    log.warning("rejected %s: %s", rej.path, rej.reason)
    with write_tx():
        (
            RejectedFile.insert(
                path=rej.path,
                reason=rej.reason[:2000],
                byte_size=rej.byte_size,
                mtime_ns=rej.mtime_ns,
                created_at=now_us(),
            )
            .on_conflict(
                conflict_target=[RejectedFile.path],
                preserve=[
                    RejectedFile.reason,
                    RejectedFile.byte_size,
                    RejectedFile.mtime_ns,
                    RejectedFile.created_at,
                ],
            )
            .execute()
        )


def clear_rejected(paths: list[str]) -> None:
    if paths:
        RejectedFile.delete().where(RejectedFile.path.in_(paths)).execute()


def rejected_among(paths: list[str]) -> dict[str, tuple[int, int]]:
    """{path: (byte_size, mtime_ns)} of the records among these paths (bounded IN lists)."""
    found: dict[str, tuple[int, int]] = {}
    if not database.execute_sql("SELECT 1 FROM rejected_file LIMIT 1").fetchone():
        return found  # the usual case: nothing rejected at all, so nothing to look up
    for i in range(0, len(paths), 500):
        chunk = paths[i : i + 500]
        # Plain SQL: a reconciliation pass asks this for every file it lists.
        rows = database.execute_sql(
            "SELECT path, byte_size, mtime_ns FROM rejected_file WHERE path IN "
            f"({', '.join('?' * len(chunk))})",
            chunk,
        )
        found.update({path: (size, mtime) for path, size, mtime in rows})
    return found


def list_rejected(limit: int | None = None) -> list[RejectedFile]:
    query = RejectedFile.select().order_by(RejectedFile.created_at.desc(), RejectedFile.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(query)


def prune_missing(batch: int = 500) -> int:
    """Forget the records of files no longer on disk; returns how many went."""
    gone: list[str] = []
    last = ""
    while True:  # keyset pages: bounded memory however many records there are
        paths = [
            p
            for (p,) in database.execute_sql(
                "SELECT path FROM rejected_file WHERE path > ? ORDER BY path LIMIT ?", (last, batch)
            )
        ]
        if not paths:
            break
        gone += [p for p in paths if not os.path.lexists(p)]
        last = paths[-1]
    for i in range(0, len(gone), batch):
        with write_tx():
            clear_rejected(gone[i : i + batch])
    return len(gone)
