"""The response envelope ``{success, data, meta, error}`` of the upstream contract.

Every JSON body the service sends is built here, so success and error bodies never drift.
"""

from __future__ import annotations

from typing import Any

from .errors import CatalogError


def ok(data: Any, meta: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "data": data}
    if meta is not None:
        body["meta"] = meta
    return body


def page_meta(count: int, limit: int, offset: int, total: int) -> dict[str, int]:
    return {"count": count, "limit": limit, "offset": offset, "total": total}


def error_body(err: CatalogError) -> dict[str, Any]:
    return {
        "success": False,
        "data": None,
        "error": {"code": err.code, "message": err.message, "details": err.details},
    }
