"""The adversarial query matrix: the hard cases of the list, found from the catalog itself.

``matrix.py`` asks what a typical reviewer asks. This one asks what makes a plan slow, with
every value measured on the catalog it runs against (by selectivity and position in time),
not picked by hand:

- ``search`` terms from one row to a third of the catalog, clustered in time (a minute, an
  hour, a day, ten days; taken at the newest, the middle and the oldest end of the catalog, so
  a walk from either end of the sort order meets them late) and spread over time (a device's
  prefix, a tenth of the devices, one time of day), and a term that matches nothing; each
  with every sort, and the clustered ones with other filters (a device, a split, a status, a
  batch, a class);
- ``class_values`` with 2, 3 and 5 classes at high and low overlap (the pairs that share the
  most and the fewest images, by the catalog's class sets), alone and with other filters;
- every filter of the standard matrix with ``sort=updated_at`` and ``filename``, ``asc`` and
  ``desc``, and ``created_at asc``;
- ``offset`` 1,000, 10,000 and 100,000 under several filters;
- ``include_annotations`` on 100 images carrying 100 annotations each (``ensure_heavy`` adds
  them once through plain SQL with the catalog's triggers on, under device ``heavy01``: a
  generated catalog has exactly three per image).

Time-range and review-queue filters join the matrix when the list has them. Every case runs
through ``queries.py --matrix adversarial``, which checks each answer against the floor's
plain ``COUNT(*)`` and ``ORDER BY ... LIMIT/OFFSET`` on the same file.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from matrix import NO_OFFSET, Case, Facts, read_facts_on

HEAVY_DEVICE, HEAVY_IMAGES, HEAVY_ANNOTATIONS = "heavy01", 100, 100
SORTS = (
    ("created_at", "asc"),
    ("updated_at", "desc"),
    ("updated_at", "asc"),
    ("filename", "asc"),
    ("filename", "desc"),
)


class Db:
    """A connection the matrix reads (and ``ensure_heavy`` writes) through, on either engine:
    ``?`` placeholders, and on PostgreSQL ``ILIKE`` where the SQL says ``LIKE``, as the
    service searches there (case-insensitive, as SQLite's LIKE is for ASCII)."""

    def __init__(self, conn, engine: str = "sqlite") -> None:
        self.conn, self.engine = conn, engine

    def execute(self, sql: str, args=()):
        if self.engine == "postgres":
            sql = sql.replace("%", "%%").replace("?", "%s").replace(" LIKE ", " ILIKE ")
        return self.conn.execute(sql, args)

    def commit(self) -> None:
        self.conn.commit()

    def writable_columns(self, table: str) -> list[str]:
        """The table's columns in order, without the generated ones (captured_hour)."""
        if self.engine == "postgres":
            generated = {
                r[0]
                for r in self.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = ? AND is_generated = 'ALWAYS'",
                    (table,),
                )
            }
            names = [d[0] for d in self.execute(f"SELECT * FROM {table} LIMIT 0").description]
            return [n for n in names if n not in generated]
        # table_xinfo's hidden 2 and 3 are generated columns.
        return [r[1] for r in self.execute(f"PRAGMA table_xinfo({table})") if r[6] not in (2, 3)]

    def insert_id(self, sql: str, args=()) -> int:
        """Run an INSERT of one row; its new id."""
        if self.engine == "postgres":
            return self.execute(sql + " RETURNING id", args).fetchone()[0]
        return self.execute(sql, args).lastrowid


def ensure_heavy(db: Db) -> None:
    """Give the catalog ``HEAVY_IMAGES`` images with ``HEAVY_ANNOTATIONS`` annotations each,
    copied from existing rows (new names and hashes) with every trigger on, so the count
    tables, class sets and the search index keep them. Does nothing when they are there."""
    if db.execute("SELECT 1 FROM device WHERE device_id = ?", (HEAVY_DEVICE,)).fetchone():
        return
    template = db.execute("SELECT * FROM device ORDER BY id LIMIT 1").fetchone()
    names = [d[0] for d in db.execute("SELECT * FROM device LIMIT 0").description]
    row = dict(zip(names, template))
    row.pop("id")
    row["device_id"] = HEAVY_DEVICE
    device_pk = db.insert_id(
        f"INSERT INTO device ({','.join(row)}) VALUES ({','.join('?' * len(row))})",
        list(row.values()),
    )
    columns = [c for c in db.writable_columns("image") if c not in ("id", "class_set_id")]
    base = db.execute("SELECT max(id) FROM image").fetchone()[0]
    classes = [r[0] for r in db.execute("SELECT DISTINCT class_value FROM annotation LIMIT 40")]
    ann_cols = [
        c
        for c in db.writable_columns("annotation")
        if c not in ("id", "image_id", "class_value", "z_order")
    ]
    for i in range(HEAVY_IMAGES):
        source = base - i  # recent images: their batch is the newest
        select = [
            {
                "filename": f"'{HEAVY_DEVICE}_' || filename",
                "sha256": f"'{HEAVY_DEVICE}{i:04d}' || substr(sha256, 12)",
                "device_id": str(device_pk),
                "storage_key": f"'{HEAVY_DEVICE}/' || storage_key",
            }.get(c, c)
            for c in columns
        ]
        image_id = db.insert_id(
            f"INSERT INTO image ({','.join(columns)}) SELECT {','.join(select)} "
            "FROM image WHERE id = ?",
            (source,),
        )
        (ann_id,) = db.execute(
            "SELECT min(id) FROM annotation WHERE image_id = ?", (source,)
        ).fetchone()
        for k in range(HEAVY_ANNOTATIONS):
            db.execute(
                f"INSERT INTO annotation (image_id, class_value, z_order, {','.join(ann_cols)}) "
                f"SELECT ?, ?, ?, {','.join(ann_cols)} FROM annotation WHERE id = ?",
                (image_id, classes[k % len(classes)], k, ann_id),
            )
    db.commit()


def _count(conn: Db, term: str) -> int:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return conn.execute(
        "SELECT count(*) FROM image WHERE filename LIKE ? ESCAPE '\\'", (f"%{escaped}%",)
    ).fetchone()[0]


def search_terms(conn: Db) -> list[tuple[str, str, int]]:
    """(label, term, matches): terms by selectivity and position in time. Names look like
    ``cam07_20261113_141502_000123.jpg`` (device, capture day, time, per-device number)."""
    (top,) = conn.execute("SELECT max(id) FROM image WHERE filename LIKE 'cam%'").fetchone()
    picked: list[tuple[str, str]] = []

    def name_at(share: float) -> str:
        (name,) = conn.execute(
            "SELECT filename FROM image WHERE id >= ? AND filename LIKE 'cam%' ORDER BY id LIMIT 1",
            (max(1, int(top * share)),),
        ).fetchone()
        return name

    picked.append(("1 row", name_at(0.5)))
    for where, share in (("newest", 0.995), ("middle", 0.5), ("oldest", 0.005)):
        stamp = name_at(share).split("_", 1)[1]  # 20261113_141502_000123.jpg
        picked += [
            (f"minute {where}", stamp[:13]),
            (f"hour {where}", stamp[:11]),
            (f"day {where}", stamp[:8]),
            (f"ten days {where}", stamp[:7]),
        ]
    device = name_at(0.5).split("_", 1)[0]  # cam07 (cam042 in a site catalog)
    picked += [
        ("device prefix (spread)", f"{device}_"),
        # cam0: cam00-cam09 of ~30 devices; cam04: cam040-cam049 of a site's 200
        ("tenth of devices (spread)", device[: max(4, len(device) - 1)]),
        ("time of day (spread)", "_" + name_at(0.5).split("_")[2][:4]),
        ("nothing", "zqzqzq"),
    ]
    measured, seen = [], set()
    for label, term in picked:
        if term not in seen:  # "ten days" of two positions can be the same term
            seen.add(term)
            measured.append((label, term, _count(conn, term)))
    return measured


def class_groups(conn: Db) -> list[tuple[str, list[str]]]:
    """2, 3 and 5 classes at high overlap (the classes that share the most images with the
    most common one) and low overlap (the fewest), from the class-set counts."""
    pairs: dict[str, int] = {}
    (top,) = conn.execute(
        "SELECT class_value FROM image_class_count ORDER BY n DESC LIMIT 1"
    ).fetchone()
    for value, shared in conn.execute(
        "SELECT m2.class_value, sum(t.n) FROM image_set_total t "
        "JOIN class_set_member m1 ON m1.set_id = t.class_set_id AND m1.class_value = ? "
        "JOIN class_set_member m2 ON m2.set_id = t.class_set_id AND m2.class_value != ? "
        "GROUP BY m2.class_value",
        (top, top),
    ):
        pairs[value] = shared
    by_overlap = sorted(pairs, key=lambda v: (-pairs[v], v))
    out = []
    for k in (2, 3, 5):
        out.append((f"{k} classes high overlap", [top, *by_overlap[: k - 1]]))
        out.append((f"{k} classes low overlap", [top, *by_overlap[-(k - 1) :]]))
    return out


def _quote(term: str) -> str:
    return term.replace("'", "''")


def cases(db_path: Path) -> list[Case]:
    """The matrix of a SQLite catalog file."""
    conn = sqlite3.connect(db_path, timeout=60)
    try:
        return cases_on(Db(conn))
    finally:
        conn.close()


def cases_on(db: Db) -> list[Case]:
    """The matrix of the catalog ``db`` reads (either engine), its heavy images added first."""
    ensure_heavy(db)
    facts: Facts = read_facts_on(db)
    terms = search_terms(db)
    groups = class_groups(db)
    (mid_batch,) = db.execute(
        "SELECT batch_id FROM image WHERE id = (SELECT max(id) / 2 FROM image)"
    ).fetchone()
    out: list[Case] = []

    def add(name: str, params: dict[str, str], datasette: dict[str, str] | None, note=""):
        out.append(Case(name, params, datasette, note))

    ds_sort = {"_sort_desc": "created_at"}
    # Search: every term with the default sort and the others.
    for label, term, n in terms:
        name = f"search {label} ({n})"
        ds = {"filename__contains": term}
        add(name, {"search": term}, {**ds, **ds_sort}, "Datasette: '_' is a wildcard")
        for sort, order in SORTS:
            key = "_sort" if order == "asc" else "_sort_desc"
            add(
                f"{name} {sort} {order}",
                {"search": term, "sort": sort, "order": order},
                {**ds, key: sort},
                "Datasette: '_' is a wildcard",
            )
    # Clustered terms with other filters.
    class_where = "id in (select image_id from annotation where class_value in ({}))"
    others = {
        "device": ({"device_id": facts.device_id}, {"device_id": str(facts.device_pk)}),
        "split": ({"split": "val"}, {"split": "val"}),
        "status": ({"annotation_status": "in_progress"}, {"annotation_status": "in_progress"}),
        "batch": ({"batch_id": str(mid_batch)}, {"batch_id": str(mid_batch)}),
        "class": (
            {"class_values": facts.common_class},
            {"_where": class_where.format(f"'{facts.common_class}'")},
        ),
    }
    for label, term, n in terms:
        if not label.startswith(("day", "ten days", "tenth", "hour middle")):
            continue
        for other, (params, ds) in others.items():
            add(
                f"search {label} ({n}) + {other}",
                {"search": term, **params},
                {"filename__contains": term, **ds, **ds_sort},
            )
    # Several classes.
    for label, classes in groups:
        values = ",".join(classes)
        where = class_where.format(",".join(f"'{_quote(c)}'" for c in classes))
        add(label, {"class_values": values}, {"_where": where, **ds_sort}, "via _where")
        add(
            f"{label} + device",
            {"class_values": values, "device_id": facts.device_id},
            {"_where": where, "device_id": str(facts.device_pk), **ds_sort},
            "via _where",
        )
        add(
            f"{label} + status",
            {"class_values": values, "annotation_status": "completed"},
            {"_where": where, "annotation_status": "completed", **ds_sort},
            "via _where",
        )
    day_term = next(t for label, t, _ in terms if label == "day middle")
    add(
        "class common + search day middle",
        {"class_values": facts.common_class, "search": day_term},
        {
            "_where": class_where.format(f"'{facts.common_class}'"),
            "filename__contains": day_term,
            **ds_sort,
        },
    )
    add(
        "class rare + search day middle",
        {"class_values": facts.rare_class, "search": day_term},
        {
            "_where": class_where.format(f"'{facts.rare_class}'"),
            "filename__contains": day_term,
            **ds_sort,
        },
    )
    # Every filter of the standard matrix with every other sort.
    project_where = "batch_id in (select id from batch where project_id {})"
    filters = {
        "project_id": (
            {"project_id": str(facts.project_id)},
            {"_where": project_where.format(f"= {facts.project_id}")},
        ),
        "project_id=null": ({"project_id": "null"}, {"_where": project_where.format("is null")}),
        "batch_id": ({"batch_id": str(facts.batch_id)}, {"batch_id": str(facts.batch_id)}),
        "device_id": ({"device_id": facts.device_id}, {"device_id": str(facts.device_pk)}),
        "annotation_status": (
            {"annotation_status": "in_progress"},
            {"annotation_status": "in_progress"},
        ),
        "split": ({"split": "val"}, {"split": "val"}),
        "sync_state rare": ({"sync_state": "quarantined"}, {"sync_state": "quarantined"}),
        "filename exact": ({"filename": facts.filename}, {"filename": facts.filename}),
        "class rare": (
            {"class_values": facts.rare_class},
            {"_where": class_where.format(f"'{facts.rare_class}'")},
        ),
        "class common": (
            {"class_values": facts.common_class},
            {"_where": class_where.format(f"'{facts.common_class}'")},
        ),
    }
    for label, (params, ds) in filters.items():
        for sort, order in SORTS:
            key = "_sort" if order == "asc" else "_sort_desc"
            add(
                f"{label} {sort} {order}",
                {**params, "sort": sort, "order": order},
                {**ds, key: sort},
            )
    # Deep offsets.
    for label, params in (
        ("no filter", {}),
        ("device_id", {"device_id": facts.device_id}),
        ("class common", {"class_values": facts.common_class}),
        ("split", {"split": "val"}),
        ("search tenth of devices", {"search": next(t for lb, t, _ in terms if "tenth" in lb)}),
    ):
        for offset in (1000, 10000, 100000):
            add(f"{label} offset {offset}", {**params, "offset": str(offset)}, None, NO_OFFSET)
    add(
        f"annotations: 100 images x {HEAVY_ANNOTATIONS}",
        {"device_id": HEAVY_DEVICE, "include_annotations": "true", "limit": "100"},
        None,
        "no nested annotations in Datasette's table JSON",
    )
    return out


if __name__ == "__main__":  # print the matrix: python benchmarks/adversarial.py CATALOG.db
    import sys

    for case in cases(Path(sys.argv[1])):
        print(json.dumps({"name": case.name, "url": case.url()}))
