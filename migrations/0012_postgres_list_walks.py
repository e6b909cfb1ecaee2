"""PostgreSQL only: what a list page's walk of the sort index needs at a site's ten million
images (``benchmarks/site_gateway.py``; figures in ``benchmarks/README.md``).

- No parallel query in the catalog role's sessions (``ALTER ROLE CURRENT_USER IN DATABASE``, a
  default any role may set for itself). A page is a ``LIMIT`` walk of the sort index that
  probes each row (a class ``EXISTS``, a project's batches); run in parallel, the workers keep
  walking and probing far past the rows the page needs until the leader stops them: one rare
  class took 168 ms instead of 13 ms at 10M images, and every request pays for starting the
  workers. A count the planner would split over workers costs the same CPU on a gateway whose
  cores already serve other requests.
- ``image_created_at_cover``: ``(created_at, id)`` with the filter columns included. The newest
  images of a site sit in collecting batches that have no project yet, so a project's page
  walks past all of them (200,000 rows at 10M images): index-only, without visiting the table,
  that walk took 54 ms instead of 94 ms, and the key gives the full ``created_at, id`` order
  (no incremental sort). ~61 bytes per image. Built by a plain ``CREATE INDEX``: writes wait
  for it once (~40 s at 10M images).
"""

from __future__ import annotations

from edgecatalog.engines import engine_of

STATEMENTS = (
    (
        # No '%' here: the engine's cursor would double it (format() would read '%%').
        "DO $$ BEGIN EXECUTE 'ALTER ROLE CURRENT_USER IN DATABASE ' "
        "|| quote_ident(current_database()) || ' SET max_parallel_workers_per_gather = 0'; "
        "END $$"
    ),
    (
        "CREATE INDEX IF NOT EXISTS image_created_at_cover ON image (created_at, id) "
        "INCLUDE (batch_id, device_id, annotation_status, split, sync_state)"
    ),
)


def up(migrator, db):
    if engine_of(db).name != "postgres":
        return
    for sql in STATEMENTS:
        db.execute_sql(sql)
