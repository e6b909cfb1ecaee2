"""The floor: the least a Python server can do to answer the benchmark's queries.

A bare WSGI callable on waitress running hand-written SQL with the ``sqlite3`` module (one
long-lived connection per waitress thread), returning the same JSON envelope and field names
as ``GET /data/images`` and the bytes for ``GET /files/<id>``. No framework, no ORM, no auth,
no validation beyond what the matrix needs: it measures what SQLite plus waitress cost, so the
service's overhead can be read as a ratio to it.

With ``--same-sql`` the list is answered by the service's own query layer
(``listing.select_images``: the same statements, through peewee's thin ``execute_sql``) instead
of the floor's naive SQL, so the ratio then isolates what Flask, auth, the envelope and the
serializer cost on top of identical SQL work; without it, the floor's plain ``COUNT(*)`` and
joined ``ORDER BY ... LIMIT`` show what the tuned SQL saves.

Usage: ``python benchmarks/floor_app.py --db DATA/catalog.db --port 8091 [--same-sql]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

ROW_SQL = """SELECT i.id, i.filename, i.storage_key, i.width, i.height, d.device_id, i.batch_id,
 b.name, p.name, i.annotation_status, i.split, i.split_locked, v.version_name, i.created_at,
 i.updated_at, i.sync_state, i.synced_at, i.pinned
 FROM image i JOIN device d ON d.id = i.device_id JOIN batch b ON b.id = i.batch_id
 LEFT JOIN project p ON p.id = b.project_id LEFT JOIN dataset_version v ON v.id = i.version_id"""
ANN_SQL = """SELECT id, image_id, class_value, type, geometry, x_center, y_center, width, height,
 confidence, source, z_order, created_at, updated_at FROM annotation WHERE image_id IN ({})
 ORDER BY image_id, z_order, id"""
IMAGE_KEYS = (
    "id",
    "filename",
    "storage_key",
    "width",
    "height",
    "device_id",
    "batch_id",
    "batch_name",
    "project_name",
    "annotation_status",
    "split",
    "split_locked",
    "version_name",
    "created_at",
    "updated_at",
    "sync_state",
    "synced_at",
    "pinned",
)
ANN_KEYS = (
    "id",
    "image_id",
    "class_value",
    "type",
    "geometry",
    "x_center",
    "y_center",
    "width",
    "height",
    "confidence",
    "source",
    "z_order",
    "created_at",
    "updated_at",
)
SORTS = ("created_at", "updated_at", "filename")
_local = threading.local()
_FILE_ROUTE = re.compile(r"^/files/(\d+)$")


def fmt_ts(us: int | None) -> str:
    if us is None:
        return ""
    seconds, micros = divmod(us, 1_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{micros:06d}Z" if micros else f"{stamp}Z"


def connection(db_path: str, cache_kb: int = 2_000) -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(db_path, check_same_thread=False)
        # Default: the same per-connection page cache as the service (db.PRAGMAS).
        conn.execute(f"PRAGMA cache_size=-{int(cache_kb)}")
        _local.conn = conn
    return conn


def where_clause(q: dict[str, str]) -> tuple[str, list]:
    parts, args = [], []
    simple = {
        "batch_id": "i.batch_id = ?",
        "annotation_status": "i.annotation_status = ?",
        "filename": "i.filename = ?",
        "sync_state": "i.sync_state = ?",
    }
    for name, sql in simple.items():
        if name in q:
            parts.append(sql)
            args.append(q[name])
    if q.get("split", "all") != "all":
        parts.append("i.split = ?")
        args.append(q["split"])
    if "device_id" in q:
        parts.append("i.device_id = (SELECT id FROM device WHERE device_id = ?)")
        args.append(q["device_id"])
    if "class_values" in q:
        values = [v for v in q["class_values"].split(",") if v]
        marks = ",".join("?" * len(values))
        parts.append(f"i.id IN (SELECT image_id FROM annotation WHERE class_value IN ({marks}))")
        args += values
    # The review queues: one annotation in the confidence range; no annotation at all; pinned.
    if "min_confidence" in q or "max_confidence" in q:
        parts.append(
            "i.id IN (SELECT image_id FROM annotation WHERE confidence >= ? AND confidence <= ?)"
        )
        args += [float(q.get("min_confidence", 0)), float(q.get("max_confidence", 1))]
    if "has_annotations" in q:
        no = "NOT " if q["has_annotations"] in ("false", "0") else ""
        parts.append(f"{no}EXISTS (SELECT 1 FROM annotation a WHERE a.image_id = i.id)")
    if "pinned" in q:
        parts.append("i.pinned = ?")
        args.append(1 if q["pinned"] in ("true", "1") else 0)
    if "search" in q:
        term = q["search"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        parts.append("i.filename LIKE ? ESCAPE '\\'")
        args.append(f"%{term}%")
    # The time ranges as the matrix gives them: epoch milliseconds.
    for name, sql in (
        ("captured_after", "i.captured_at >= ?"),
        ("captured_before", "i.captured_at < ?"),
        ("created_after", "i.created_at >= ?"),
        ("created_before", "i.created_at < ?"),
    ):
        if name in q:
            parts.append(sql)
            args.append(int(q[name]) * 1000)
    if "project_id" in q:
        project = "project_id IS NULL" if q["project_id"] == "null" else "project_id = ?"
        args += [] if q["project_id"] == "null" else [int(q["project_id"])]
        stage = " AND stage = ?" if "stage" in q else ""
        args += [q["stage"]] if "stage" in q else []
        parts.append(f"i.batch_id IN (SELECT id FROM batch WHERE {project}{stage})")
    return (" WHERE " + " AND ".join(parts)) if parts else "", args


def list_images(conn: sqlite3.Connection, q: dict[str, str]) -> dict:
    where, args = where_clause(q)
    total = conn.execute(f"SELECT count(*) FROM image i{where}", args).fetchone()[0]
    sort = q.get("sort", "created_at") if q.get("sort") in SORTS else "created_at"
    order = "ASC" if q.get("order") == "asc" else "DESC"
    limit, offset = min(int(q.get("limit", 50)), 100), int(q.get("offset", 0))
    sql = f"{ROW_SQL}{where} ORDER BY i.{sort} {order}, i.id {order} LIMIT ? OFFSET ?"
    data = []
    for row in conn.execute(sql, args + [limit, offset]):
        item = dict(zip(IMAGE_KEYS, row))
        item["batch_name"], item["project_name"] = (
            item["batch_name"] or "",
            item["project_name"] or "",
        )
        item["version_name"] = item["version_name"] or ""
        item["split_locked"] = bool(item["split_locked"])
        item["pinned"] = bool(item["pinned"])
        for key in ("created_at", "updated_at", "synced_at"):
            item[key] = fmt_ts(item[key])
        data.append(item)
    if q.get("include_annotations") in ("true", "1") and data:
        attach_annotations(conn, data)
    meta = {"count": len(data), "limit": limit, "offset": offset, "total": total}
    return {"success": True, "data": data, "meta": meta}


def attach_annotations(conn: sqlite3.Connection, data: list[dict]) -> None:
    by_image: dict[int, list] = {item["id"]: [] for item in data}
    for row in conn.execute(ANN_SQL.format(",".join("?" * len(by_image))), list(by_image)):
        ann = dict(zip(ANN_KEYS, row))
        ann["geometry"] = json.loads(ann["geometry"])
        ann["created_at"], ann["updated_at"] = fmt_ts(ann["created_at"]), fmt_ts(ann["updated_at"])
        by_image[ann["image_id"]].append(ann)
    for item in data:
        item["annotations"] = by_image[item["id"]]


def send_file(conn: sqlite3.Connection, image_id: int, environ: dict, start_response):
    row = conn.execute(
        "SELECT r.path, i.storage_key FROM image i JOIN file_root r ON r.id = i.root_id WHERE i.id = ?",
        (image_id,),
    ).fetchone()
    if row is None:
        return respond(start_response, "404 Not Found", {"success": False})
    # Closed by the WSGI server through the file wrapper once the body is sent.
    handle = open(os.path.join(row[0], row[1]), "rb")  # noqa: SIM115
    size = os.fstat(handle.fileno()).st_size
    start_response("200 OK", [("Content-Type", "image/jpeg"), ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    return wrapper(handle, 65536) if wrapper else iter(lambda: handle.read(65536), b"")


def respond(start_response, status: str, body: dict) -> list[bytes]:
    raw = json.dumps(body, separators=(",", ":")).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(raw)))]
    )
    return [raw]


def list_images_same_sql(q: dict[str, str]) -> dict:
    """The service's own statements (``listing.select_images``), the floor's plain JSON."""
    from werkzeug.datastructures import MultiDict

    from edgecatalog import listing
    from edgecatalog.models import database

    database.connect(reuse_if_open=True)  # one long-lived connection per waitress thread
    page = listing.select_images(listing.parse_image_query(MultiDict(q)))
    data = []
    for row in page.items():
        item = {key: row.get(key) for key in IMAGE_KEYS if key in row}
        item["batch_id"] = row["batch"]
        for key in ("created_at", "updated_at", "synced_at"):
            item[key] = fmt_ts(row[key])
        if "annotations" in row:
            item["annotations"] = [
                dict(
                    a,
                    geometry=json.loads(a["geometry"]),
                    created_at=fmt_ts(a["created_at"]),
                    updated_at=fmt_ts(a["updated_at"]),
                )
                for a in row["annotations"]
            ]
        data.append(item)
    meta = {"count": len(data), "limit": page.limit, "offset": page.offset, "total": page.total}
    return {"success": True, "data": data, "meta": meta}


def make_app(db_path: str, cache_kb: int = 2_000, same_sql: bool = False):
    if same_sql:
        from edgecatalog import db

        db.init_database(Path(db_path))

    def app(environ, start_response):
        conn = connection(db_path, cache_kb)
        path = environ.get("PATH_INFO", "")
        if path == "/data/images":
            q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            body = list_images_same_sql(q) if same_sql else list_images(conn, q)
            return respond(start_response, "200 OK", body)
        match = _FILE_ROUTE.match(path)
        if match:
            return send_file(conn, int(match.group(1)), environ, start_response)
        return respond(start_response, "404 Not Found", {"success": False})

    return app


def main() -> None:
    import waitress

    parser = argparse.ArgumentParser(description="the benchmark's floor server")
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--cache-kb", type=int, default=2_000, help="page cache per connection")
    parser.add_argument(
        "--same-sql", action="store_true", help="answer the list with the service's own query layer"
    )
    args = parser.parse_args()
    waitress.serve(
        make_app(args.db, args.cache_kb, args.same_sql),
        host="127.0.0.1",
        port=args.port,
        threads=args.threads,
        ident="floor",
        _quiet=True,
    )


if __name__ == "__main__":
    main()
