"""Projects: listing and creating them (a checked ``NewProject``). No Flask.

A project groups batches for labelling (a batch is assigned to one with PATCH
/data/batches/{id}). Names are unique, compared exactly as given after trimming spaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peewee import IntegrityError

from .db import write_tx
from .errors import Conflict, NotFound
from .listing import Page
from .models import Project
from .timeutil import now_us

MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000
ROW_FIELDS = (Project.id, Project.name, Project.description, Project.created_at, Project.updated_at)


@dataclass(frozen=True)
class NewProject:
    name: str
    description: str = ""


def create_project(new: NewProject) -> dict[str, Any]:
    """Insert the project; 409 CONFLICT when the name is taken."""
    now = now_us()
    try:
        with write_tx():
            if Project.select().where(Project.name == new.name).exists():
                raise Conflict(f"a project named {new.name!r} already exists", "name")
            project = Project.create(
                name=new.name, description=new.description, created_at=now, updated_at=now
            )
    except IntegrityError:  # pragma: no cover - the check above runs under the write lock
        raise Conflict(f"a project named {new.name!r} already exists", "name") from None
    return get_project_row(project.id)


def select_projects(limit: int, offset: int) -> Page:
    """Projects by name (then id), the order a picker shows them in."""
    total = Project.select().count()
    rows = list(
        Project.select(*ROW_FIELDS)
        .order_by(Project.name, Project.id)
        .limit(limit)
        .offset(offset)
        .dicts()
    )
    return Page(rows, total, limit, offset)


def get_project_row(project_id: int) -> dict[str, Any]:
    row = Project.select(*ROW_FIELDS).where(Project.id == project_id).dicts().first()
    if row is None:
        raise NotFound(f"project {project_id} does not exist", "id")
    return row
