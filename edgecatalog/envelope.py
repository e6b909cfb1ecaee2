"""The response envelope ``{success, data, meta, error}`` of the upstream contract.

Every JSON body the service sends is built here, so success and error bodies never drift.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import CatalogError

STREAM_CHUNK = 64 * 1024
_MARK = "\x00edgecatalog-item\x00"


def ok(data: Any, meta: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "data": data}
    if meta is not None:
        body["meta"] = meta
    return body


def stream_ok(
    items: Iterable[Any], meta: dict[str, int], default: Callable[[Any], Any] | None = None
) -> Iterator[str]:
    """``ok(list(items), meta)`` as compact JSON (what the API answers), written out in pieces
    of about ``STREAM_CHUNK`` characters: the same text, but never whole in memory, so a page
    of images carrying their annotations costs one image's JSON at a time."""
    return stream_texts(map(_compact(default), items), meta)


def stream_texts(texts: Iterable[str], meta: dict[str, int]) -> Iterator[str]:
    """``stream_ok`` of items each already written as its compact JSON text (by a writer
    faster than ``json`` on dicts: ``serialize.image_json``)."""
    dumps = _compact(None)
    head, tail = dumps(ok([_MARK], meta)).split(dumps(_MARK))
    pieces, size, first = [head], len(head), True
    for item in texts:
        text = item if first else "," + item
        first = False
        pieces.append(text)
        size += len(text)
        if size >= STREAM_CHUNK:
            yield "".join(pieces)
            pieces, size = [], 0
    pieces.append(tail + "\n")
    yield "".join(pieces)


def _compact(default: Callable[[Any], Any] | None) -> Callable[[Any], str]:
    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"), default=default)

    return dumps


def page_meta(count: int, limit: int, offset: int, total: int) -> dict[str, int]:
    return {"count": count, "limit": limit, "offset": offset, "total": total}


def error_body(err: CatalogError, data: Any = None) -> dict[str, Any]:
    """``data`` is null but where an error carries what a client needs to act on it (the
    failed readiness checks)."""
    return {
        "success": False,
        "data": data,
        "error": {"code": err.code, "message": err.message, "details": err.details},
    }
