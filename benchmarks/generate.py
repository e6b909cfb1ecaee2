"""Build a realistic benchmark catalog directly in SQLite: the rows the service's own write
path would produce (same tables, same column formats), a million images in minutes.

The schema comes from the project's migrations (``edgecatalog.db.migrate``); rows are then
bulk-inserted with ``executemany`` in one transaction with journalling off, the secondary
indexes and the triggers of the declared count tables and of the search index dropped during
the load (the class-count trigger probes an index the load has dropped), the indexes
re-created from their own stored SQL, the counts and the search index rebuilt and their
triggers re-created by the engine from the same declaration the migrations install
(``edgecatalog.listing.counts``), and WAL restored at the end, so the file the service opens
is the same as one it grew itself.

Filenames look like ``cam07/2026-11-03/cam07_20261103_141502_000123.jpg``. The catalog keeps
bare names (the upload path has no folders), so the folder part goes where a capture-folder
image keeps it: ``storage_key`` (relative to its ``FileRoot``, the capture folder), while
``filename`` is the bare name. A few images (``source = 'upload'``) live under the data
folder's ``images/`` root instead, their ``storage_key`` ``raw-data/<uuid>_<filename>`` as for an
upload.

Usage: ``python benchmarks/generate.py --images 100000 --out /tmp/ec-100k``. The output folder
is a complete data folder (``catalog.db``, ``captures/``, ``images/``) for ``storage.data_dir``.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import catalog_spec as spec

from edgecatalog import db
from edgecatalog.catalog import NewAnnotation, annotation_columns, idempotency_key
from edgecatalog.engines import current as engine
from edgecatalog.listing.counts import COUNT_TABLES

BULK_TABLES = ("image", "annotation", "outbox", "capture_file")
CHUNK = 20_000


def list_triggers() -> dict[str, list[str]]:
    """Every trigger that keeps a count table, the class sets, the zones or the search index:
    name -> the statements that create it."""
    triggers = dict(engine().search_index_triggers())
    triggers.update(engine().class_set_triggers())
    triggers.update(engine().confidence_triggers())
    triggers.update(engine().zone_triggers())
    for table in COUNT_TABLES:
        triggers.update(engine().count_triggers(table))
    return triggers


def migrate_schema(db_path: Path) -> None:
    """Create the real schema through the project's own migration runner."""
    database = db.init_database(db_path)
    db.migrate(database)
    database.close()


def open_bulk(db_path: Path) -> tuple[sqlite3.Connection, list[str]]:
    """A connection tuned for a one-off load; returns it and the index SQL it dropped."""
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    # Generation only: a crash here just means running the generator again.
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    marks = ",".join("?" * len(BULK_TABLES))
    indexes = [
        row[0]
        for row in conn.execute(
            f"SELECT sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "
            f"AND tbl_name IN ({marks})",
            BULK_TABLES,
        )
    ]
    names = [
        row[0]
        for row in conn.execute(
            f"SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "
            f"AND tbl_name IN ({marks})",
            BULK_TABLES,
        )
    ]
    for name in names:
        conn.execute(f'DROP INDEX "{name}"')
    for name in list_triggers():
        conn.execute(engine().drop_trigger(name))
    return conn, indexes


def finish_bulk(conn: sqlite3.Connection, indexes: list[str]) -> None:
    for sql in indexes:
        conn.execute(sql)
    conn.execute("BEGIN")
    for sql in engine().class_set_backfill():  # the class sets first: counted by them
        conn.execute(sql)
    for sql in engine().confidence_backfill():  # likewise the confidence bits
        conn.execute(sql)
    for table in COUNT_TABLES:
        for sql in engine().backfill(table):
            conn.execute(sql)
    for sql in engine().search_index_backfill():
        conn.execute(sql)
    for sql in engine().zone_backfill():
        conn.execute(sql)
    for statements in list_triggers().values():
        for sql in statements:
            conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")  # back to what the service runs with
    conn.close()


def insert(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list) -> None:
    if rows:
        marks = ",".join("?" * len(columns))
        conn.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)


def annotation_row(
    rng: random.Random,
    ann_id: int,
    image_id: int,
    cls: str,
    z: int,
    size: tuple[int, int],
    manual: bool,
    at: int,
) -> tuple:
    """One annotation, stored through the write path's own column builder."""
    w, h = rng.uniform(0.02, 0.3), rng.uniform(0.02, 0.3)
    xc, yc = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
    if rng.random() < 0.1:
        pts = [xc - w / 2, yc, xc, yc - h / 2, xc + w / 2, yc, xc, yc + h / 2]
        new = NewAnnotation(
            cls,
            "polygon",
            pts,
            None if manual else round(rng.uniform(0.25, 0.99), 3),
            z,
            "manual" if manual else "model",
        )
    else:
        new = NewAnnotation(
            cls,
            "bbox",
            [xc, yc, w, h],
            None if manual else round(rng.uniform(0.25, 0.99), 3),
            z,
            "manual" if manual else "model",
        )
    c = annotation_columns(new, *size)
    return (
        ann_id,
        image_id,
        c["class_value"],
        c["type"],
        c["geometry"],
        c["x_center"],
        c["y_center"],
        c["width"],
        c["height"],
        c["confidence"],
        c["source"],
        c["z_order"],
        at,
        at,
    )


def outbox_row(image: tuple, device_id: str) -> tuple | None:
    """The upload row add_image queues; synced images have had theirs removed by the worker."""
    state = image[spec.IMG_COL["sync_state"]]
    if state not in ("pending", "quarantined"):
        return None
    sha, size, at = (
        image[spec.IMG_COL["sha256"]],
        image[spec.IMG_COL["byte_size"]],
        image[spec.IMG_COL["created_at"]],
    )
    quarantined = state == "quarantined"
    return (
        image[0],
        "upload",
        idempotency_key(device_id, sha),
        "{}",
        "quarantined" if quarantined else "pending",
        10 if quarantined else 0,
        0,
        422 if quarantined else None,
        "upstream rejected the upload: 422 VALIDATION_ERROR" if quarantined else "",
        size,
        at,
        at,
    )


def capture_file_row(image: tuple) -> tuple | None:
    """The bookkeeping row the capture folder keeps for a file it took (migration 0003)."""
    if image[spec.IMG_COL["source"]] != "capture":
        return None
    return (
        spec.CAPTURE_ROOT_ID,
        image[spec.IMG_COL["storage_key"]],
        "image",
        image[0],
        image[spec.IMG_COL["byte_size"]],
        image[spec.IMG_COL["captured_at"]] * 1000,
        image[spec.IMG_COL["created_at"]],
    )


def write_reference_rows(conn: sqlite3.Connection, plan: spec.Plan, out: Path) -> None:
    insert(
        conn, "project", ("id", "name", "description", "created_at", "updated_at"), plan.projects
    )
    insert(conn, "device", ("id", "device_id", "name", "created_at"), plan.devices)
    insert(
        conn, "dataset_version", ("id", "project_id", "version_name", "created_at"), plan.versions
    )
    insert(
        conn,
        "file_root",
        ("id", "path"),
        [
            (spec.CAPTURE_ROOT_ID, str((out / "captures").resolve())),
            (spec.UPLOAD_ROOT_ID, str((out / "images").resolve())),
        ],
    )


def write_images(
    conn: sqlite3.Connection, plan: spec.Plan, rng: random.Random, out: Path, real_files: set[int]
) -> tuple[int, int]:
    """Images, their annotations and outbox rows, in id (arrival) order; returns counts."""
    images, anns, outbox, captured = [], [], [], []
    has_capture_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='capture_file'"
    ).fetchone()
    ann_id, n_images = 0, 0
    for image, ann_plan in spec.iter_images(plan, rng):
        if image[0] in real_files:
            image = spec.with_real_file(image, out)
        images.append(image)
        size = (image[spec.IMG_COL["width"]], image[spec.IMG_COL["height"]])
        manual = image[spec.IMG_COL["annotation_status"]] == "completed" and rng.random() < 0.2
        for z, cls in enumerate(ann_plan):
            ann_id += 1
            anns.append(
                annotation_row(
                    rng, ann_id, image[0], cls, z, size, manual, image[spec.IMG_COL["created_at"]]
                )
            )
        row = outbox_row(image, plan.devices[image[spec.IMG_COL["device_id"]] - 1][1])
        if row is not None:
            outbox.append(row)
        capture = capture_file_row(image) if has_capture_table else None
        if capture is not None:
            captured.append(capture)
        n_images += 1
        if len(images) >= CHUNK:
            flush(conn, images, anns, outbox, captured)
    flush(conn, images, anns, outbox, captured)
    return n_images, ann_id


def flush(conn: sqlite3.Connection, images: list, anns: list, outbox: list, captured: list) -> None:
    insert(conn, "image", spec.IMAGE_COLUMNS, images)
    insert(conn, "annotation", spec.ANNOTATION_COLUMNS, anns)
    insert(conn, "outbox", spec.OUTBOX_COLUMNS, outbox)
    insert(conn, "capture_file", spec.CAPTURE_FILE_COLUMNS, captured)
    for chunk in (images, anns, outbox, captured):
        chunk.clear()


def generate(
    out: Path, n_images: int, seed: int = 7, n_real_files: int = 5, log=lambda msg: None
) -> dict:
    """Build the catalog in ``out``; returns a summary (counts, seconds, bytes)."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "catalog.db"
    if db_path.exists():
        raise SystemExit(f"generate: {db_path} exists; give a new --out folder")
    migrate_schema(db_path)
    rng = random.Random(seed)
    plan = spec.make_plan(n_images, rng)
    real_files = spec.real_file_ids(n_images, n_real_files)
    conn, indexes = open_bulk(db_path)
    conn.execute("BEGIN")
    write_reference_rows(conn, plan, out)
    n, n_ann = write_images(conn, plan, rng, out, real_files)
    # Batches last: their image counts and open/close times come from the images written.
    batches = spec.batch_rows(plan)
    insert(conn, "batch", spec.BATCH_COLUMNS, batches)
    conn.execute("COMMIT")
    log(f"rows written in {time.monotonic() - started:.1f} s; building indexes")
    finish_bulk(conn, indexes)
    size = db_path.stat().st_size
    return {
        "images": n,
        "annotations": n_ann,
        "batches": len(batches),
        "devices": len(plan.devices),
        "real_files": sorted(real_files),
        "seconds": round(time.monotonic() - started, 1),
        "db_bytes": size,
        "bytes_per_image": round(size / max(n, 1), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--images",
        type=int,
        default=1_000_000,
        help="number of images (default 1,000,000; 100,000 for quick runs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="new data folder to create (keep it outside the repo)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--files", type=int, default=5, help="real ~200 KB files to write")
    args = parser.parse_args(argv)
    if args.images < 100:
        parser.error("--images must be at least 100")
    summary = generate(
        args.out,
        args.images,
        args.seed,
        args.files,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    # The query benchmark reads which images have real files from here.
    (args.out / "generate.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
