"""Totals over several classes on a catalog from ``benchmarks/generate.py``: 54 queries made
from the catalog itself (2, 3 and 5 classes: the most common, the rarest, and the most common
with rare ones; each alone and with a device, a status, a project, no project, and a split
with a sync state), each run 7 times in-process through ``listing.select_images`` (the list's
whole read path: plan, total, page), its total checked against a recount by plain SQL.

    .venv/bin/python benchmarks/class_union.py /tmp/ec-1m/catalog.db

Prints the ten slowest (p50, and the 6th of 7 runs as p95) and the median p50 over all, and
exits 1 when a total differs from its recount.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from edgecatalog import db, listing
from edgecatalog.models import database

RUNS = 7


def cases(top: list[str], project_id: int) -> list[tuple[str, dict[str, str]]]:
    out = []
    for k in (2, 3, 5):
        for label, classes in (
            ("common", top[:k]),
            ("rare", top[-k:]),
            ("mixed", [top[0], *top[-(k - 1) :]]),
        ):
            cv = ",".join(classes)
            out += [
                (f"{k} {label}", {"class_values": cv}),
                (f"{k} {label}+device", {"class_values": cv, "device_id": "cam07"}),
                (f"{k} {label}+status", {"class_values": cv, "annotation_status": "completed"}),
                (f"{k} {label}+project", {"class_values": cv, "project_id": str(project_id)}),
                (f"{k} {label}+project null", {"class_values": cv, "project_id": "null"}),
                (
                    f"{k} {label}+split+sync",
                    {"class_values": cv, "split": "val", "sync_state": "synced"},
                ),
            ]
    return out


def recount(q: dict[str, str]) -> int:
    """The total by plain SQL: images with any of the classes and every other filter."""
    classes = q["class_values"].split(",")
    sql = (
        "SELECT count(*) FROM image i WHERE EXISTS (SELECT 1 FROM annotation a WHERE "
        f"a.image_id = i.id AND a.class_value IN ({','.join('?' * len(classes))}))"
    )
    args: list = list(classes)
    if "device_id" in q:
        sql += " AND i.device_id = (SELECT id FROM device WHERE device_id = ?)"
        args.append(q["device_id"])
    if "annotation_status" in q:
        sql += " AND i.annotation_status = ?"
        args.append(q["annotation_status"])
    if q.get("project_id") == "null":
        sql += " AND i.batch_id IN (SELECT id FROM batch WHERE project_id IS NULL)"
    elif "project_id" in q:
        sql += " AND i.batch_id IN (SELECT id FROM batch WHERE project_id = ?)"
        args.append(int(q["project_id"]))
    if "split" in q:
        sql += " AND i.split = ? AND i.sync_state = ?"
        args += [q["split"], q["sync_state"]]
    return database.execute_sql(sql, args).fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("catalog", type=Path, help="catalog.db of benchmarks/generate.py")
    args = parser.parse_args()
    db.init_database(args.catalog)
    database.connect(reuse_if_open=True)
    top = [
        r[0]
        for r in database.execute_sql(
            "SELECT class_value FROM image_class_count ORDER BY n DESC"
        ).fetchall()
    ]
    (project_id,) = database.execute_sql("SELECT min(id) FROM project").fetchone()
    rows, wrong = [], 0
    for name, q in cases(top, project_id):
        query = listing.parse_image_query(q, max_class_values=50, max_chars=1000)
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            page = listing.select_images(query)
            times.append((time.perf_counter() - started) * 1000)
        want = recount(q)
        wrong += want != page.total
        rows.append((sorted(times)[RUNS - 2], name, statistics.median(times), page.total, want))
    for p95, name, p50, total, want in sorted(rows, reverse=True)[:10]:
        print(f"{name:<30} p50 {p50:6.1f}  p95 {p95:6.1f} ms  total {total} (recount {want})")
    print(
        f"{len(rows)} queries, median p50 {statistics.median(r[2] for r in rows):.1f} ms, "
        f"totals that differ from the recount: {wrong}"
    )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
