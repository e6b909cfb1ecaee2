"""Opening the catalog database, and the migration runner.

``open_for`` binds ``models.database`` to the SQLite file under ``data_dir`` (with the SQLite
engine's pragmas) or to the PostgreSQL database of ``[database] url``. Each waitress thread
keeps its own long-lived connection (peewee connections are thread-local), so caches survive
between requests; background work wraps itself in ``connection_context()``. Writes are short
transactions that take the engine's one write lock up front (``write_tx``: ``BEGIN
IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), so two writers never interleave a
check with a write and queue instead of failing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from peewee import Database, OperationalError, SqliteDatabase
from playhouse.migrations import Runner

from .config import ConfigError, Settings, read_secret_file
from .engines import current as current_engine
from .engines.sqlite import ENGINE as SQLITE
from .listing import scan_cache
from .models import MODELS, CatalogDatabase, database

PRAGMAS = SQLITE.pragmas


def migrations_dir() -> Path:
    """The numbered migration files, shipped inside the package as edgecatalog.migrations."""
    spec = importlib.util.find_spec("edgecatalog.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "migrations"  # pragma: no cover


def bind(target: Database) -> CatalogDatabase:
    """Make ``target`` the catalog's database (``models.database``), closing this thread's
    connection to the one bound before."""
    if database.obj is not None and not database.obj.is_closed():
        database.obj.close()
    database.initialize(target)
    scan_cache.forget()  # carried search totals belong to the database that was open
    return database


def init_database(path: Path, **options: Any) -> CatalogDatabase:
    """The SQLite file at ``path`` as the catalog's database, with the service's pragmas
    (``options`` go to ``SqliteDatabase``, e.g. a read-only URI's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"pragmas": PRAGMAS, "check_same_thread": False, "timeout": 15, **options}
    return bind(SqliteDatabase(str(path), **settings))


def open_for(settings: Settings) -> CatalogDatabase:
    """The catalog of ``settings``: the SQLite file under ``data_dir``, or the PostgreSQL
    database of ``[database] url``. Nothing connects yet."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    if not settings["database.url"]:
        return init_database(settings.db_path)
    from .engines import postgres

    password = None
    if settings["database.password_file"]:
        password = read_secret_file(settings["database.password_file"], "database.password_file")
    return bind(postgres.open_database(settings["database.url"], password))


def runner(db: Database = database) -> Runner:
    return Runner(getattr(db, "obj", db), directory=str(migrations_dir()))


def migrate(db: Database = database) -> list[str]:
    """Apply pending migrations in order, then ``settle``; returns the names applied. Every
    command that writes starts here. An unreachable database is a one-line ``ConfigError``
    naming where it was looked for."""
    connect(db)
    with db.connection_context():
        applied = runner(db).up()
        settle(db)
        return applied


def settle(db: Database = database) -> None:
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
    current_engine().settle(db, write_tx)


def pending_migrations(db: Database = database) -> list[str]:
    with db.connection_context():
        return [m.name for m in runner(db).status() if m.applied is None and m.path]


def write_tx(db: Database = database):
    """A short write transaction that takes the write lock up front: one writer at a time on
    either engine, so a check and the write it decides are never interleaved with another's."""
    return current_engine().write_tx(db)


def connect(db: Database = database) -> None:
    """Open this thread's connection now, or fail with one line naming the database."""
    try:
        db.connect(reuse_if_open=True)
    except OperationalError as exc:
        where = database.location or "the database"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open the catalog database {where}: {reason}") from None


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
