"""The OpenAPI 3 document of the service, kept as data in ``openapi/openapi.json``.

The file is the description; ``document()`` loads it once. tests/test_openapi.py holds it to
the code (every route documented and nothing else), to the upstream seed for the list
endpoint, and to the live server's responses (schemathesis). No Flask here.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

from . import __version__


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files("edgecatalog").joinpath("openapi/openapi.json").read_text("utf-8")
    doc = json.loads(text)
    doc["info"]["version"] = __version__
    return doc


def document() -> dict[str, Any]:
    """A fresh copy, so a caller can change it without touching the cached one."""
    return copy.deepcopy(_load())
