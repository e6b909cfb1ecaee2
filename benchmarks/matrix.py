"""The query matrix of the million-image benchmark, its values taken from the generated
catalog itself.

Each ``Case`` is one request to the service and the floor (same path and parameters) plus,
where Datasette's table API can express it, the equivalent Datasette request. Cases Datasette
cannot express carry the reason instead. Join-based filters (classes, projects) are given to
Datasette as ``_where=`` SQL fragments, which its default permissions allow; they are marked so.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

NO_OFFSET = "no offset: Datasette pages by keyset (_next) only"
NO_NESTING = "no nested annotations in Datasette's table JSON"
NO_FILES = "Datasette does not serve files from disk"


@dataclass(frozen=True)
class Case:
    name: str
    params: dict[str, str] = field(default_factory=dict)
    datasette: dict[str, str] | None = None  # None: not expressible (see note)
    note: str = ""
    path: str = "/data/images"

    def url(self) -> str:
        return self.path + ("?" + urlencode(self.params) if self.params else "")

    def datasette_url(self, db_name: str) -> str | None:
        if self.datasette is None:
            return None
        # The objects shape carries the exact filtered_table_rows_count, as our pages
        # carry total (_shape=array skips the count, which would not be the same work).
        args = {"_shape": "objects", "_size": self.params.get("limit", "50"), **self.datasette}
        return f"/{db_name}/image.json?{urlencode(args)}"


@dataclass(frozen=True)
class Facts:
    """Values picked from the catalog so each filter selects what its name says."""

    device_id: str
    device_pk: int
    batch_id: int
    project_id: int
    common_class: str
    rare_class: str
    rare_search: str
    filename: str
    captured_max_ms: int = 0  # the newest capture, epoch milliseconds


def read_facts(db_path: Path) -> Facts:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return read_facts_on(conn)
    finally:
        conn.close()


def read_facts_on(conn) -> Facts:
    """``read_facts`` through a connection with ``?`` placeholders (``adversarial.Db`` on
    PostgreSQL)."""
    found = conn.execute("SELECT id, device_id FROM device WHERE device_id = 'cam07'").fetchone()
    if found is None:  # a site catalog (cam000-cam199): a device a quarter of the way in
        found = conn.execute(
            "SELECT id, device_id FROM device WHERE device_id LIKE 'cam%' ORDER BY device_id "
            "LIMIT 1 OFFSET (SELECT count(*) / 4 FROM device WHERE device_id LIKE 'cam%')"
        ).fetchone()
    device_pk, device_id = found
    batch_id = conn.execute(
        "SELECT id FROM batch WHERE stage != 'collecting' ORDER BY image_count, id "
        "LIMIT 1 OFFSET (SELECT count(*) / 2 FROM batch WHERE stage != 'collecting')"
    ).fetchone()[0]
    project_id = conn.execute(
        "SELECT project_id FROM batch WHERE project_id IS NOT NULL GROUP BY project_id "
        "ORDER BY sum(image_count) DESC LIMIT 1"
    ).fetchone()[0]
    classes = [
        r[0]
        for r in conn.execute(
            "SELECT class_value FROM annotation GROUP BY class_value ORDER BY count(*) DESC"
        )
    ]
    middle = conn.execute("SELECT max(id) / 2 FROM image").fetchone()[0]
    filename = conn.execute("SELECT filename FROM image WHERE id = ?", (middle,)).fetchone()[0]
    captured_max = conn.execute("SELECT max(captured_at) FROM image").fetchone()[0]
    # cam07_20261113_141502_000123.jpg -> "20261113_1415": one minute, ~20 images at 1M.
    rare_search = filename.split("_", 1)[1][:13]
    return Facts(
        device_id,
        device_pk,
        batch_id,
        project_id,
        classes[0],
        classes[-1],
        rare_search,
        filename,
        captured_max // 1000,
    )


DAY_MS = 86_400_000


def time_cases(f: Facts) -> list[Case]:
    """The time ranges (epoch ms), alone and beside other filters: the last day, a day three
    weeks back, the last week, a created_at day; Datasette as column__gte/__lt on the raw
    microseconds."""
    end = f.captured_max_ms + 1
    ranges = {
        "captured last day": ("captured", end - DAY_MS, end),
        "captured day 3 weeks back": ("captured", end - 22 * DAY_MS, end - 21 * DAY_MS),
        "captured last week": ("captured", end - 7 * DAY_MS, end),
        "created day 2 weeks back": ("created", end - 15 * DAY_MS, end - 14 * DAY_MS),
    }
    out = []
    for name, (stem, after, before) in ranges.items():
        params = {f"{stem}_after": str(after), f"{stem}_before": str(before)}
        ds = {f"{stem}_at__gte": str(after * 1000), f"{stem}_at__lt": str(before * 1000)}
        out.append(Case(name, params, {**ds, "_sort_desc": "created_at"}))
    after, before = end - 22 * DAY_MS, end - 21 * DAY_MS
    day = {"captured_after": str(after), "captured_before": str(before)}
    ds_day = {"captured_at__gte": str(after * 1000), "captured_at__lt": str(before * 1000)}
    class_where = f"id in (select image_id from annotation where class_value = '{f.common_class}')"
    out += [
        Case(
            "captured day + device",
            {**day, "device_id": f.device_id},
            {**ds_day, "device_id": str(f.device_pk), "_sort_desc": "created_at"},
        ),
        Case(
            "captured day + class common",
            {**day, "class_values": f.common_class},
            {**ds_day, "_where": class_where, "_sort_desc": "created_at"},
            "via _where",
        ),
        Case(
            "captured day + status + split",
            {**day, "annotation_status": "pending", "split": "train"},
            {
                **ds_day,
                "annotation_status": "pending",
                "split": "train",
                "_sort_desc": "created_at",
            },
        ),
        Case(
            "captured last week + search common",
            {"captured_after": str(end - 7 * DAY_MS), "search": "cam1"},
            {
                "captured_at__gte": str((end - 7 * DAY_MS) * 1000),
                "filename__contains": "cam1",
                "_sort_desc": "created_at",
            },
        ),
        Case(
            "captured last day sort filename",
            {**day, "sort": "filename", "order": "asc"},
            {**ds_day, "_sort": "filename"},
        ),
    ]
    return out


def cases(facts: Facts, real_file_id: int) -> list[Case]:
    f = facts
    ds_sort = {"_sort_desc": "created_at"}
    class_where = "id in (select image_id from annotation where class_value = '{}')"
    project_where = "batch_id in (select id from batch where project_id {})"
    conf_where = (
        "id in (select image_id from annotation where confidence >= 0.4 and confidence <= 0.6)"
    )
    out = [
        Case("no filter", {}, ds_sort),
        Case(
            "project_id",
            {"project_id": str(f.project_id)},
            {"_where": project_where.format(f"= {f.project_id}"), **ds_sort},
            "via _where",
        ),
        Case(
            "project_id=null",
            {"project_id": "null"},
            {"_where": project_where.format("is null"), **ds_sort},
            "via _where",
        ),
        Case(
            "project_id+stage",
            {"project_id": str(f.project_id), "stage": "annotating"},
            {
                "_where": project_where.format(f"= {f.project_id} and stage = 'annotating'"),
                **ds_sort,
            },
            "via _where",
        ),
        Case("batch_id", {"batch_id": str(f.batch_id)}, {"batch_id": str(f.batch_id), **ds_sort}),
        Case(
            "device_id",
            {"device_id": f.device_id},
            {"device_id": str(f.device_pk), **ds_sort},
            "Datasette given the device's row id",
        ),
        Case(
            "annotation_status",
            {"annotation_status": "in_progress"},
            {"annotation_status": "in_progress", **ds_sort},
        ),
        Case("split", {"split": "val"}, {"split": "val", **ds_sort}),
        Case(
            "sync_state rare",
            {"sync_state": "quarantined"},
            {"sync_state": "quarantined", **ds_sort},
        ),
        Case("sync_state pending", {"sync_state": "pending"}, {"sync_state": "pending", **ds_sort}),
        Case("filename exact", {"filename": f.filename}, {"filename": f.filename, **ds_sort}),
        Case(
            "class rare",
            {"class_values": f.rare_class},
            {"_where": class_where.format(f.rare_class), **ds_sort},
            "via _where",
        ),
        Case(
            "class common",
            {"class_values": f.common_class},
            {"_where": class_where.format(f.common_class), **ds_sort},
            "via _where",
        ),
        Case(
            "search rare",
            {"search": f.rare_search},
            {"filename__contains": f.rare_search, **ds_sort},
            "Datasette: '_' is a wildcard",
        ),
        Case("search common", {"search": "cam1"}, {"filename__contains": "cam1", **ds_sort}),
        Case("search 2-char", {"search": "07"}, {"filename__contains": "07", **ds_sort}),
        Case(
            "3 filters",
            {"device_id": f.device_id, "annotation_status": "completed", "split": "train"},
            {
                "device_id": str(f.device_pk),
                "annotation_status": "completed",
                "split": "train",
                **ds_sort,
            },
        ),
        Case(
            "4 filters",
            {
                "project_id": str(f.project_id),
                "stage": "complete",
                "split": "val",
                "class_values": f.common_class,
            },
            {
                "_where": project_where.format(f"= {f.project_id} and stage = 'complete'")
                + " and "
                + class_where.format(f.common_class),
                "split": "val",
                **ds_sort,
            },
            "via _where",
        ),
    ]
    # The review queues (the page's "Review queues" menu).
    out += [
        Case(
            "queue uncertain 0.4-0.6",
            {"min_confidence": "0.4", "max_confidence": "0.6"},
            {"_where": conf_where, **ds_sort},
            "via _where",
        ),
        Case(
            "queue unlabelled",
            {"has_annotations": "false"},
            {"_where": "id not in (select image_id from annotation)", **ds_sort},
            "via _where",
        ),
        Case("queue pinned", {"pinned": "true"}, {"pinned": "1", **ds_sort}),
    ]
    for sort in ("created_at", "updated_at", "filename"):
        for order in ("asc", "desc"):
            if (sort, order) != ("created_at", "desc"):  # that one is "no filter"
                key = "_sort" if order == "asc" else "_sort_desc"
                out.append(
                    Case(f"sort {sort} {order}", {"sort": sort, "order": order}, {key: sort})
                )
    out += [
        Case("offset 1000", {"offset": "1000"}, None, NO_OFFSET),
        Case("offset 10000", {"offset": "10000"}, None, NO_OFFSET),
        Case(
            "annotations limit=100",
            {"include_annotations": "true", "limit": "100"},
            None,
            NO_NESTING,
        ),
        Case("file 200 KB", {}, None, NO_FILES, path=f"/files/{real_file_id}"),
    ]
    return out + time_cases(f)
