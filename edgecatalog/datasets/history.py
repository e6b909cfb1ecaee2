"""Which dataset exports this catalog planned, and when: one row per whole archive served
(``DatasetExport``), read back newest first by ``GET /data/exports``. The time is the plan's
snapshot, taken before the archive is planned, so an image changed while it was being
planned counts as changed since. No Flask.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..db import write_tx
from ..models import DatasetExport
from ..timeutil import format_ts


def record(fmt: str, filters: Mapping[str, Any], planned_at: int) -> None:
    text = json.dumps({k: v for k, v in filters.items()}, sort_keys=True, default=str)
    with write_tx():
        DatasetExport.create(format=fmt, filters=text, planned_at=planned_at)


def recent(limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The exports newest first (a page), and how many there are."""
    rows = (
        DatasetExport.select()
        .order_by(DatasetExport.planned_at.desc(), DatasetExport.id.desc())
        .limit(limit)
        .offset(offset)
    )
    page = [
        {
            "id": row.id,
            "format": row.format,
            "filters": json.loads(row.filters),
            "created_at": format_ts(row.planned_at),
        }
        for row in rows
    ]
    return page, DatasetExport.select().count()
