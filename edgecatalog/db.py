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
from .engines import current as current_engine
from .listing import scan_cache
from .models import MODELS, database

PRAGMAS = current_engine().pragmas


def migrations_dir() -> Path:
    """The numbered migration files, shipped inside the package as edgecatalog.migrations."""
    spec = importlib.util.find_spec("edgecatalog.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
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
    """Apply pending migrations in order, then ``settle``; returns the names applied. Every
    command that writes starts here."""
    with db.connection_context():
        applied = runner(db).up()
        settle(db)
        return applied


def settle(db: SqliteDatabase = database) -> None:
    """Decide a transaction that a killed process left half-committed.

    A writer killed inside COMMIT (its WAL frames written and flushed, the shared WAL index not
    yet updated) leaves a transaction that is neither in nor out. While another process keeps
    the database open (a read-only reader, a backup), this one reads the database without it;
    once every connection has closed, the next to open recovers the WAL and the transaction
    reappears. Start-up decides from what is absent (files no row points at are removed), so it
    must not read that undecided state. One real write appends after the last transaction this
    process sees, over the half-written frames: what is absent now stays absent. user_version
    set to its own value is the smallest such write (one page).
    """
    with write_tx(db):
        (version,) = db.execute_sql("PRAGMA user_version").fetchone()
        db.execute_sql(f"PRAGMA user_version = {int(version)}")


def pending_migrations(db: SqliteDatabase = database) -> list[str]:
    with db.connection_context():
        return [m.name for m in runner(db).status() if m.applied is None and m.path]


def write_tx(db: SqliteDatabase = database):
    """A short write transaction that takes the write lock up front."""
    return db.atomic("IMMEDIATE")


__all__ = [
    "MODELS",
    "PRAGMAS",
    "database",
    "init_database",
    "migrate",
    "open_for",
    "settle",
    "write_tx",
]
