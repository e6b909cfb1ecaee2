"""Evidence for the tuning plan: on a throw-away copy of a generated catalog, time the SQL the
service runs today next to candidate rewrites and structures, check each candidate returns
the same answer, and print the plans and the disk each structure costs.

Usage: ``python benchmarks/tuning.py --data /tmp/ec-1m`` (copies catalog.db next to a temp
folder first; the generated catalog is never changed). Nothing here is used by the service.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matrix

FACETS = """
CREATE TABLE image_facet_count (
  batch_id INTEGER NOT NULL, annotation_status TEXT NOT NULL, split TEXT NOT NULL,
  sync_state TEXT NOT NULL, n INTEGER NOT NULL,
  PRIMARY KEY (batch_id, annotation_status, split, sync_state)) WITHOUT ROWID;
INSERT INTO image_facet_count SELECT batch_id, annotation_status, split, sync_state, count(*)
  FROM image GROUP BY 1, 2, 3, 4;
CREATE TRIGGER image_facet_ins AFTER INSERT ON image BEGIN
  INSERT INTO image_facet_count VALUES (new.batch_id, new.annotation_status, new.split,
    new.sync_state, 1) ON CONFLICT DO UPDATE SET n = n + 1; END;
CREATE TRIGGER image_facet_del AFTER DELETE ON image BEGIN
  UPDATE image_facet_count SET n = n - 1 WHERE batch_id = old.batch_id
    AND annotation_status = old.annotation_status AND split = old.split
    AND sync_state = old.sync_state; END;
CREATE TRIGGER image_facet_upd AFTER UPDATE OF batch_id, annotation_status, split, sync_state
  ON image BEGIN
  UPDATE image_facet_count SET n = n - 1 WHERE batch_id = old.batch_id
    AND annotation_status = old.annotation_status AND split = old.split
    AND sync_state = old.sync_state;
  INSERT INTO image_facet_count VALUES (new.batch_id, new.annotation_status, new.split,
    new.sync_state, 1) ON CONFLICT DO UPDATE SET n = n + 1; END;
"""
FTS = """
CREATE VIRTUAL TABLE image_fts USING fts5(filename, content='image', content_rowid='id',
  tokenize='trigram', detail='none');
INSERT INTO image_fts(image_fts) VALUES ('rebuild');
"""
ROWS = """SELECT i.id, i.filename, i.storage_key, i.width, i.height, d.device_id, i.batch_id,
 b.name, p.name, i.annotation_status, i.split, i.split_locked, v.version_name, i.created_at,
 i.updated_at, i.sync_state, i.synced_at FROM image i JOIN device d ON d.id = i.device_id
 JOIN batch b ON b.id = i.batch_id LEFT JOIN project p ON p.id = b.project_id
 LEFT JOIN dataset_version v ON v.id = i.version_id"""
PAGE = " ORDER BY i.created_at DESC, i.id DESC LIMIT 50"
LIKE = "LIKE ? ESCAPE '\\'"


def experiments(f: matrix.Facts) -> list[tuple[str, str, str, tuple]]:
    """(name, today's SQL, candidate SQL, params): each pair must give the same rows."""
    proj_null = "(SELECT id FROM batch WHERE project_id IS NULL)"
    cls = "(SELECT image_id FROM annotation WHERE class_value = ?)"
    probe = "EXISTS (SELECT 1 FROM annotation a WHERE a.class_value = ? AND a.image_id = i.id)"
    facet = "SELECT coalesce(sum(c.n), 0) FROM image_facet_count c"
    facet_b = facet + " JOIN batch b ON b.id = c.batch_id"
    # FTS5 trigram answers LIKE from its index only without ESCAPE, where '_' is a wildcard:
    # it yields a superset, which the exact, escaped LIKE on the row then narrows.
    by_image = (
        "SELECT count(*) FROM (SELECT image_id FROM annotation WHERE class_value = ? "
        "GROUP BY image_id)"
    )
    proj = "(SELECT id FROM batch WHERE project_id = ?)"

    def page_ids(where: str) -> str:
        # Deferred join: pick the page's ids from image alone (the planner then walks the
        # sort index), and join devices, batches, projects and versions for those rows only.
        return (
            f"{ROWS} WHERE i.id IN (SELECT id FROM image WHERE {where} "
            f"ORDER BY created_at DESC, id DESC LIMIT 50){PAGE}"
        )

    # Deferred join: skip the offset on the covering created_at index, join only the page.
    deferred = (
        f"{ROWS} WHERE i.id IN (SELECT id FROM image ORDER BY created_at DESC, id DESC "
        f"LIMIT 50 OFFSET 10000){PAGE}"
    )
    fts = f"(SELECT rowid FROM image_fts WHERE filename LIKE ?) AND i.filename {LIKE}"
    return [
        ("count: all", "SELECT count(*) FROM image", facet, ()),
        (
            "count: project_id=null",
            f"SELECT count(*) FROM image WHERE batch_id IN {proj_null}",
            facet_b + " WHERE b.project_id IS NULL",
            (),
        ),
        (
            "count: 3 filters",
            (
                "SELECT count(*) FROM image WHERE device_id = ? AND "
                "annotation_status = 'completed' AND split = 'train'"
            ),
            facet_b
            + (
                " WHERE b.device_id = ? AND c.annotation_status = 'completed' AND c.split = 'train'"
            ),
            (f.device_pk,),
        ),
        (
            "count: split",
            "SELECT count(*) FROM image WHERE split = 'val'",
            facet + " WHERE c.split = 'val'",
            (),
        ),
        (
            "count: class common",
            f"SELECT count(*) FROM image WHERE id IN {cls}",
            by_image,
            (f.common_class,),
        ),
        (
            "count: class rare",
            f"SELECT count(*) FROM image WHERE id IN {cls}",
            by_image,
            (f.rare_class,),
        ),
        (
            "rows: project_id=null",
            f"{ROWS} WHERE i.batch_id IN {proj_null}{PAGE}",
            page_ids(f"batch_id IN {proj_null}"),
            (),
        ),
        (
            "rows: project_id",
            f"{ROWS} WHERE i.batch_id IN {proj}{PAGE}",
            page_ids(f"batch_id IN {proj}"),
            (f.project_id,),
        ),
        (
            "rows: class common",
            f"{ROWS} WHERE i.id IN {cls}{PAGE}",
            f"{ROWS} WHERE {probe}{PAGE}",
            (f.common_class,),
        ),
        (
            "rows: class rare",
            f"{ROWS} WHERE i.id IN {cls}{PAGE}",
            f"{ROWS} WHERE {probe}{PAGE}",
            (f.rare_class,),
        ),
        ("rows: offset 10000", f"{ROWS}{PAGE} OFFSET 10000", deferred, ()),
        (
            "count: search rare",
            f"SELECT count(*) FROM image WHERE filename {LIKE}",
            f"SELECT count(*) FROM image i WHERE i.id IN {fts}",
            ("search-rare",),
        ),
        (
            "rows: search rare",
            f"{ROWS} WHERE i.filename {LIKE}{PAGE}",
            f"{ROWS} WHERE i.id IN {fts}{PAGE}",
            ("search-rare",),
        ),
        (
            "count: search common",
            f"SELECT count(*) FROM image WHERE filename {LIKE}",
            f"SELECT count(*) FROM image i WHERE i.id IN {fts}",
            ("search-common",),
        ),
        (
            "count: search 2-char",
            f"SELECT count(*) FROM image WHERE filename {LIKE}",
            "SELECT count(*) FROM image WHERE filename LIKE ?",
            ("search-2",),
        ),
    ]


def bind(params: tuple, f: matrix.Facts, fts_side: bool) -> tuple:
    terms = {"search-rare": f.rare_search, "search-common": "cam1", "search-2": "07"}
    out = []
    for p in params:
        if p in terms:
            # As the service does: LIKE with '%', '_' and '\\' escaped; FTS5 takes a quoted phrase.
            escaped = terms[p].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            if fts_side and p != "search-2":
                out.append(f"%{terms[p]}%")
            out.append(f"%{escaped}%")
        else:
            out.append(p)
    return tuple(out)


def best_ms(conn: sqlite3.Connection, sql: str, params: tuple, repeat: int) -> tuple[float, list]:
    best, rows = float("inf"), []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = conn.execute(sql, params).fetchall()
        best = min(best, time.perf_counter() - started)
    return best * 1000, rows


def build(conn: sqlite3.Connection, name: str, script: str) -> None:
    before = conn.execute("PRAGMA page_count").fetchone()[0]
    started = time.perf_counter()
    conn.executescript(script)
    pages = conn.execute("PRAGMA page_count").fetchone()[0] - before
    images = conn.execute("SELECT max(id) FROM image").fetchone()[0]
    print(
        f"built {name} in {time.perf_counter() - started:.1f} s: +{pages * 4096:,} bytes "
        f"(+{pages * 4096 / images:.0f} bytes/image)"
    )


def trigger_cost(conn: sqlite3.Connection, n: int = 5000) -> None:
    """What the facet triggers add to writes: the same UPDATE with and without them."""
    sql = (
        "UPDATE image SET annotation_status = 'completed', split = 'val' "
        "WHERE id > (SELECT max(id) FROM image) - ?"
    )
    timings = []
    for label in ("with triggers", "without triggers"):
        conn.execute("BEGIN")
        started = time.perf_counter()
        changed = conn.execute(sql, (n,)).rowcount
        timings.append((label, (time.perf_counter() - started) * 1e6 / max(changed, 1)))
        conn.execute("ROLLBACK")
        if label == "with triggers":
            # Every UPDATE trigger on image: the candidate's, or migration 0004's once applied.
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'image' "
                    "AND sql LIKE '%UPDATE OF%'"
                )
            ]
            conn.executescript(
                "BEGIN; " + "".join(f'DROP TRIGGER "{n}"; ' for n in names) + "COMMIT;"
            )
    print(
        f"update of the newest {n} images: " + ", ".join(f"{k} {v:.1f} us/row" for k, v in timings)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    facts = matrix.read_facts(args.data / "catalog.db")
    folder = Path(tempfile.mkdtemp(prefix="edgecatalog-tuning-"))
    try:
        copy = folder / "catalog.db"
        src = sqlite3.connect(args.data / "catalog.db")
        conn = sqlite3.connect(copy, isolation_level=None)
        src.backup(conn)
        src.close()
        for name, table, script in (
            ("facet counts", "image_facet_count", FACETS),
            ("FTS5 trigram (detail=none)", "image_fts", FTS),
        ):
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                print(f"{name}: already in the catalog (migration 0004)")
            else:
                build(conn, name, script)
        for name, today, candidate, params in experiments(facts):
            t_ms, t_rows = best_ms(conn, today, bind(params, facts, False), args.repeat)
            c_ms, c_rows = best_ms(conn, candidate, bind(params, facts, True), args.repeat)
            same = "same" if t_rows == c_rows else f"DIFFERENT ({t_rows[:1]} vs {c_rows[:1]})"
            print(f"\n{name}: today {t_ms:.2f} ms -> candidate {c_ms:.2f} ms  [{same}]")
            for line in conn.execute("EXPLAIN QUERY PLAN " + candidate, bind(params, facts, True)):
                print(f"    {line[3]}")
        trigger_cost(conn)
        conn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
