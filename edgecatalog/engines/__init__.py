"""What differs between database engines, behind one small interface.

Everything else writes portable SQL (``?`` placeholders, standard joins and subqueries,
``INSERT ... ON CONFLICT (key) DO UPDATE``) and asks the engine of the open database for the
rest: the pragmas a connection starts with; the text of the triggers that keep a declared
count table (``listing.counts``), its table, its backfill and the grouped statement a bulk
chunk applies instead; the substring-search index (its structure, the triggers that keep it
and the statement that narrows a term to candidates); the bulk-load gate; a list of ids bound
as one value; and the fingerprint that says whether the database changed. SQLite
(``engines.sqlite``) is the one implementation; another engine is one module with the same
names. No Flask, no models: an engine renders text and reads a connection it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the declaration's types only: listing imports this package at runtime
    from ..listing.counts import CountTable


class Engine(Protocol):
    """The engine-specific pieces; ``engines.sqlite.ENGINE`` is the reference."""

    name: str
    # Applied to every new connection of the service.
    pragmas: dict[str, Any]
    # Holds a row while a bulk chunk applies its counts grouped; the INSERT triggers wait on it.
    gate_table: str

    def count_table_ddl(self, table: CountTable) -> list[str]: ...

    def count_triggers(self, table: CountTable) -> dict[str, str]:
        """Trigger name -> its CREATE statement, keeping ``table`` in the writing transaction;
        its INSERT triggers do nothing while the gate holds a row."""
        ...

    def drop_trigger(self, name: str) -> str: ...

    def backfill(self, table: CountTable) -> list[str]:
        """Statements that rebuild ``table`` from the rows."""
        ...

    def grouped_counts(self, table: CountTable) -> str:
        """What the gated INSERT triggers would have done for the new images with ids in
        [?1, ?2] and their annotations, as one grouped statement."""
        ...

    def search_index_ddl(self) -> list[str]: ...

    def search_index_triggers(self) -> dict[str, str]: ...

    def search_index_backfill(self) -> list[str]: ...

    def search_index_grouped(self) -> str: ...

    def search_candidates(self, term: str, limit: int) -> tuple[str, tuple] | None:
        """A subquery of at most ``limit`` image ids that include every filename containing
        ``term`` (a superset the exact match rechecks); None when the index cannot narrow it."""
        ...

    def gate_ready(self, database: Any) -> bool:
        """Whether every INSERT trigger of the declared counts waits on the gate."""
        ...

    def values_table(self, values: list, alias: str) -> tuple[str, tuple]:
        """A table expression named ``alias`` with the given values (ids or texts) as
        ``value`` and their position as ``key``: any number in one bound value, so the
        statement text is the same whatever the count."""
        ...

    def json_ids(self, column: str) -> str:
        """An aggregate of ``column`` as one JSON array text."""
        ...

    def fingerprint(self, connection: Any) -> tuple:
        """Changes whenever the database changed: committed by anyone, or written (committed
        or not) on ``connection``."""
        ...


def current() -> Engine:
    """The engine of the open database (SQLite until another engine module exists)."""
    from . import sqlite

    return sqlite.ENGINE


def install_counts(
    execute: Callable[[str], Any],
    tables: tuple[CountTable, ...],
    *,
    previous: tuple[CountTable, ...] = (),
    old_triggers: Iterable[str] = (),
) -> None:
    """Bring the count tables from ``previous`` (what the last migration installed) to
    ``tables``: the triggers of both dropped, a table whose keys changed rebuilt and filled
    from the rows, every trigger rendered again. Run inside the migration's transaction."""
    engine = current()
    before = {t.name: t for t in previous}
    for name in old_triggers:
        execute(engine.drop_trigger(name))
    for table in previous:
        for name in engine.count_triggers(table):
            execute(engine.drop_trigger(name))
    for table in previous:
        if table not in tables:
            execute(f"DROP TABLE IF EXISTS {table.name}")
    for table in tables:
        if before.get(table.name) != table:
            for sql in engine.count_table_ddl(table):
                execute(sql)
            for sql in engine.backfill(table):
                execute(sql)
    for table in tables:
        for sql in engine.count_triggers(table).values():
            execute(sql)
