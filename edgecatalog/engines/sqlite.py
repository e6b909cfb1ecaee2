"""SQLite: the embedded engine, and the reference implementation of ``engines.Engine``.

Count tables are ``WITHOUT ROWID`` tables kept by row triggers in the writing statement's
transaction. Their INSERT triggers wait on the bulk-load gate (``ingest_bulk``: a row is
there only inside a bulk chunk's own uncommitted transaction, see ``ingest.counts``), so a
chunk of a thousand images applies the same changes in one grouped statement per table.
The substring index is an FTS5 trigram table over ``image.filename`` (external content,
``detail=none``: rowids only, ~49 bytes per image). No Flask, no models.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

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
    zone_select,
    zone_values,
    zone_widen,
)

GATE_TABLE = "ingest_bulk"
GATE = f"NOT EXISTS (SELECT 1 FROM {GATE_TABLE})"


def _changed(names: tuple[str, ...]) -> str:
    return " OR ".join(f"old.{n} IS NOT new.{n}" for n in names)


def _key_match(names: tuple[str, ...], row: str) -> str:
    return " AND ".join(f"{n} = {row}.{n}" for n in names)


class SqliteEngine:
    name = "sqlite"
    remembers = True  # fingerprint() says when the database changed
    gate_table = GATE_TABLE
    pragmas: ClassVar[dict[str, Any]] = {
        "journal_mode": "wal",  # readers never block the writer, and vice versa
        # FULL: a device can lose power; a 2xx upload must survive it, not just a crash.
        "synchronous": "full",
        "foreign_keys": 1,
        "busy_timeout": 15_000,
        # 2 MB per connection (one per waitress thread): the 80 MB RSS budget is per service.
        # The list reads a few pages per request (counts from small tables, pages by index
        # walks); 16, 4 and 2 MB measured the same latency at 1M images.
        "cache_size": -2_000,
        # A sort or GROUP BY larger than the page cache spills to a temporary file (deleted
        # at once; it rarely leaves the OS page cache) rather than growing the heap: counting a
        # common search term per zone sorts ~300,000 keys, 10 MB in memory on each of the
        # threads' connections at once, 4.4 MB with the spill, at the same speed.
        "temp_store": "file",
    }

    # -- count tables -------------------------------------------------------------------------

    def count_table_ddl(self, table: CountTable) -> list[str]:
        columns = ([("class_value", "TEXT")] if table.per_class else []) + [
            (k.name, k.type) for k in table.keys
        ]
        defs = ", ".join(f"{name} {type_} NOT NULL" for name, type_ in columns)
        return [
            f"DROP TABLE IF EXISTS {table.name}",
            (
                f"CREATE TABLE {table.name} ({defs}, {count_columns(table)}, "
                f"PRIMARY KEY ({cols(table.columns)})) WITHOUT ROWID"
            ),
        ]

    def _add(self, table: CountTable, select: str, n: str, annotations: str | None = None) -> str:
        return (
            f"INSERT INTO {table.name} {select} "
            f"ON CONFLICT ({cols(table.columns)}) DO UPDATE SET "
            + count_update(table, n, annotations)
        )

    def count_triggers(self, table: CountTable) -> dict[str, list[str]]:
        return {name: [sql] for name, sql in self._count_triggers(table).items()}

    def _count_triggers(self, table: CountTable) -> dict[str, str]:
        t, keys = table.name, table.key_names
        if not table.per_class:
            add = self._add(table, f"VALUES ({cols(keys, 'new.')}, 1)", "1") + ";"
            sub = f"UPDATE {t} SET n = n - 1 WHERE {_key_match(keys, 'old')};"
            return {
                f"{t}_ai": f"CREATE TRIGGER {t}_ai AFTER INSERT ON image WHEN {GATE} "
                f"BEGIN {add} END",
                f"{t}_ad": f"CREATE TRIGGER {t}_ad AFTER DELETE ON image BEGIN {sub} END",
                f"{t}_au": f"CREATE TRIGGER {t}_au AFTER UPDATE OF {cols(table.update_of)} ON image "
                f"WHEN {_changed(keys)} BEGIN {sub} {add} END",
            }
        # Per class: an image counts once per class it carries. The annotation side adds or
        # removes one class of one image (+1 with the image's first annotation of it, -1 with
        # its last; the (class_value, image_id) index makes both probes cheap); the image side
        # moves all of an image's classes when its key changes. A deleted image: its BEFORE
        # DELETE trigger removes its classes while its annotations still exist; the cascaded
        # annotation deletes then find no image and do nothing. With ``annotations``, every
        # annotation also counts itself, so those triggers fire for each one, not only for an
        # image's first or last of a class.
        image_keys = f", {cols(keys)}" if keys else ""
        first = (
            "NOT EXISTS (SELECT 1 FROM annotation a WHERE a.class_value = new.class_value "
            "AND a.image_id = new.image_id AND a.id != new.id)"
        )
        gone = (
            "NOT EXISTS (SELECT 1 FROM annotation a WHERE a.class_value = old.class_value "
            "AND a.image_id = old.image_id)"
        )
        counted = table.annotations
        if counted:
            ann_add = self._add(
                table,
                f"SELECT new.class_value{image_keys}, CASE WHEN {first} THEN 1 ELSE 0 END, 1 "
                "FROM image WHERE id = new.image_id",
                "excluded.n",
                "1",
            )
        else:
            ann_add = self._add(
                table,
                f"SELECT new.class_value{image_keys}, 1 FROM image WHERE id = new.image_id",
                "1",
            )
        ann_add += ";"
        if keys:
            of_image = f"({cols(keys)}) = (SELECT {cols(keys)} FROM image WHERE id = old.image_id)"
        else:
            of_image = "EXISTS (SELECT 1 FROM image WHERE id = old.image_id)"
        less = f"n = n - CASE WHEN {gone} THEN 1 ELSE 0 END, annotations = annotations - 1"
        ann_sub = (
            f"UPDATE {t} SET {less if counted else 'n = n - 1'} "
            f"WHERE class_value = old.class_value AND {of_image};"
        )
        classes_of_old = (
            "class_value IN (SELECT class_value FROM annotation WHERE image_id = old.id)"
        )
        img_less = "n = n - 1" + (
            f", annotations = annotations - {class_annotations(t, 'old.id')}" if counted else ""
        )
        img_sub = (
            f"UPDATE {t} SET {img_less} WHERE "
            + " AND ".join([_key_match(keys, "old")] * bool(keys) + [classes_of_old])
            + ";"
        )
        moved = "(old.class_value IS NOT new.class_value OR old.image_id IS NOT new.image_id)"
        # Without annotation counts only an image's first (last) annotation of a class moves
        # a count; with them every annotation does.
        when_first, when_gone = ("", "") if counted else (f" AND {first}", f" AND {gone}")
        triggers = {
            f"{t}_ann_ai": f"CREATE TRIGGER {t}_ann_ai AFTER INSERT ON annotation "
            f"WHEN {GATE}{when_first} BEGIN {ann_add} END",
            f"{t}_ann_ad": f"CREATE TRIGGER {t}_ann_ad AFTER DELETE ON annotation "
            f"{'' if counted else f'WHEN {gone} '}BEGIN {ann_sub} END",
            # Two for an update: the old class may lose its image and the new one gain it.
            f"{t}_ann_au_old": f"CREATE TRIGGER {t}_ann_au_old AFTER UPDATE OF class_value, "
            f"image_id ON annotation WHEN {moved}{when_gone} BEGIN {ann_sub} END",
            f"{t}_ann_au_new": f"CREATE TRIGGER {t}_ann_au_new AFTER UPDATE OF class_value, "
            f"image_id ON annotation WHEN {moved}{when_first} BEGIN {ann_add} END",
            f"{t}_img_bd": f"CREATE TRIGGER {t}_img_bd BEFORE DELETE ON image BEGIN {img_sub} END",
        }
        if keys:
            if counted:
                img_add = self._add(
                    table,
                    f"SELECT class_value, {cols(keys, 'new.')}, 1, count(*) FROM annotation "
                    "WHERE image_id = new.id GROUP BY class_value",
                    "excluded.n",
                    "excluded.annotations",
                )
            else:
                img_add = self._add(
                    table,
                    f"SELECT DISTINCT class_value, {cols(keys, 'new.')}, 1 FROM annotation "
                    "WHERE image_id = new.id",
                    "1",
                )
            triggers[f"{t}_img_au"] = (
                f"CREATE TRIGGER {t}_img_au AFTER UPDATE OF {cols(table.update_of)} ON image "
                f"WHEN {_changed(keys)} BEGIN {img_sub} {img_add}; END"
            )
        return triggers

    def drop_trigger(self, name: str) -> str:
        return f"DROP TRIGGER IF EXISTS {name}"

    def backfill(self, table: CountTable) -> list[str]:
        return backfill(table)

    def grouped_counts(self, table: CountTable) -> str:
        # The WHERE also keeps SQLite from reading the upsert's ON CONFLICT as a join's ON.
        return self._add(
            table,
            grouped_select(table, "{id} BETWEEN ?1 AND ?2"),
            "excluded.n",
            "excluded.annotations",
        )

    # -- substring search ---------------------------------------------------------------------

    def search_index_ddl(self) -> list[str]:
        return [
            (
                "CREATE VIRTUAL TABLE IF NOT EXISTS image_fts USING fts5(filename, content='image', "
                "content_rowid='id', tokenize='trigram', detail='none')"
            ),
        ]

    def search_index_triggers(self) -> dict[str, list[str]]:
        return {name: [sql] for name, sql in self._search_index_triggers().items()}

    def _search_index_triggers(self) -> dict[str, str]:
        add = "INSERT INTO image_fts(rowid, filename) VALUES (new.id, new.filename);"
        sub = (
            "INSERT INTO image_fts(image_fts, rowid, filename) "
            "VALUES ('delete', old.id, old.filename);"
        )
        return {
            "image_fts_ai": f"CREATE TRIGGER image_fts_ai AFTER INSERT ON image WHEN {GATE} "
            f"BEGIN {add} END",
            "image_fts_ad": f"CREATE TRIGGER image_fts_ad AFTER DELETE ON image BEGIN {sub} END",
            "image_fts_au": "CREATE TRIGGER image_fts_au AFTER UPDATE OF filename ON image "
            f"WHEN old.filename IS NOT new.filename BEGIN {sub} {add} END",
        }

    # -- class sets -------------------------------------------------------------------------

    def class_set_triggers(self) -> dict[str, list[str]]:
        def refresh(img: str) -> str:
            key = _set_key(img)
            set_id = f"coalesce((SELECT id FROM class_set WHERE classes = {key}), 0)"
            return (
                f"INSERT OR IGNORE INTO class_set(classes) SELECT s FROM (SELECT {key} AS s) "
                "WHERE s IS NOT NULL; "
                "INSERT OR IGNORE INTO class_set_member(class_value, set_id) SELECT DISTINCT "
                f"a.class_value, cs.id FROM annotation a JOIN class_set cs ON cs.classes = {key} "
                f"WHERE a.image_id = {img}; "
                f"UPDATE image SET class_set_id = {set_id} WHERE id = {img} "
                f"AND class_set_id IS NOT {set_id};"
            )

        # A class new to the image, or the image's last annotation of one gone: its set moves.
        # An image being deleted is gone already when its annotations' triggers run.
        known = (
            "EXISTS (SELECT 1 FROM image i JOIN class_set_member m ON m.set_id = i.class_set_id "
            "WHERE i.id = new.image_id AND m.class_value = new.class_value)"
        )
        gone = (
            "NOT EXISTS (SELECT 1 FROM annotation a WHERE a.image_id = old.image_id "
            "AND a.class_value = old.class_value) "
            "AND EXISTS (SELECT 1 FROM image WHERE id = old.image_id)"
        )
        moved = "(old.class_value IS NOT new.class_value OR old.image_id IS NOT new.image_id)"
        return {
            "annotation_set_ai": [
                (
                    "CREATE TRIGGER IF NOT EXISTS annotation_set_ai AFTER INSERT ON annotation "
                    f"WHEN NOT {known} BEGIN {refresh('new.image_id')} END"
                )
            ],
            "annotation_set_ad": [
                (
                    "CREATE TRIGGER IF NOT EXISTS annotation_set_ad AFTER DELETE ON annotation "
                    f"WHEN {gone} BEGIN {refresh('old.image_id')} END"
                )
            ],
            "annotation_set_au": [
                (
                    "CREATE TRIGGER IF NOT EXISTS annotation_set_au AFTER UPDATE OF class_value, "
                    f"image_id ON annotation WHEN {moved} BEGIN {refresh('old.image_id')} "
                    f"{refresh('new.image_id')} END"
                )
            ],
        }

    # -- confidence bits (``confidence_bits``): kept by triggers on annotation ----------

    def confidence_bucket(self, column: str) -> str:
        # CAST truncates toward zero: the floor of a confidence (never negative); a boolean
        # is 0 or 1.
        x = f"({column} * 20)"
        return f"(2 * CAST({x} AS INTEGER) + ({x} > CAST({x} AS INTEGER)))"

    def confidence_bit(self, column: str) -> str:
        return f"(1 << {self.confidence_bucket(column)})"  # integers are 64-bit

    def stored_confidence(self, value: float) -> float:
        return value  # REAL is a double: stored as given

    def confidence_triggers(self) -> dict[str, list[str]]:
        bit = self.confidence_bit

        def refresh(img: str) -> str:
            bits = confidence_bits(img, bit("confidence"))
            return (
                f"UPDATE image SET confidence_bits = {bits} WHERE id = {img} "
                f"AND confidence_bits IS NOT {bits};"
            )

        # An insert only adds its bit (and the bulk writer set it already: nothing to do);
        # a delete or a change recomputes the image's bits from its annotations.
        return {
            "annotation_conf_ai": [
                (
                    "CREATE TRIGGER IF NOT EXISTS annotation_conf_ai AFTER INSERT ON annotation "
                    "WHEN new.confidence IS NOT NULL BEGIN UPDATE image SET confidence_bits = "
                    f"confidence_bits | {bit('new.confidence')} WHERE id = new.image_id AND "
                    f"(confidence_bits & {bit('new.confidence')}) = 0; END"
                )
            ],
            "annotation_conf_ad": [
                (
                    "CREATE TRIGGER IF NOT EXISTS annotation_conf_ad AFTER DELETE ON annotation "
                    f"WHEN old.confidence IS NOT NULL BEGIN {refresh('old.image_id')} END"
                )
            ],
            "annotation_conf_au": [
                (
                    "CREATE TRIGGER IF NOT EXISTS annotation_conf_au AFTER UPDATE OF confidence, "
                    "image_id ON annotation WHEN old.confidence IS NOT new.confidence OR "
                    f"old.image_id IS NOT new.image_id BEGIN {refresh('old.image_id')} "
                    f"{refresh('new.image_id')} END"
                )
            ],
        }

    def confidence_backfill(self) -> list[str]:
        bits = confidence_bits("image.id", self.confidence_bit("confidence"))
        return [f"UPDATE image SET confidence_bits = {bits}"]

    def class_set_backfill(self) -> list[str]:
        key = _set_key("image.id")
        return [
            (
                "INSERT OR IGNORE INTO class_set(classes) SELECT DISTINCT s FROM "
                f"(SELECT {key} AS s FROM image) WHERE s IS NOT NULL"
            ),
            (
                f"UPDATE image SET class_set_id = coalesce((SELECT id FROM class_set WHERE classes = "
                f"{key}), 0)"
            ),
            (
                "INSERT OR IGNORE INTO class_set_member(class_value, set_id) SELECT DISTINCT "
                "a.class_value, i.class_set_id FROM annotation a JOIN image i ON i.id = a.image_id"
            ),
        ]

    def search_index_backfill(self) -> list[str]:
        return ["INSERT INTO image_fts(image_fts) VALUES ('rebuild')"]

    # -- zones --------------------------------------------------------------------------------

    def zone_ddl(self, keys: Mapping[str, tuple[str, str]] = zones.BOUNDS) -> list[str]:
        bounds = ", ".join(f"{c} INTEGER NOT NULL" for c in zones.columns(keys))
        return [f"CREATE TABLE IF NOT EXISTS {zones.TABLE} (zone INTEGER PRIMARY KEY, {bounds})"]

    def zone_triggers(
        self, keys: Mapping[str, tuple[str, str]] = zones.BOUNDS
    ) -> dict[str, list[str]]:
        widen = zone_widen(zones, zone_values(zones, "new", keys), keys) + ";"
        keys = cols(tuple(keys))
        return {
            "image_zone_ai": [
                f"CREATE TRIGGER image_zone_ai AFTER INSERT ON image WHEN {GATE} BEGIN {widen} END"
            ],
            "image_zone_au": [
                f"CREATE TRIGGER image_zone_au AFTER UPDATE OF {keys} ON image BEGIN {widen} END"
            ],
        }

    def zone_backfill(self, keys: Mapping[str, tuple[str, str]] = zones.BOUNDS) -> list[str]:
        fill = zone_widen(zones, zone_select(zones, "true", keys), keys)
        return [f"DELETE FROM {zones.TABLE}", fill]

    def zone_grouped(self) -> list[str]:
        keys = zones.BOUNDS
        return [zone_widen(zones, zone_select(zones, "id BETWEEN ?1 AND ?2", keys), keys)]

    def search_index_grouped(self) -> list[str]:
        return [
            (
                "INSERT INTO image_fts(rowid, filename) SELECT id, filename FROM image "
                "WHERE id BETWEEN ?1 AND ?2"
            )
        ]

    def search_candidates(self, term: str, limit: int) -> tuple[str, tuple]:
        # The trigram index answers the unescaped LIKE with a superset of the exact, escaped
        # match (its wildcards match more, it folds more case); the caller rechecks.
        return f"SELECT rowid FROM image_fts WHERE filename LIKE ? LIMIT {int(limit)}", (
            f"%{term}%",
        )

    # -- the rest -----------------------------------------------------------------------------

    def no_index(self, condition: str) -> str:
        # A unary '+' takes the column out of the planner's index choice.
        return f"+{condition}"

    def sort_key_unindexed(self, column: str, text: bool) -> str:
        return f"+{column}"

    def insert_id(self, cursor: Any, sql: str, row: tuple) -> int:
        return cursor.execute(sql, row).lastrowid

    def byte_length(self, column: str) -> str:
        # length() of TEXT counts characters; of a BLOB, bytes.
        return f"length(CAST({column} AS BLOB))"

    def like(self, column: str) -> str:
        # ASCII case folding only (SQLite's LIKE); '\\' makes '%' and '_' literal.
        return f"{column} LIKE ? ESCAPE '\\'"

    def gate_ready(self, database: Any) -> bool:
        from ..listing import counts

        names = [
            name
            for table in counts.COUNT_TABLES
            for name, (sql,) in self.count_triggers(table).items()
            if GATE in sql
        ] + ["image_fts_ai", "image_zone_ai"]
        marks = ", ".join("?" * len(names))
        rows = database.execute_sql(
            f"SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})", names
        ).fetchall()
        return len(rows) == len(names) and all(GATE_TABLE in sql for (sql,) in rows)

    def values_table(self, values: list, alias: str) -> tuple[str, tuple]:
        # key: the position in the list, value: the value.
        return f"json_each(?) AS {alias}", (json.dumps(values),)

    def json_ids(self, column: str) -> str:
        return f"json_group_array({column})"

    def scan_whole(self, table: str) -> str:
        return f"{table} NOT INDEXED"

    @contextmanager
    def job_lock(self, database: Any, name: str, lock_dir: Path, wait: float) -> Iterator[bool]:
        # A file lock beside the catalog: every process on this data folder shares it, and
        # closing the descriptor (or dying) drops it.
        fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        got = False
                        break
                    time.sleep(0.05)
            yield got
        finally:
            os.close(fd)

    def at_shutdown(self, database: Any) -> None:
        # Fold the WAL back into the main file so a copy of catalog.db alone is complete.
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def relax_durability(self, database: Any) -> None:
        database.execute_sql("PRAGMA synchronous = NORMAL")  # WAL keeps the file consistent

    def write_tx(self, database: Any) -> Any:
        # IMMEDIATE takes the write lock at BEGIN: two writers never deadlock upgrading read
        # locks, and busy_timeout makes the second one queue.
        return database.atomic("IMMEDIATE")

    def read_snapshot(self, database: Any) -> Any:
        # A deferred BEGIN: in WAL mode the first read fixes the snapshot every later
        # statement of the transaction reads; writers go on meanwhile.
        return database.atomic()

    def settle(self, database: Any, write_tx: Any) -> None:
        # user_version set to its own value: the smallest real write (db.settle says why).
        with write_tx(database):
            (version,) = database.execute_sql("PRAGMA user_version").fetchone()
            database.execute_sql(f"PRAGMA user_version = {int(version)}")

    def fingerprint(self, connection: Any) -> tuple:
        # data_version changes when another connection commits; total_changes with this
        # connection's own writes, committed or not.
        return connection.execute("PRAGMA data_version").fetchone()[0], connection.total_changes


ENGINE = SqliteEngine()


def _set_key(img: str) -> str:
    """The ``class_sets.set_key`` text of image ``img`` (an SQL expression), or NULL for none:
    an aggregate over an ordered subquery takes its rows in that order."""
    return (
        "(SELECT group_concat(c, char(31)) FROM (SELECT DISTINCT class_value AS c "
        f"FROM annotation WHERE image_id = {img} ORDER BY c))"
    )
