"""A seeded catalog for the list tests, and the independent oracle they compare against.

Images go in through the catalog's own write path (``seed_image`` -> ``ingest.bulk.add_image``);
projects, extra batches, stages, splits, statuses and timestamps are then set with model
updates, as ingestion and the UI would. ``Record`` keeps what the seed *planned* for each
image, so expected results come from the plan, not from reading back through the code under
test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import make_settings, seed_image

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.catalog import NewAnnotation
from edgecatalog.models import Batch, Device, Image, Project

DEVICES = ("cam01", "cam02", "cam03")
STATUSES = ("pending", "in_progress", "completed")
SPLITS = ("train", "val", "test", "none")
STAGES = ("collecting", "complete", "unassigned", "annotating")
BASE_US = 1_790_000_000_000_000  # 2026-09-21, a fixed clock so ties are planned, not lucky

# Wildcard characters, case variants and duplicates, so LIKE escaping, case folding and sort
# ties on filename all get exercised.
FILENAMES = (
    "a%b.jpg",
    "a_b.jpg",
    "axb.jpg",
    "a\\b.jpg",
    "ab.jpg",
    "100%.jpg",
    "1000.jpg",
    "Mixed_Case.JPG",
    "MIXED_case.jpg",
    "mixedXcase.jpg",
    "back\\slash.png",
    "backXslash.png",
    "dup.jpg",
    "dup.jpg",
    "Dup.jpg",
    "dup.jpg",
    "zeta.jpg",
    "Zeta.jpg",
    "frame_001.jpg",
    "frame_002.jpg",
    "frame_003.jpg",
    "frame-004.jpg",
    "frame 005.jpg",
    "ÉCLAIR.jpg",
    "éclair.jpg",
    "night.png",
    "day.png",
    "dusk.png",
    "dawn.png",
    "noon.png",
    "a%%b.jpg",
    "under__score.jpg",
    "pct%.jpg",
    "x.jpg",
    "y.jpg",
    "z.jpg",
)
# Class values per image, cycling; " cat " is stored trimmed, "Cat" is a different class.
CLASS_CYCLE = ((), ("cat",), ("dog",), ("cat", "dog"), ("Cat",), ("bird", " cat "), ("person",))


@dataclass(frozen=True)
class Record:
    id: int
    filename: str
    device_id: str
    batch_id: int
    project_id: int | None
    stage: str
    annotation_status: str
    split: str
    split_locked: bool
    classes: frozenset[str]
    created_at: int
    updated_at: int


@dataclass
class Catalog:
    settings: Any
    app: Any
    client: Any
    headers: dict[str, str]
    records: list[Record]
    projects: dict[str, int]
    batches: list[int]


def _make_batches(device: Device, projects: Mapping[str, int]) -> list[tuple[int, int | None, str]]:
    """(batch id, project id, stage) for batches with and without projects, all four stages."""
    plan = [
        (projects["Alpha"], "collecting"),
        (projects["Alpha"], "complete"),
        (projects["Beta"], "annotating"),
        (projects["Beta"], "unassigned"),
        (projects["Alpha"], "annotating"),
        (None, "complete"),
        (None, "unassigned"),
    ]
    out = []
    for i, (project_id, stage) in enumerate(plan):
        batch = Batch.create(
            name=f"batch-{i}",
            device=device,
            project=project_id,
            stage=stage,
            opened_at=BASE_US,
            created_at=BASE_US,
            updated_at=BASE_US,
        )
        out.append((batch.id, project_id, stage))
    return out


def build_catalog(tmp_dir: Path, database_url: str = "") -> Catalog:
    settings = make_settings(tmp_dir, database__url=database_url)
    app = create_app(settings)
    headers = {"Authorization": "Bearer " + Authenticator(settings).issue_token("tester", "write")}
    seeded = []
    for i, name in enumerate(FILENAMES):
        classes = CLASS_CYCLE[i % len(CLASS_CYCLE)]
        anns = tuple(
            NewAnnotation(
                class_value=c, type="bbox", geometry=(0.5, 0.5, 0.2, 0.2), confidence=0.9, z_order=k
            )
            for k, c in enumerate(classes)
        )
        image = seed_image(
            settings,
            filename=name,
            device_id=DEVICES[i % 3],
            annotations=anns,
            data=f"image-{i}".encode(),
            width=640,
            height=480,
        )
        seeded.append((image, classes))
    projects = {
        n: Project.create(name=n, created_at=BASE_US, updated_at=BASE_US).id
        for n in ("Alpha", "Beta", "Gamma")
    }
    # The collecting batch add_image opened for cam01 stays in the plan: no project, collecting.
    auto = Image.get_by_id(seeded[0][0].id).batch
    plan = [(auto.id, None, "collecting")] + _make_batches(Device.get(device_id="cam01"), projects)
    records = []
    for i, (image, classes) in enumerate(seeded):
        batch_id, project_id, stage = plan[i % len(plan)]
        values = {
            "batch": batch_id,
            "annotation_status": STATUSES[i % 3],
            "split": SPLITS[(i // 2) % 4],
            "split_locked": i % 5 == 0,
            "created_at": BASE_US + (i // 2) * 1000,  # pairs share created_at
            "updated_at": BASE_US + (i * 7 % 5) * 10,  # many share updated_at
        }
        Image.update(**values).where(Image.id == image.id).execute()
        records.append(
            Record(
                id=image.id,
                filename=FILENAMES[i],
                device_id=DEVICES[i % 3],
                batch_id=batch_id,
                project_id=project_id,
                stage=stage,
                annotation_status=values["annotation_status"],
                split=values["split"],
                split_locked=values["split_locked"],
                classes=frozenset(c.strip() for c in classes),
                created_at=values["created_at"],
                updated_at=values["updated_at"],
            )
        )
    return Catalog(
        settings, app, app.test_client(), headers, records, projects, [p[0] for p in plan]
    )


# -- the oracle: the contract's filter semantics, written independently of queries.py ---------

ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _csv(text: str) -> set[str]:
    return {part.strip() for part in text.split(",") if part.strip()}


PREDICATES: dict[str, Callable[[Record, str, Mapping[str, str]], bool]] = {
    "project_id": lambda r, v, q: (r.project_id is None) if v == "null" else r.project_id == int(v),
    "stage": lambda r, v, q: ("project_id" not in q) or r.stage == v,
    "batch_id": lambda r, v, q: r.batch_id == int(v),
    "device_id": lambda r, v, q: r.device_id == v,
    "annotation_status": lambda r, v, q: r.annotation_status == v,
    "split": lambda r, v, q: v == "all" or r.split == v,
    "class_values": lambda r, v, q: not _csv(v) or bool(r.classes & _csv(v)),
    # SQLite's LIKE folds ASCII letters only (docs/api.md: search), so the oracle does the same.
    "search": lambda r, v, q: v.translate(ASCII_LOWER) in r.filename.translate(ASCII_LOWER),
    "filename": lambda r, v, q: r.filename == v,
}


def expected(
    records: list[Record], query: Mapping[str, str], sort: str = "created_at", order: str = "desc"
) -> list[int]:
    """Ids matching ``query`` in the order the contract prescribes (ties broken by id)."""
    hits = [
        r
        for r in records
        if all(PREDICATES[k](r, v, query) for k, v in query.items() if k in PREDICATES)
    ]
    hits.sort(key=lambda r: (getattr(r, sort), r.id), reverse=(order == "desc"))
    return [r.id for r in hits]
