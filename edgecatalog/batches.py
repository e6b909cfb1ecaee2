"""Batches: the list query (filters as a table, like images), one batch, and its changes:
project assignment and the stage lifecycle. No Flask.

Lifecycle, as upstream: ``collecting -> complete -> unassigned -> annotating``, one step at a
time and only forward. ``annotating`` means "assigned to a project and being labelled", so a
batch enters it only with a project, and keeps its project while in it. Every change touches
the ``updated_at`` of the batch's images (their ``project_name`` or batch stage changed).
"""

from __future__ import annotations

from typing import Any, TypedDict

from peewee import JOIN

from . import param_types
from .db import write_tx
from .errors import Conflict, NotFound, ValidationError
from .listing import Filter, FilteredPage, Page, known_device_pk
from .models import STAGES, Batch, Device, Image, Project
from .timeutil import now_us

NEXT_STAGE = {"collecting": "complete", "complete": "unassigned", "unassigned": "annotating"}


class BatchChanges(TypedDict, total=False):
    """A partial update of a batch: only the fields given, checked values."""

    project_id: int | None  # None: no project
    stage: str  # one of models.STAGES


def _device_condition(device_pk: int):
    return Batch.device == device_pk


# Every filter of GET /data/batches. Adding one is one row here, a test row and a README line.
BATCH_FILTERS: tuple[Filter, ...] = (
    Filter(
        "project_id",
        param_types.NULLABLE_ID,
        lambda v: Batch.project.is_null() if v is None else Batch.project == v,
        "integer project id, or null for batches without a project",
    ),
    Filter(
        "stage",
        param_types.choice(STAGES),
        lambda v: Batch.stage == v,
        "collecting, complete, unassigned or annotating",
    ),
    Filter("device_id", lambda n, t: t, _device_condition, "exact device id"),
)


ROW_FIELDS = (
    Batch.id,
    Batch.name,
    Device.device_id,
    Batch.project,
    Project.name.alias("project_name"),
    Batch.stage,
    Batch.image_count,
    Batch.opened_at,
    Batch.closed_at,
    Batch.created_at,
    Batch.updated_at,
)


def batch_rows():
    return (
        Batch.select(*ROW_FIELDS)
        .join(Device, on=(Batch.device == Device.id))
        .switch(Batch)
        .join(Project, JOIN.LEFT_OUTER, on=(Batch.project == Project.id))
    )


def select_batches(query: FilteredPage) -> Page:
    """Newest first; ids are unique, so the order is total and pages never overlap."""
    filters = dict(query.filters)
    if "device_id" in filters:  # as GET /data/images
        filters["device_id"] = known_device_pk(filters["device_id"])
    counted, rows = Batch.select(), batch_rows()
    for flt in BATCH_FILTERS:
        if flt.param in filters:
            condition = flt.condition(filters[flt.param])
            counted, rows = counted.where(condition), rows.where(condition)
    page = list(rows.order_by(Batch.id.desc()).limit(query.limit).offset(query.offset).dicts())
    return Page(page, counted.count(), query.limit, query.offset)


def get_batch_row(batch_id: int) -> dict[str, Any]:
    row = batch_rows().where(Batch.id == batch_id).dicts().first()
    if row is None:
        raise NotFound(f"batch {batch_id} does not exist", "id")
    return row


def _check_stage(batch: Batch, stage: str, project_after: int | None) -> None:
    if stage != batch.stage and NEXT_STAGE.get(batch.stage) != stage:
        allowed = NEXT_STAGE.get(batch.stage)
        hint = f"it can only move to {allowed!r}" if allowed else "it is the last stage"
        raise Conflict(
            f"batch {batch.id} is {batch.stage!r} and cannot move to {stage!r}: "
            f"batches go collecting -> complete -> unassigned -> annotating; {hint}",
            "stage",
        )
    if stage == "annotating" and project_after is None:
        raise Conflict(
            f"batch {batch.id} needs a project to be annotating; assign one "
            "(project_id) first or in the same request",
            "project_id",
        )


def update_batch(batch_id: int, changes: BatchChanges) -> None:
    """Apply a partial update in one transaction; a no-op change writes nothing."""
    now = now_us()
    with write_tx():
        batch = Batch.get_or_none(Batch.id == batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist", "id")
        project_after = changes.get("project_id", batch.project_id)
        if (
            project_after is not None
            and project_after != batch.project_id
            and not Project.select().where(Project.id == project_after).exists()
        ):
            raise ValidationError("project_id", f"project {project_after} does not exist")
        stage_after = changes.get("stage", batch.stage)
        if "stage" in changes:
            _check_stage(batch, stage_after, project_after)
        elif batch.stage == "annotating" and project_after is None:
            raise Conflict(f"batch {batch_id} is annotating and must keep a project", "project_id")
        if project_after == batch.project_id and stage_after == batch.stage:
            return
        update: dict[Any, Any] = {
            Batch.project: project_after,
            Batch.stage: stage_after,
            Batch.updated_at: now,
        }
        if batch.stage == "collecting" and stage_after != "collecting":
            update[Batch.closed_at] = now  # closed by hand
        Batch.update(update).where(Batch.id == batch_id).execute()
        Image.update(updated_at=now).where(Image.batch == batch_id).execute()
