"""A small catalog spread over time, for the time filters, facets and histograms: images of
three devices captured over ten days (across the 2026-03-29 change to summer time in Europe),
created over other days than they were captured, with classes, confidences, statuses, splits,
sync states, sources, model versions, and batches in two projects and none.

``rows()`` is what an oracle reads: the plain ``image``/``batch``/``annotation`` rows, nothing
the list code computes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from conftest import seed_image

from edgecatalog.catalog import NewAnnotation
from edgecatalog.models import Project, database

BOX = (0.5, 0.5, 0.2, 0.2)
HOUR_US = 3_600_000_000
# 2026-03-26T00:00Z: three days before Europe's clocks go forward.
START_US = int(datetime(2026, 3, 26, tzinfo=timezone.utc).timestamp()) * 1_000_000
CLASSES = ("crack", "scratch", "dent", "rust")
IMAGES = 60


def build(settings) -> None:
    """Seed ``IMAGES`` images through the catalog's write path, then spread their times,
    states and batches with plain updates (the triggers keep the count tables)."""
    for i in range(IMAGES):
        classes = CLASSES[: i % 4] if i % 5 else ()
        annotations = tuple(
            NewAnnotation(c, "bbox", BOX, confidence=round(0.05 + ((i * 7 + k) % 19) / 20, 3))
            for k, c in enumerate(classes)
        )
        seed_image(
            settings,
            filename=f"line{i % 3}_{i:03d}.jpg",
            device_id=f"cam0{i % 3 + 1}",
            seed=i,
            # Captured every ~4 hours over ten days, out of id order.
            captured_at=START_US + ((i * 37) % IMAGES) * 4 * HOUR_US + i * 60_000_000,
            annotations=annotations,
        )
    statuses = ("pending", "in_progress", "completed")
    splits = ("train", "val", "test", "none")
    syncs = ("pending", "synced", "local_only")
    database.connect(reuse_if_open=True)
    with database.atomic():
        ids = [r[0] for r in database.execute_sql("SELECT id FROM image ORDER BY id")]
        for n, image_id in enumerate(ids):
            database.execute_sql(
                "UPDATE image SET created_at = ?, annotation_status = ?, split = ?, "
                "sync_state = ?, source = ?, model_version = ? WHERE id = ?",
                (
                    START_US + n * 5 * HOUR_US + (n % 4) * 1000,
                    statuses[n % 3],
                    splits[n % 4],
                    syncs[n % 3],
                    ("camera", "import", "")[n % 3],
                    ("v1", "v2")[n % 2] if n % 7 else "",
                    image_id,
                ),
            )
        now = START_US
        alpha = Project.create(name="Alpha", created_at=now, updated_at=now).id
        beta = Project.create(name="Beta", created_at=now, updated_at=now).id
        batches = [r[0] for r in database.execute_sql("SELECT id FROM batch ORDER BY id")]
        for n, batch_id in enumerate(batches):
            project = (alpha, beta, None)[n % 3]
            database.execute_sql(
                "UPDATE batch SET project_id = ?, stage = ? WHERE id = ?",
                (project, ("annotating", "complete")[n % 2], batch_id),
            )


def rows() -> list[dict[str, Any]]:
    database.connect(reuse_if_open=True)
    cursor = database.execute_sql(
        "SELECT i.id, i.filename, i.batch_id, d.device_id, i.annotation_status, i.split, "
        "i.sync_state, i.source, i.model_version, i.created_at, i.updated_at, i.captured_at, "
        "b.project_id, "
        "b.stage FROM image i JOIN device d ON d.id = i.device_id "
        "JOIN batch b ON b.id = i.batch_id"
    )
    names = [c[0] for c in cursor.description]
    found = [dict(zip(names, r)) for r in cursor.fetchall()]
    classes: dict[int, list[tuple[str, float | None]]] = {}
    for image_id, value, confidence in database.execute_sql(
        "SELECT image_id, class_value, confidence FROM annotation"
    ):
        classes.setdefault(image_id, []).append((value, confidence))
    for row in found:
        row["annotations"] = classes.get(row["id"], [])
        row["classes"] = {c for c, _ in row["annotations"]}
    return found


def matches(row: dict[str, Any], query: dict[str, Any]) -> bool:
    """Whether a plain row meets a query's filters (time bounds as (text, microseconds)), as
    the contract says, written without the list's code."""
    for key, value in query.items():
        if key.endswith(("_after", "_before")):
            column = key.rsplit("_", 1)[0] + "_at"
            bound = value[1]
            if (row[column] < bound) if key.endswith("_after") else (row[column] >= bound):
                return False
        elif key in ("device_id", "split", "annotation_status", "sync_state", "filename"):
            if row[key] != value and not (key == "split" and value == "all"):
                return False
        elif key == "batch_id" and row["batch_id"] != int(value):
            return False
        elif key == "project_id":
            want = None if value == "null" else int(value)
            if row["project_id"] != want or row["stage"] != query.get("stage", row["stage"]):
                return False
        elif (
            key == "has_annotations"
            and bool(row["classes"]) != (value == "true")
            or (
                key == "class_values"
                and not row["classes"] & set(value.split(","))
                or key == "search"
                and value.lower() not in row["filename"].lower()
            )
        ):
            return False
    return True
