"""Opening the catalog database, its pragmas, and the migration runner.

One deferred ``SqliteDatabase`` (``models.database``) is initialised per process. Each waitress
thread keeps its own long-lived connection (peewee connections are thread-local), so the page
cache survives between requests; background work wraps itself in ``connection_context()``.
Writes are short ``BEGIN IMMEDIATE`` transactions (``write_tx``) so two writers never deadlock
upgrading read locks, and ``busy_timeout`` makes them queue instead of failing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from peewee import SqliteDatabase
from playhouse.migrations import Runner

from .config import Settings
from . import scan_cache
from .models import MODELS, database

PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer, and vice versa
    # FULL: a device can lose power; a 2xx upload must survive it, not just a process crash.
    "synchronous": "full",
    "foreign_keys": 1,
    "busy_timeout": 15_000,
    # 2 MB per connection (one per waitress thread): the 80 MB RSS budget is per service. The
    # list reads a few pages per request since migration 0004 (counts from small tables, pages
    # by index walks); 16, 4 and 2 MB measured the same latency at 1M images.
    "cache_size": -2_000,
    "temp_store": "memory",
}


def migrations_dir() -> Path:
    """The numbered migration files, shipped inside the package as edgecatalog.migrations."""
    spec = importlib.util.find_spec("edgecatalog.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent.parent / "migrations"  # pragma: no cover


def init_database(path: Path) -> SqliteDatabase:
    path.parent.mkdir(parents=True, exist_ok=True)
    database.init(str(path), pragmas=PRAGMAS, check_same_thread=False, timeout=15)
    scan_cache.forget()  # carried search totals belong to the database that was open
    return database


def open_for(settings: Settings) -> SqliteDatabase:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    return init_database(settings.db_path)


def runner(db: SqliteDatabase = database) -> Runner:
    return Runner(db, directory=str(migrations_dir()))


def migrate(db: SqliteDatabase = database) -> list[str]:
    """Apply pending migrations in order; returns the names applied."""
    with db.connection_context():
        return runner(db).up()


def pending_migrations(db: SqliteDatabase = database) -> list[str]:
    with db.connection_context():
        return [m.name for m in runner(db).status() if m.applied is None and m.path]


def write_tx(db: SqliteDatabase = database):
    """A short write transaction that takes the write lock up front."""
    return db.atomic("IMMEDIATE")


__all__ = ["MODELS", "PRAGMAS", "database", "init_database", "migrate", "open_for", "write_tx"]
