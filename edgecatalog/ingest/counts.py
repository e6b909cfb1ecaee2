"""The list's counts and search index for a chunk of new images, kept per chunk instead of per row.

The INSERT triggers of the declared count tables (``listing.counts``) and of the search index
wait on the engine's bulk-load gate. A bulk writer calls ``gated_chunk()`` inside its write
transaction: the gate row goes in, the caller inserts its images (consecutive ids) and their
annotations, and on leaving the block the same changes the triggers would have made are
applied in one grouped statement per count table (rendered by the engine from the same
declaration), one for the search index and one for the zones' bounds, and the gate row is
deleted, all before the transaction commits. The gate is never committed: readers see counts that agree with the rows
at every commit (``tests/test_list_fresh.py``).

Used only when ``gate_ready()`` finds the gated triggers (a tool that re-created ungated ones,
e.g. a benchmark loader, turns the bulk path back into per-row triggers: slower, never wrong).
No Flask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from ..engines import current as engine
from ..listing import counts
from ..models import database


def grouped() -> tuple[str, ...]:
    """What each gated trigger does per row, for the id range [?1, ?2] of a chunk's new images
    (with their annotations: all new, so a class counts once per image that has it); read
    from the declaration when the chunk ends."""
    return (
        *(engine().grouped_counts(table) for table in counts.COUNT_TABLES),
        *engine().search_index_grouped(),
        *engine().zone_grouped(),
    )


def gate_ready() -> bool:
    """Whether every trigger the grouped statements replace waits on the gate."""
    return engine().gate_ready(database)


class IdRange:
    """The ids of the chunk's new images, set by the caller inside ``gated_chunk``."""

    first: int = 0
    last: int = -1  # empty until set


@contextmanager
def gated_chunk() -> Iterator[IdRange]:
    """Inside the caller's write transaction: the gated triggers are off in the block, and
    their work for ``ids`` is done, grouped, when it ends normally. On an exception nothing
    is applied and the caller's transaction (or savepoint) must roll back, gate row and all.
    """
    cursor = database.cursor()
    gate = engine().gate_table
    cursor.execute(f"INSERT INTO {gate} (id) VALUES (1)")
    ids = IdRange()
    try:
        yield ids
    except BaseException:
        # The caller rolls back anyway; removing the gate too means even a caller that
        # swallowed the error and committed could not leave the triggers switched off.
        # If even that fails, the original error is the one to report.
        with suppress(Exception):
            cursor.execute(f"DELETE FROM {gate}")
        raise
    if ids.last >= ids.first:
        for sql in grouped():
            cursor.execute(sql, (ids.first, ids.last))
    cursor.execute(f"DELETE FROM {gate}")
