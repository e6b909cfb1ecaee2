"""The PostgreSQL driver, loaded only by a catalog on PostgreSQL.

peewee imports every database driver it finds when it is itself imported. With the postgres
extra installed, that is psycopg 3 (and with it asyncio, ctypes and its binary build): ~12 MB
of memory in every process, a SQLite service's included, whose budget is 80 MB. So the package
imports peewee first, here, with psycopg hidden from it (``hidden_from_peewee``), and
``engines.postgres`` hands the driver over when it opens a PostgreSQL url (``load``), setting
the names peewee's PostgreSQL adapter reads when a database object is made. No Flask.
"""

from __future__ import annotations

import sys


def hidden_from_peewee() -> None:
    """Import peewee, and the playhouse modules the migrations use (their PostgreSQL extras
    import psycopg for hstore, which the catalog never uses), without letting them import
    psycopg (once; a no-op if peewee is loaded)."""
    if "peewee" in sys.modules or "psycopg" in sys.modules:
        return
    sys.modules["psycopg"] = None  # type: ignore[assignment]  # import psycopg: ImportError
    try:
        import peewee  # noqa: F401
        import playhouse.migrate  # noqa: F401
    finally:
        del sys.modules["psycopg"]


def load() -> None:
    """Give peewee psycopg, as its own import would have (ImportError when not installed)."""
    import peewee
    import psycopg
    from psycopg.pq import TransactionStatus
    from psycopg.types.json import Json, Jsonb

    if peewee.psycopg is None:
        peewee.psycopg = psycopg
        peewee.TransactionStatus = TransactionStatus
        peewee.Json_pg3, peewee.Jsonb_pg3 = Json, Jsonb
