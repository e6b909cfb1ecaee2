"""What the benchmark catalog contains: devices, projects, batches and the per-image rows,
with the proportions a month of captures on one edge device plausibly has.

Shapes (at 1,000,000 images): 40 devices; 50 batches per device (2,000), the newest of each
still ``collecting``; 35 % of closed batches without a project (``complete`` or ``unassigned``),
the rest in one of 8 projects (``annotating`` or ``complete``); exactly 3 annotations per image
on average (3,000,000) over 25 classes drawn with Zipf weights (s = 1.3); annotation status
and split follow the batch's stage; sync state follows age (older images are mostly synced,
some of the oldest evicted). Batch counts scale with ``--images`` (at least 4 per device).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

DAY_US = 86_400 * 1_000_000
END_US = 1_795_824_000 * 1_000_000  # 2026-11-28T00:00:00Z
START_US = END_US - 30 * DAY_US
N_DEVICES = 40
N_PROJECTS = 8
ZIPF_S = 1.3
CAPTURE_ROOT_ID, UPLOAD_ROOT_ID = 1, 2
CLASSES = (
    "person",
    "car",
    "forklift",
    "pallet",
    "box",
    "truck",
    "helmet",
    "vest",
    "bicycle",
    "door",
    "ladder",
    "cart",
    "sign",
    "scratch",
    "dent",
    "crack",
    "label",
    "barcode",
    "glove",
    "spill",
    "smoke",
    "fire",
    "drone",
    "dog",
    "cat",
)
CLASS_CUM_WEIGHTS = tuple(accumulate(1 / rank**ZIPF_S for rank in range(1, len(CLASSES) + 1)))

IMAGE_COLUMNS = (
    "id",
    "filename",
    "storage_key",
    "width",
    "height",
    "device_id",
    "batch_id",
    "annotation_status",
    "split",
    "split_locked",
    "version_id",
    "created_at",
    "updated_at",
    "captured_at",
    "sha256",
    "byte_size",
    "root_id",
    "model_id",
    "model_version",
    "source",
    "sync_state",
    "synced_at",
    "remote_id",
    "remote_batch_id",
    "evicted_at",
    "pinned",
)
IMG_COL = {name: i for i, name in enumerate(IMAGE_COLUMNS)}
ANNOTATION_COLUMNS = (
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
OUTBOX_COLUMNS = (
    "image_id",
    "kind",
    "idempotency_key",
    "payload",
    "state",
    "attempts",
    "next_attempt_at",
    "last_status",
    "last_error",
    "byte_size",
    "created_at",
    "updated_at",
)
CAPTURE_FILE_COLUMNS = (
    "root_id",
    "path",
    "kind",
    "image_id",
    "byte_size",
    "mtime_ns",
    "updated_at",
)
BATCH_COLUMNS = (
    "id",
    "name",
    "device_id",
    "project_id",
    "stage",
    "image_count",
    "opened_at",
    "closed_at",
    "created_at",
    "updated_at",
)


@dataclass
class Plan:
    n_images: int
    batches_per_device: int
    projects: list[tuple]
    devices: list[tuple]
    versions: list[tuple]
    batch_project_stage: dict[int, tuple[int | None, str]]
    annotation_counts: list[int]
    # Filled while images are generated: batch id -> [count, first created, last created].
    batch_stats: dict[int, list[int]] = field(default_factory=dict)

    @property
    def window_us(self) -> int:
        return (END_US - START_US) // self.batches_per_device


def make_plan(n_images: int, rng: random.Random) -> Plan:
    per_device = max(4, round(50 * n_images / 1_000_000))
    projects = [
        (p, f"project-{p:02d}", f"benchmark project {p}", START_US, START_US)
        for p in range(1, N_PROJECTS + 1)
    ]
    devices = [(d, f"cam{d:02d}", f"cam{d:02d}", START_US) for d in range(1, N_DEVICES + 1)]
    versions = [(v, v, f"project-{v:02d}-v1", END_US - 5 * DAY_US) for v in (1, 2, 3)]
    assignment: dict[int, tuple[int | None, str]] = {}
    for w in range(per_device):
        for d in range(N_DEVICES):
            assignment[w * N_DEVICES + d + 1] = batch_project_stage(rng, newest=w == per_device - 1)
    # Exactly 3 per image on average: each annotation lands on a uniformly chosen image, so
    # per-image counts are Poisson-like (about 5 % of images have none).
    counts = [0] * n_images
    for i in rng.choices(range(n_images), k=3 * n_images):
        counts[i] += 1
    return Plan(n_images, per_device, projects, devices, versions, assignment, counts)


def batch_project_stage(rng: random.Random, newest: bool) -> tuple[int | None, str]:
    if newest:
        return None, "collecting"
    if rng.random() < 0.35:
        return None, "complete" if rng.random() < 0.6 else "unassigned"
    project = rng.choices(range(1, N_PROJECTS + 1), weights=[8, 6, 5, 4, 3, 2, 1, 1])[0]
    return project, "annotating" if rng.random() < 0.5 else "complete"


def status_and_split(rng: random.Random, project: int | None, stage: str) -> tuple[str, str]:
    r = rng.random()
    if project is None:
        status = "completed" if r < 0.1 else "pending"
    elif stage == "annotating":
        status = "pending" if r < 0.4 else "in_progress" if r < 0.6 else "completed"
    else:
        status = "completed" if r < 0.9 else "in_progress" if r < 0.95 else "pending"
    if status != "completed":
        return status, "train" if rng.random() < 0.05 else "none"
    r = rng.random()
    return status, "train" if r < 0.7 else "val" if r < 0.85 else "test" if r < 0.95 else "none"


def sync_fields(rng: random.Random, created: int, batch_id: int, image_id: int) -> tuple:
    """(sync_state, synced_at, remote_id, remote_batch_id, evicted_at)."""
    age = END_US - created
    r = rng.random()
    if age > 2 * DAY_US:
        # No local_only: the service marks pending images so only while no upstream is set.
        state = "synced" if r < 0.97 else "quarantined" if r < 0.971 else "pending"
    else:
        state = "synced" if r < 0.4 else "pending"
    if state != "synced":
        return state, None, "", "", None
    evicted = created + 20 * DAY_US if age > 20 * DAY_US and rng.random() < 0.3 else None
    return (
        state,
        created + rng.randint(5, 600) * 1_000_000,
        str(5_000_000 + image_id),
        str(90_000 + batch_id),
        evicted,
    )


def capture_path(filename: str) -> str:
    """cam07_20261103_141502_000123.jpg -> cam07/2026-11-03/cam07_20261103_141502_000123.jpg"""
    device, day = filename.split("_")[:2]
    return f"{device}/{day[:4]}-{day[4:6]}-{day[6:8]}/{filename}"


def iter_images(plan: Plan, rng: random.Random):
    """Yield (image row, class list) in id order; ids follow created_at, as inserts do."""
    step = (END_US - START_US - 10_000_000) / plan.n_images
    per_device = [0] * (N_DEVICES + 1)
    last_created = 0
    for i in range(plan.n_images):
        image_id = i + 1
        captured = START_US + int(i * step + rng.random() * step * 0.9)
        d = rng.randrange(N_DEVICES) + 1
        per_device[d] += 1
        w = min(plan.batches_per_device - 1, (captured - START_US) // plan.window_us)
        batch_id = w * N_DEVICES + d
        created = max(last_created + 1, captured + rng.randint(200_000, 5_000_000))
        last_created = created
        stats = plan.batch_stats.setdefault(batch_id, [0, created, created])
        stats[0] += 1
        stats[2] = created
        stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(captured // 1_000_000))
        filename = f"cam{d:02d}_{stamp}_{per_device[d]:06d}.jpg"
        key = f"raw-data/{uuid.UUID(int=rng.getrandbits(128), version=4)}_{filename}"
        uploaded = rng.random() < 0.05
        project, stage = plan.batch_project_stage[batch_id]
        status, split = status_and_split(rng, project, stage)
        locked = int(status == "completed" and split != "none" and rng.random() < 0.05)
        version = (
            project
            if project in (1, 2, 3)
            and stage == "complete"
            and status == "completed"
            and rng.random() < 0.5
            else None
        )
        updated = (
            created
            if status == "pending"
            else min(END_US - 1, created + rng.randint(3600, 3 * 86_400) * 1_000_000)
        )
        width, height = (1280, 720) if d % 5 == 0 else (1920, 1080)
        sha = hashlib.sha256(f"bench:{image_id}".encode()).hexdigest()
        row = (
            image_id,
            filename,
            key if uploaded else capture_path(filename),
            width,
            height,
            d,
            batch_id,
            status,
            split,
            locked,
            version,
            created,
            updated,
            captured,
            sha,
            rng.randint(120_000, 450_000),
            UPLOAD_ROOT_ID if uploaded else CAPTURE_ROOT_ID,
            "yolov8n-edge",
            "2026.10.1",
            "upload" if uploaded else "capture",
            *sync_fields(rng, created, batch_id, image_id),
            # One image in a thousand pinned, from its id (no draw from rng: the rest of the
            # catalog is the one earlier figures were measured on).
            int(image_id % 1000 == 0),
        )
        classes = rng.choices(CLASSES, cum_weights=CLASS_CUM_WEIGHTS, k=plan.annotation_counts[i])
        yield row, classes


def batch_rows(plan: Plan) -> list[tuple]:
    rows = []
    for batch_id, (project, stage) in sorted(plan.batch_project_stage.items()):
        w, d = divmod(batch_id - 1, N_DEVICES)
        window_start = START_US + w * plan.window_us
        count, first, last = plan.batch_stats.get(batch_id, [0, window_start, window_start])
        closed = None if stage == "collecting" else max(last, window_start + plan.window_us)
        name = f"cam{d + 1:02d} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(first // 10**6))}"
        rows.append(
            (batch_id, name, d + 1, project, stage, count, first, closed, first, closed or last)
        )
    return rows


def real_file_ids(n_images: int, k: int) -> set[int]:
    """Recent images (never evicted) spread over the last fifth of the catalog."""
    gap = max(1, n_images // 20)
    return {n_images - k_i * gap for k_i in range(k) if n_images - k_i * gap >= 1}


def jpeg_noise(rng: random.Random, min_bytes: int = 200_000) -> bytes:
    """A real JPEG of random pixels (noise does not compress), at least min_bytes long."""
    from PIL import Image as PILImage

    width, height = 560, 420
    while True:
        img = PILImage.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        if buf.tell() >= min_bytes:
            return buf.getvalue()
        width, height = int(width * 1.1), int(height * 1.1)


def with_real_file(row: tuple, out: Path) -> tuple:
    """Write the image's file under captures/ and make the row describe those bytes."""
    data = jpeg_noise(random.Random(row[0]))
    path = capture_path(row[IMG_COL["filename"]])
    target = out / "captures" / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    # The capture folder's bookkeeping row records this mtime; a rescan then skips the file.
    stamp_ns = row[IMG_COL["captured_at"]] * 1000
    os.utime(target, ns=(stamp_ns, stamp_ns))
    fixed = list(row)
    fixed[IMG_COL["sha256"]] = hashlib.sha256(data).hexdigest()
    fixed[IMG_COL["byte_size"]] = len(data)
    fixed[IMG_COL["root_id"]], fixed[IMG_COL["storage_key"]] = CAPTURE_ROOT_ID, path
    fixed[IMG_COL["source"]], fixed[IMG_COL["evicted_at"]] = "capture", None
    return tuple(fixed)
