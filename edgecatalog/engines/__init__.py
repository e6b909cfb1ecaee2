"""What differs between database engines, behind one small interface.

Everything else writes portable SQL (``?`` placeholders, standard joins and subqueries,
``INSERT ... ON CONFLICT (key) DO UPDATE``) and asks the engine of the open database for the
rest: the pragmas a connection starts with; the text of the triggers that keep a declared
count table (``listing.counts``), its table, its backfill and the grouped statement a bulk
chunk applies instead; the substring-search index (its structure, the triggers that keep it
and the statement that narrows a term to candidates); the same four for the zones' bounds
(``listing.zones``); the bulk-load gate; the write lock; a read snapshot; a case-insensitive
``LIKE``; a list of values bound as one value; a condition or sort key kept out of the
planner's index choice; and the fingerprint that says whether the database changed.
``engines.sqlite`` (the embedded default) and ``engines.postgres`` implement it; ``current()``
picks the one of the bound database, which it reads from ``models`` at call time (the only
import of the package's models here). No Flask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .text import like_pattern

if TYPE_CHECKING:  # the declaration's types only: listing imports this package at runtime
    from ..listing.counts import CountTable


class Engine(Protocol):
    """The engine-specific pieces; ``engines.sqlite.ENGINE`` is the reference."""

    name: str
    # Whether ``fingerprint`` can tell that nothing changed (results may be kept until then).
    remembers: bool
    # Applied to every new connection of the service.
    pragmas: dict[str, Any]
    # Holds a row while a bulk chunk applies its counts grouped; the INSERT triggers wait on it.
    gate_table: str

    def count_table_ddl(self, table: CountTable) -> list[str]: ...

    def count_triggers(self, table: CountTable) -> dict[str, list[str]]:
        """Trigger name -> the statements that create it, keeping ``table`` in the writing
        transaction; its INSERT triggers do nothing while the gate holds a row."""
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

    def search_index_triggers(self) -> dict[str, list[str]]: ...

    def search_index_backfill(self) -> list[str]: ...

    # -- class sets (``class_sets``): kept by triggers on annotation ----------------------
    def class_set_triggers(self) -> dict[str, list[str]]: ...

    def class_set_backfill(self) -> list[str]: ...

    def search_index_grouped(self) -> list[str]: ...

    # -- confidence bits (``confidence_bits``): kept by triggers on annotation ---------
    def confidence_bucket(self, column: str) -> str:
        """``confidence_bits.bucket`` of ``column`` in SQL, on the same doubles."""
        ...

    def confidence_bit(self, column: str) -> str:
        """The bit of that bucket, as a 64-bit integer."""
        ...

    def stored_confidence(self, value: float) -> float:
        """A confidence as the engine stores it (a bound is compared as one)."""
        ...

    def confidence_triggers(self) -> dict[str, list[str]]: ...

    def confidence_backfill(self) -> list[str]: ...

    # -- zones (``listing.zones``): bounds of the sort keys per run of ids ---------------
    def zone_ddl(self) -> list[str]: ...

    def zone_triggers(self) -> dict[str, list[str]]:
        """Trigger name -> its statements: widen a zone's bounds on insert (waiting on the
        gate) and when a bounded column changes."""
        ...

    def zone_backfill(self) -> list[str]: ...

    def zone_grouped(self) -> list[str]:
        """The gated INSERT trigger's work for the new images with ids in [?1, ?2]."""
        ...

    def search_candidates(self, term: str, limit: int) -> tuple[str, tuple] | None:
        """A subquery of at most ``limit`` image ids that include every filename containing
        ``term`` (a superset the exact match rechecks); None when the index cannot narrow it."""
        ...

    def no_index(self, condition: str) -> str:
        """``condition`` (``t.column = ?``) kept out of the planner's choice of index, where
        the engine would otherwise pick a 3-4 valued column's index over a batch's."""
        ...

    def sort_key_unindexed(self, column: str, text: bool) -> str:
        """``column`` as an ORDER BY key no index gives (the same order): the engine then
        takes the filters' rows through their own index and sorts them, rather than walking
        the sort key's index past rows the filters reject."""
        ...

    def insert_id(self, cursor: Any, sql: str, row: tuple) -> int:
        """Run one INSERT of ``row`` and return the new row's id."""
        ...

    def byte_length(self, column: str) -> str:
        """The length of a text column in UTF-8 bytes."""
        ...

    def like(self, column: str) -> str:
        """A case-insensitive ``LIKE`` of ``column`` with one bound pattern, backslash its
        escape character."""
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

    def scan_whole(self, table: str) -> str:
        """``table`` in a FROM clause, read in one pass rather than through an index."""
        ...

    def job_lock(self, database: Any, name: str, lock_dir: Path, wait: float) -> Any:
        """A context manager yielding whether this process now holds the job ``name`` alone
        among every process on the catalog (waiting at most ``wait`` seconds for it)."""
        ...

    def at_shutdown(self, database: Any) -> None:
        """What the service does to its database as it stops."""
        ...

    def relax_durability(self, database: Any) -> None:
        """On this connection only: commits need not wait for the disk (what it records can
        be redone), the database staying consistent."""
        ...

    def write_tx(self, database: Any) -> Any:
        """A write transaction (a context manager) holding the catalog's one write lock."""
        ...

    def read_snapshot(self, database: Any) -> Any:
        """A read-only transaction (a context manager) whose statements all see the catalog
        as it was at its first read: a multi-statement read that must agree with itself."""
        ...

    def settle(self, database: Any, write_tx: Any) -> None:
        """Decide what a killed writer may have left undecided (``db.settle``)."""
        ...

    def fingerprint(self, connection: Any) -> tuple:
        """Changes whenever the database changed: committed by anyone, or written (committed
        or not) on ``connection``."""
        ...


__all__ = ["Engine", "current", "engine_of", "install_counts", "like_pattern"]


def current() -> Engine:
    """The engine of the catalog's open database (``models.database``). Asked several times a
    request: the models module and each database class's engine are looked up once."""
    global _catalog
    if _catalog is None:
        from ..models import database

        _catalog = database
    return engine_of(_catalog)


def engine_of(db: Any) -> Engine:
    """The engine of a peewee database (or of the database a proxy is bound to)."""
    kind = type(getattr(db, "obj", db))
    found = _by_class.get(kind)
    if found is None:
        from peewee import PostgresqlDatabase

        if issubclass(kind, PostgresqlDatabase):
            from .postgres import ENGINE as found
        else:
            from .sqlite import ENGINE as found
        _by_class[kind] = found
    return found


_catalog: Any = None  # models.database, once imported
_by_class: dict[type, Engine] = {}


def install_counts(
    execute: Callable[[str], Any],
    tables: tuple[CountTable, ...],
    *,
    previous: tuple[CountTable, ...] = (),
    old_triggers: Iterable[str] = (),
    engine: Engine | None = None,
) -> None:
    """Bring the count tables from ``previous`` (what the last migration installed) to
    ``tables``: the triggers of both dropped, a table whose keys changed rebuilt and filled
    from the rows, every trigger rendered again. Run inside the migration's transaction."""
    engine = engine or current()
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
        for statements in engine.count_triggers(table).values():
            for sql in statements:
                execute(sql)
