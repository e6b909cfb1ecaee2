"""Show, for every query of the matrix, the SQL statements the service runs, their
``EXPLAIN QUERY PLAN`` and their time inside SQLite alone (best of N), on a generated catalog.

It captures the statements with ``edgecatalog.explain`` (the service's own list path, as
``edgecatalog explain URL`` does), then replays each statement through the ``sqlite3`` module.
``--index 'CREATE INDEX ...'`` (repeatable) and ``--analyze`` work on a throw-away copy of the
database, to try a tuning before making it a migration:
``python benchmarks/explain.py --data /tmp/ec-1m --copy --index "..."``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from werkzeug.datastructures import MultiDict

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matrix

from edgecatalog import db, explain, listing


def service_statements(case: matrix.Case) -> list[tuple[str, tuple]]:
    query = listing.parse_image_query(MultiDict(case.params))
    statements, _plan = explain.list_statements(query)
    return [(s.sql, s.params) for s in statements]


def timed(conn: sqlite3.Connection, sql: str, args: tuple, repeat: int) -> float:
    return explain.timed(conn, sql, args, repeat)


def plan_lines(conn: sqlite3.Connection, sql: str, args: tuple) -> list[str]:
    return [row["detail"] for row in explain.plan_rows(conn, sql, args)]


def prepare(args: argparse.Namespace) -> Path:
    db_path = args.data.resolve() / "catalog.db"
    if not (args.copy or args.index or args.analyze):
        return db_path
    folder = Path(tempfile.mkdtemp(prefix="edgecatalog-explain-"))
    copy = folder / "catalog.db"
    src = sqlite3.connect(db_path)
    dst = sqlite3.connect(copy)
    src.backup(dst)  # a consistent copy, WAL included
    src.close()
    for sql in args.index:
        started = time.perf_counter()
        dst.execute(sql)
        print(f"-- {sql}  [{time.perf_counter() - started:.1f} s]")
    if args.analyze:
        dst.execute("ANALYZE")
    dst.commit()
    dst.close()
    print(f"-- working on a copy: {copy} ({copy.stat().st_size:,} bytes)")
    return copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder made by generate.py")
    parser.add_argument("--only", help="regex: only the matching queries")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copy", action="store_true", help="work on a copy of the database")
    parser.add_argument("--index", action="append", default=[], help="extra SQL, on a copy")
    parser.add_argument("--analyze", action="store_true", help="run ANALYZE, on a copy")
    parser.add_argument("--keep", action="store_true", help="keep the copy")
    args = parser.parse_args(argv)
    db_path = prepare(args)
    facts = matrix.read_facts(args.data.resolve() / "catalog.db")
    database = db.init_database(db_path)
    conn = sqlite3.connect(db_path)
    try:
        for case in matrix.cases(facts, 1):
            if case.path != "/data/images" or (args.only and not re.search(args.only, case.name)):
                continue
            with database.connection_context():
                statements = service_statements(case)
            print(f"\n## {case.name}  {case.url()}")
            for sql, params in statements:
                ms = timed(conn, sql, params, args.repeat)
                flat = " ".join(sql.split())  # the hand-written SQL spans lines
                print(f"  {ms:8.2f} ms  {flat[:160]}{'...' if len(flat) > 160 else ''}")
                for line in plan_lines(conn, sql, params):
                    print(f"              {line}")
    finally:
        conn.close()
        if db_path.parent != args.data.resolve() and not args.keep:
            shutil.rmtree(db_path.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
