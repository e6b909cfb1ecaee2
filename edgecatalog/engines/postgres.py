"""PostgreSQL (15 or newer, through psycopg 3): the site gateway's engine.

Count tables are kept by row triggers whose bodies are PL/pgSQL functions. The image-side
ones are ``AFTER`` row triggers (they only add or subtract one to a key). The annotation-side
ones are ``BEFORE`` row triggers, because they ask "is this the image's first (or last)
annotation of the class?": a ``BEFORE`` row trigger sees the rows earlier in the same
statement, as SQLite's triggers do, where an ``AFTER`` one would see the whole statement and
count a class twice (or not at all) for a statement that writes two of its annotations.
A trigger's ``WHEN`` cannot hold a subquery here, so the gate and the first/last checks are
``IF``s in the function.

The substring index is a ``pg_trgm`` GIN index on ``image.filename``, kept by PostgreSQL
itself: no triggers, and an ``ILIKE`` it answers exactly. Statements are the project's
portable SQL with ``?`` placeholders; the cursor of ``CatalogPostgres`` turns each into
psycopg's ``%s`` (``_placeholders``).
No Flask, no models.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

from peewee import PostgresqlDatabase

from .. import pgdriver
from ..config import ConfigError
from ..listing import zones
from ..listing.counts import CountTable
from .text import (
    backfill,
    class_annotations,
    cols,
    confidence_bits,
    count_columns,
    count_update,
    grouped_select,
    like_pattern,
    zone_select,
    zone_values,
    zone_widen,
)

GATE_TABLE = "ingest_bulk"
# The advisory lock every write transaction holds (any constant: the catalog's own namespace).
WRITE_LOCK = 0x65630001
# Indexes PostgreSQL has and the models do not declare (a GIN index, a covering index): the
# schema test compares the rest with the models.
OWN_INDEXES = ("image_filename_trgm", "image_created_at_cover")


def _changed(names: tuple[str, ...]) -> str:
    return " OR ".join(f"OLD.{n} IS DISTINCT FROM NEW.{n}" for n in names)


def _key_match(names: tuple[str, ...], row: str, table: str) -> str:
    return " AND ".join(f"{table}.{n} = {row}.{n}" for n in names)


def _placeholders(sql: str) -> str:
    """The project's SQL for psycopg: ``?`` outside quoted text as ``%s``, and a literal ``%``
    (a modulo, a pattern in a literal) doubled. Peewee's own SQL (it has ``%s`` placeholders
    and no literal ``%``) keeps its ``%s`` and has any ``?`` of an embedded fragment turned."""
    ours = "%s" not in sql
    if "?" not in sql and not (ours and "%" in sql):
        return sql
    out, quote = [], ""
    for char in sql:
        if char == "%" and ours:
            out.append("%%")
            continue
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append(char)
    return "".join(out)


class _Cursor:
    """A psycopg cursor that takes ``?`` placeholders (peewee's own SQL has none)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Any = None) -> _Cursor:
        self._cursor.execute(_placeholders(sql), params)
        return self

    def executemany(self, sql: str, rows: Any) -> _Cursor:
        self._cursor.executemany(_placeholders(sql), rows)
        return self

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class CatalogPostgres(PostgresqlDatabase):
    """Peewee's PostgreSQL database, taking the project's ``?`` placeholders too (through
    ``execute_sql`` and a bare ``cursor()`` alike)."""

    def cursor(self, named_cursor: Any = None) -> Any:
        return _Cursor(super().cursor())


def open_database(url: str, password: str | None = None) -> CatalogPostgres:
    """A PostgreSQL catalog database for ``url`` (postgresql://user[:password]@host:port/db,
    query parameters such as sslmode passed on); ``password`` from a file wins. Nothing
    connects yet. psycopg 3 missing is a ``ConfigError`` saying how to install it."""
    try:
        pgdriver.load()
    except ImportError:
        raise ConfigError(
            "database.url: PostgreSQL needs psycopg: pip install 'edgecatalog[postgres]'"
        ) from None
    parts = urlsplit(url)
    params: dict[str, Any] = dict(parse_qsl(parts.query))
    params.setdefault("connect_timeout", 5)
    params.setdefault("application_name", "edgecatalog")
    return CatalogPostgres(
        unquote(parts.path.lstrip("/")),
        user=unquote(parts.username or "") or None,
        password=password if password is not None else unquote(parts.password or "") or None,
        host=parts.hostname,
        port=parts.port or 5432,
        prefer_psycopg3=True,
        **params,
    )


def _key(name: str) -> int:
    """A job's advisory lock key: the catalog's namespace in the high half, the name's CRC in
    the low one (never the write lock's)."""
    return (0x6563 << 32) | zlib.crc32(name.encode())


def _function(name: str, body: str, returns: str = "NULL") -> str:
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {body} RETURN {returns}; END $$"
    )


class PostgresEngine:
    name = "postgres"
    remembers = False  # no cheap fingerprint: scan_cache keeps nothing between statements
    gate_table = GATE_TABLE
    pragmas: ClassVar[dict[str, Any]] = {}

    # -- count tables -------------------------------------------------------------------------

    def count_table_ddl(self, table: CountTable) -> list[str]:
        columns = ([("class_value", "TEXT")] if table.per_class else []) + [
            (k.name, "BIGINT" if k.type == "INTEGER" else k.type) for k in table.keys
        ]
        defs = ", ".join(f"{name} {type_} NOT NULL" for name, type_ in columns)
        return [
            f"DROP TABLE IF EXISTS {table.name}",
            (
                f"CREATE TABLE {table.name} ({defs}, {count_columns(table, big=True)}, "
                f"PRIMARY KEY ({cols(table.columns)}))"
            ),
        ]

    def _add(self, table: CountTable, select: str, n: str, annotations: str | None = None) -> str:
        return (
            f"INSERT INTO {table.name} AS c {select} "
            f"ON CONFLICT ({cols(table.columns)}) DO UPDATE SET "
            + count_update(table, n, annotations, "c.")
        )

    def count_triggers(self, table: CountTable) -> dict[str, list[str]]:
        """Trigger name -> its statements: the function, then the trigger."""
        t, keys = table.name, table.key_names
        gate = f"NOT EXISTS (SELECT 1 FROM {GATE_TABLE})"
        out: dict[str, list[str]] = {}

        def trigger(name: str, when: str, on: str, body: str, condition: str = "") -> None:
            returns = (
                "NEW"
                if when.startswith("BEFORE INSERT") or "BEFORE UPDATE" in when
                else ("OLD" if when.startswith("BEFORE DELETE") else "NULL")
            )
            where = f" WHEN ({condition})" if condition else ""
            out[name] = [
                _function(name, body, returns),
                (
                    f"CREATE TRIGGER {name} {when} ON {on} FOR EACH ROW{where} "
                    f"EXECUTE FUNCTION {name}()"
                ),
            ]

        if not table.per_class:
            add = self._add(table, f"VALUES ({cols(keys, 'NEW.')}, 1)", "1") + ";"
            sub = f"UPDATE {t} SET n = n - 1 WHERE {_key_match(keys, 'OLD', t)};"
            trigger(f"{t}_ai", "AFTER INSERT", "image", f"IF {gate} THEN {add} END IF;")
            trigger(f"{t}_ad", "AFTER DELETE", "image", sub)
            trigger(
                f"{t}_au",
                f"AFTER UPDATE OF {cols(table.update_of)}",
                "image",
                f"{sub} {add}",
                _changed(keys),
            )
            return out
        image_keys = f", {cols(keys)}" if keys else ""
        first = (
            "NOT EXISTS (SELECT 1 FROM annotation a WHERE a.class_value = NEW.class_value "
            "AND a.image_id = NEW.image_id AND a.id <> NEW.id)"
        )
        gone = (
            "NOT EXISTS (SELECT 1 FROM annotation a WHERE a.class_value = OLD.class_value "
            "AND a.image_id = OLD.image_id AND a.id <> OLD.id)"
        )
        # With ``annotations`` every annotation counts itself (see engines.sqlite).
        counted = table.annotations
        if counted:
            ann_add = self._add(
                table,
                f"SELECT NEW.class_value{image_keys}, CASE WHEN {first} THEN 1 ELSE 0 END, 1 "
                "FROM image WHERE id = NEW.image_id",
                "excluded.n",
                "1",
            )
        else:
            ann_add = self._add(
                table,
                f"SELECT NEW.class_value{image_keys}, 1 FROM image WHERE id = NEW.image_id",
                "1",
            )
        ann_add += ";"
        if keys:
            of_image = f"({cols(keys, t + '.')}) = (SELECT {cols(keys)} FROM image WHERE id = OLD.image_id)"
        else:
            of_image = "EXISTS (SELECT 1 FROM image WHERE id = OLD.image_id)"
        less = f"n = n - CASE WHEN {gone} THEN 1 ELSE 0 END, annotations = annotations - 1"
        ann_sub = (
            f"UPDATE {t} SET {less if counted else 'n = n - 1'} "
            f"WHERE {t}.class_value = OLD.class_value AND {of_image};"
        )
        classes_of_old = (
            f"{t}.class_value IN (SELECT class_value FROM annotation WHERE image_id = OLD.id)"
        )
        img_less = "n = n - 1" + (
            f", annotations = annotations - {class_annotations(t, 'OLD.id')}" if counted else ""
        )
        img_sub = (
            f"UPDATE {t} SET {img_less} WHERE "
            + " AND ".join([_key_match(keys, "OLD", t)] * bool(keys) + [classes_of_old])
            + ";"
        )
        moved = "OLD.class_value IS DISTINCT FROM NEW.class_value OR OLD.image_id IS DISTINCT FROM NEW.image_id"
        if counted:
            insert, delete = f"IF {gate} THEN {ann_add} END IF;", ann_sub
            update = f"{ann_sub} {ann_add}"
        else:
            insert = f"IF {gate} AND {first} THEN {ann_add} END IF;"
            delete = f"IF {gone} THEN {ann_sub} END IF;"
            update = f"IF {gone} THEN {ann_sub} END IF; IF {first} THEN {ann_add} END IF;"
        trigger(f"{t}_ann_bi", "BEFORE INSERT", "annotation", insert)
        trigger(f"{t}_ann_bd", "BEFORE DELETE", "annotation", delete)
        # Before the row changes: the old class may lose its image, the new one gain it.
        trigger(
            f"{t}_ann_bu", "BEFORE UPDATE OF class_value, image_id", "annotation", update, moved
        )
        trigger(f"{t}_img_bd", "BEFORE DELETE", "image", img_sub)
        if keys:
            if counted:
                img_add = self._add(
                    table,
                    f"SELECT class_value, {cols(keys, 'NEW.')}, 1, count(*) FROM annotation "
                    "WHERE image_id = NEW.id GROUP BY class_value",
                    "excluded.n",
                    "excluded.annotations",
                )
            else:
                img_add = self._add(
                    table,
                    f"SELECT DISTINCT class_value, {cols(keys, 'NEW.')}, 1 FROM annotation "
                    "WHERE image_id = NEW.id",
                    "1",
                )
            trigger(
                f"{t}_img_au",
                f"AFTER UPDATE OF {cols(table.update_of)}",
                "image",
                f"{img_sub} {img_add};",
                _changed(keys),
            )
        return out

    def drop_trigger(self, name: str) -> str:
        # The function goes with its trigger (CASCADE drops the trigger on its table).
        return f"DROP FUNCTION IF EXISTS {name}() CASCADE"

    def backfill(self, table: CountTable) -> list[str]:
        return backfill(table)

    def grouped_counts(self, table: CountTable) -> str:
        return self._add(
            table,
            grouped_select(table, "{id} BETWEEN ? AND ?"),
            "excluded.n",
            "excluded.annotations",
        )

    # -- substring search ---------------------------------------------------------------------

    def search_index_ddl(self) -> list[str]:
        return [
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            (
                "CREATE INDEX IF NOT EXISTS image_filename_trgm ON image "
                "USING gin (filename gin_trgm_ops)"
            ),
        ]

    def search_index_triggers(self) -> dict[str, list[str]]:
        return {}  # the GIN index is kept by PostgreSQL

    # -- class sets -------------------------------------------------------------------------

    def class_set_triggers(self) -> dict[str, list[str]]:
        # One trigger, named as its function, so drop_trigger(name) removes both.
        statements = [
            (
                "CREATE OR REPLACE FUNCTION image_class_set_refresh(img bigint) RETURNS void "
                "LANGUAGE plpgsql AS $$ DECLARE s text; sid integer := 0; BEGIN "
                # An image being deleted is gone when its annotations' triggers run.
                "IF NOT EXISTS (SELECT 1 FROM image WHERE id = img) THEN RETURN; END IF; "
                "SELECT string_agg(c, chr(31) ORDER BY c) INTO s FROM (SELECT DISTINCT "
                "class_value AS c FROM annotation WHERE image_id = img) d; "
                "IF s IS NOT NULL THEN "
                "INSERT INTO class_set(classes) VALUES (s) ON CONFLICT (classes) DO NOTHING; "
                "SELECT id INTO sid FROM class_set WHERE classes = s; "
                "INSERT INTO class_set_member(class_value, set_id) SELECT DISTINCT class_value, "
                "sid FROM annotation WHERE image_id = img ON CONFLICT DO NOTHING; "
                "END IF; "
                "UPDATE image SET class_set_id = sid WHERE id = img "
                "AND class_set_id IS DISTINCT FROM sid; END $$"
            ),
            (
                "CREATE OR REPLACE FUNCTION annotation_class_set() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "IF TG_OP IN ('DELETE', 'UPDATE') AND NOT EXISTS (SELECT 1 FROM annotation "
                "WHERE image_id = OLD.image_id AND class_value = OLD.class_value) THEN "
                "PERFORM image_class_set_refresh(OLD.image_id); END IF; "
                "IF TG_OP IN ('INSERT', 'UPDATE') AND NOT EXISTS (SELECT 1 FROM image i "
                "JOIN class_set_member m ON m.set_id = i.class_set_id WHERE i.id = NEW.image_id "
                "AND m.class_value = NEW.class_value) THEN "
                "PERFORM image_class_set_refresh(NEW.image_id); END IF; "
                "RETURN NULL; END $$"
            ),
            "DROP TRIGGER IF EXISTS annotation_class_set ON annotation",
            (
                "CREATE TRIGGER annotation_class_set AFTER INSERT OR DELETE OR UPDATE OF "
                "class_value, image_id ON annotation FOR EACH ROW "
                "EXECUTE FUNCTION annotation_class_set()"
            ),
        ]
        return {"annotation_class_set": statements}

    # -- confidence bits (``confidence_bits``): kept by triggers on annotation ----------

    def confidence_bucket(self, column: str) -> str:
        # On the stored single-precision value widened to a double, as ``stored_confidence``
        # gives Python the same value: both sides bucket the same doubles.
        x = f"({column}::float8 * 20)"
        return f"(2 * floor({x})::integer + ({x} > floor({x}))::integer)"

    def confidence_bit(self, column: str) -> str:
        return f"(1::bigint << {self.confidence_bucket(column)})"  # 41 bits

    def stored_confidence(self, value: float) -> float:
        # FloatField is REAL here: 0.6 is stored as 0.60000002384..., and a bound of 0.6 must
        # take it in, so bounds are compared as stored values too.
        return struct.unpack("f", struct.pack("f", value))[0]

    def confidence_triggers(self) -> dict[str, list[str]]:
        bit = self.confidence_bit("NEW.confidence")
        bits = confidence_bits("img", self.confidence_bit("confidence"))
        statements = [
            (
                "CREATE OR REPLACE FUNCTION image_confidence_bits_refresh(img bigint) RETURNS "
                "void LANGUAGE plpgsql AS $$ DECLARE found_bits bigint; BEGIN "
                f"found_bits := {bits}; "
                "UPDATE image SET confidence_bits = found_bits WHERE id = img "
                "AND confidence_bits IS DISTINCT FROM found_bits; END $$"
            ),
            (
                # An insert only adds its bit (the bulk writer set it already: nothing to do);
                # a delete or a change recomputes the image's bits from its annotations.
                "CREATE OR REPLACE FUNCTION annotation_confidence_bits() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "IF TG_OP = 'INSERT' THEN IF NEW.confidence IS NOT NULL THEN "
                f"UPDATE image SET confidence_bits = confidence_bits | {bit} "
                f"WHERE id = NEW.image_id AND (confidence_bits & {bit}) = 0; "
                "END IF; RETURN NULL; END IF; "
                "IF TG_OP = 'DELETE' THEN IF OLD.confidence IS NOT NULL THEN "
                "PERFORM image_confidence_bits_refresh(OLD.image_id); END IF; RETURN NULL; "
                "END IF; "
                "IF OLD.confidence IS DISTINCT FROM NEW.confidence OR OLD.image_id IS DISTINCT "
                "FROM NEW.image_id THEN PERFORM image_confidence_bits_refresh(OLD.image_id); "
                "PERFORM image_confidence_bits_refresh(NEW.image_id); END IF; "
                "RETURN NULL; END $$"
            ),
            "DROP TRIGGER IF EXISTS annotation_confidence_bits ON annotation",
            (
                "CREATE TRIGGER annotation_confidence_bits AFTER INSERT OR DELETE OR UPDATE OF "
                "confidence, image_id ON annotation FOR EACH ROW "
                "EXECUTE FUNCTION annotation_confidence_bits()"
            ),
        ]
        return {"annotation_confidence_bits": statements}

    def confidence_backfill(self) -> list[str]:
        bit = self.confidence_bit("confidence")
        return [
            (
                "UPDATE image SET confidence_bits = d.b FROM (SELECT image_id, sum(x) AS b FROM "
                f"(SELECT DISTINCT image_id, {bit} AS x FROM annotation "
                "WHERE confidence IS NOT NULL) e GROUP BY image_id) d WHERE image.id = d.image_id"
            )
        ]

    def class_set_backfill(self) -> list[str]:
        keys = (
            "SELECT image_id, string_agg(class_value, chr(31) ORDER BY class_value) AS s "
            "FROM (SELECT DISTINCT image_id, class_value FROM annotation) d GROUP BY image_id"
        )
        return [
            (
                f"INSERT INTO class_set(classes) SELECT DISTINCT s FROM ({keys}) k "
                "ON CONFLICT (classes) DO NOTHING"
            ),
            (
                f"UPDATE image SET class_set_id = cs.id FROM ({keys}) k JOIN class_set cs "
                "ON cs.classes = k.s WHERE image.id = k.image_id"
            ),
            (
                "INSERT INTO class_set_member(class_value, set_id) SELECT DISTINCT a.class_value, "
                "i.class_set_id FROM annotation a JOIN image i ON i.id = a.image_id "
                "WHERE i.class_set_id <> 0 ON CONFLICT DO NOTHING"
            ),
        ]

    def search_index_backfill(self) -> list[str]:
        return []

    # -- zones --------------------------------------------------------------------------------

    def zone_ddl(self, keys: Mapping[str, tuple[str, str]] = zones.BOUNDS) -> list[str]:
        bounds = ", ".join(f"{c} BIGINT NOT NULL" for c in zones.columns(keys))
        return [f"CREATE TABLE IF NOT EXISTS {zones.TABLE} (zone BIGINT PRIMARY KEY, {bounds})"]

    def zone_triggers(
        self, keys: Mapping[str, tuple[str, str]] = zones.BOUNDS
    ) -> dict[str, list[str]]:
        # Writers take the catalog's one write lock, so the newest zone's row is never a
        # point of contention between two inserts.
        widen = zone_widen(zones, zone_values(zones, "NEW", keys), keys) + ";"
        gate = f"NOT EXISTS (SELECT 1 FROM {GATE_TABLE})"
        out = {}
        for name, when, body in (
            ("image_zone_ai", "AFTER INSERT", f"IF {gate} THEN {widen} END IF;"),
            ("image_zone_au", f"AFTER UPDATE OF {cols(tuple(keys))}", widen),
        ):
            out[name] = [
                _function(name, body),
                f"CREATE TRIGGER {name} {when} ON image FOR EACH ROW EXECUTE FUNCTION {name}()",
            ]
        return out

    def zone_backfill(self, keys: Mapping[str, tuple[str, str]] = zones.BOUNDS) -> list[str]:
        fill = zone_widen(zones, zone_select(zones, "true", keys), keys)
        return [f"DELETE FROM {zones.TABLE}", fill]

    def zone_grouped(self) -> list[str]:
        keys = zones.BOUNDS
        return [zone_widen(zones, zone_select(zones, "id BETWEEN ? AND ?", keys), keys)]

    def search_index_grouped(self) -> list[str]:
        return []

    def search_candidates(self, term: str, limit: int) -> tuple[str, tuple]:
        # The GIN index answers the exact, escaped ILIKE itself.
        return (
            f"SELECT id FROM image WHERE {self.like('filename')} LIMIT {int(limit)}",
            (like_pattern(term),),
        )

    def no_index(self, condition: str) -> str:
        return condition  # the planner has statistics: nothing to steer

    def sort_key_unindexed(self, column: str, text: bool) -> str:
        # Its statistics do not see that a device's names sit together in the filename
        # order: it walked that index backwards past 740,000 rows (0.87 s at 1M images) to
        # find a device's first 50 by filename, where sorting its 5,000 rows takes a few ms.
        return f"({column} || '')" if text else f"({column} + 0)"

    def insert_id(self, cursor: Any, sql: str, row: tuple) -> int:
        return cursor.execute(sql + ' RETURNING "id"', row).fetchone()[0]

    def byte_length(self, column: str) -> str:
        return f"octet_length({column})"

    def like(self, column: str) -> str:
        return f"{column} ILIKE ? ESCAPE '\\'"

    # -- the rest -----------------------------------------------------------------------------

    def gate_ready(self, database: Any) -> bool:
        # A bulk chunk's grouped statements need its images' ids to be one range, which a
        # sequence shared by concurrent writers does not promise: row triggers count instead.
        return False

    def values_table(self, values: list, alias: str) -> tuple[str, tuple]:
        cast = "::bigint" if all(isinstance(v, int) for v in values) else ""
        return (
            (
                f"(SELECT e.value{cast} AS value, e.key FROM jsonb_array_elements_text(?::jsonb) "
                f"WITH ORDINALITY AS e(value, key)) AS {alias}"
            ),
            (json.dumps(values),),
        )

    def json_ids(self, column: str) -> str:
        return f"coalesce(json_agg({column}), '[]')::text"

    def scan_whole(self, table: str) -> str:
        return table  # the planner chooses

    @contextmanager
    def job_lock(self, database: Any, name: str, lock_dir: Path, wait: float) -> Iterator[bool]:
        # A session-level advisory lock on this thread's connection (opened for the block):
        # shared by every process and host on the database, and gone with the session of a
        # process that dies. The lock folder is not needed.
        key = _key(name)
        # A connection this thread already has (a request's) is used as it is: a context of
        # its own would close it on the way out.
        with database.connection_context() if database.is_closed() else nullcontext():
            deadline = time.monotonic() + wait
            while True:
                (got,) = database.execute_sql("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()
                if got or time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
            try:
                yield bool(got)
            finally:
                if got:
                    with suppress(Exception):  # a dropped session has let it go already
                        database.execute_sql("SELECT pg_advisory_unlock(?)", (key,))

    def at_shutdown(self, database: Any) -> None:
        return None  # the server owns its files

    def relax_durability(self, database: Any) -> None:
        # A commit returns before its WAL is flushed; a crash loses at most the last few,
        # never consistency.
        database.execute_sql("SET synchronous_commit = off")

    @contextmanager
    def write_tx(self, database: Any) -> Iterator[Any]:
        # One writer at a time, as on SQLite: every check-then-write of the domain was written
        # for a single writer, and a transaction-scoped advisory lock keeps that true across
        # processes and hosts. Re-entrant: a nested write_tx (a savepoint) takes it again.
        with database.atomic() as tx:
            database.execute_sql("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
            yield tx

    @contextmanager
    def read_snapshot(self, database: Any) -> Iterator[Any]:
        # READ COMMITTED (the default) takes a snapshot per statement; REPEATABLE READ one
        # for the transaction. Nested in another transaction it cannot be set: that one's
        # own isolation holds.
        with database.atomic() as tx:
            if database.transaction_depth() == 1:
                database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield tx

    def settle(self, database: Any, write_tx: Any) -> None:
        # A committed PostgreSQL transaction is in or out for every reader: nothing to decide.
        return None

    def fingerprint(self, connection: Any) -> tuple:
        # No cheap "has anything changed" here: nothing is remembered between statements.
        return (object(),)


ENGINE = PostgresEngine()
