"""The list's counts and search index for a chunk of new images, kept per chunk instead of per row.

Migration 0006 gates the INSERT triggers of 0004/0005 on an empty ``ingest_bulk`` table. A
bulk writer calls ``gated_chunk()`` inside its write transaction: the gate row goes in, the
caller inserts its images (consecutive ids) and their annotations, and on leaving the block
the same changes the triggers would have made are applied in five grouped statements and
the gate row is deleted, all before the transaction commits. The gate is never committed:
readers see counts that agree with the rows at every commit (``tests/test_list_fresh.py``).

Used only when ``gate_ready()`` finds the gated triggers (a tool that re-created the ungated
ones, e.g. a benchmark loader, turns the bulk path back into per-row triggers: slower, never
wrong). No Flask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from ..models import database

GATED_TRIGGERS = ("image_facet_ai", "image_total_ai", "image_fts_ai", "annotation_class_ai")

# What each gated trigger does per row, done for the id range [?1, ?2] of the chunk's new
# images (with their annotations: all new, so a class counts once per image that has it).
GROUPED = (
    (
        "INSERT INTO image_facet_count SELECT batch_id, device_id, annotation_status, split, "
        "sync_state, count(*) FROM image WHERE id BETWEEN ?1 AND ?2 GROUP BY 1, 2, 3, 4, 5 "
        "ON CONFLICT DO UPDATE SET n = n + excluded.n"
    ),
    (
        "INSERT INTO image_total_count SELECT device_id, annotation_status, split, sync_state, "
        "count(*) FROM image WHERE id BETWEEN ?1 AND ?2 GROUP BY 1, 2, 3, 4 "
        "ON CONFLICT DO UPDATE SET n = n + excluded.n"
    ),
    (
        "INSERT INTO image_fts(rowid, filename) SELECT id, filename FROM image "
        "WHERE id BETWEEN ?1 AND ?2"
    ),
    (
        "INSERT INTO image_class_count SELECT class_value, count(DISTINCT image_id) "
        "FROM annotation WHERE image_id BETWEEN ?1 AND ?2 GROUP BY class_value "
        "ON CONFLICT DO UPDATE SET n = n + excluded.n"
    ),
    (
        "INSERT INTO image_class_facet SELECT a.class_value, i.batch_id, i.device_id, "
        "i.annotation_status, i.split, i.sync_state, count(DISTINCT i.id) "
        "FROM annotation a JOIN image i ON i.id = a.image_id WHERE a.image_id BETWEEN ?1 AND ?2 "
        "GROUP BY 1, 2, 3, 4, 5, 6 ON CONFLICT DO UPDATE SET n = n + excluded.n"
    ),
)


def gate_ready() -> bool:
    """Whether every trigger the grouped statements replace waits on the gate."""
    marks = ", ".join("?" * len(GATED_TRIGGERS))
    rows = database.execute_sql(
        f"SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})",
        GATED_TRIGGERS,
    ).fetchall()
    return len(rows) == len(GATED_TRIGGERS) and all("ingest_bulk" in sql for (sql,) in rows)


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
    cursor.execute("INSERT INTO ingest_bulk (id) VALUES (1)")
    ids = IdRange()
    try:
        yield ids
    except BaseException:
        # The caller rolls back anyway; removing the gate too means even a caller that
        # swallowed the error and committed could not leave the triggers switched off.
        # If even that fails, the original error is the one to report.
        with suppress(Exception):
            cursor.execute("DELETE FROM ingest_bulk")
        raise
    if ids.last >= ids.first:
        for sql in GROUPED:
            cursor.execute(sql, (ids.first, ids.last))
    cursor.execute("DELETE FROM ingest_bulk")
