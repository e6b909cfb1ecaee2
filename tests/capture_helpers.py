"""Helpers for the capture-folder tests: writing captures and sidecars, bounded polling, and
what the catalog holds (read straight from the real SQLite file)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecatalog.models import Annotation, FileRoot, Image, RejectedFile


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.05) -> Any:
    """Poll until predicate() is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_sidecar(path: Path, *boxes: tuple[str, list[float]], **fields: Any) -> Path:
    doc = dict(
        fields, annotations=[{"class_value": c, "type": "bbox", "geometry": g} for c, g in boxes]
    )
    path.write_text(json.dumps(doc))
    return path


def image_by_sha(digest: str) -> Image | None:
    return Image.get_or_none(Image.sha256 == digest)


def annotations_of(image_id: int) -> list[tuple[str, float, float, float, float]]:
    return sorted(
        (
            a.class_value,
            round(a.x_center, 4),
            round(a.y_center, 4),
            round(a.width, 4),
            round(a.height, 4),
        )
        for a in Annotation.select().where(Annotation.image == image_id)
    )


def file_of(image: Image) -> Path:
    return Path(FileRoot.get_by_id(image.root_id).path) / image.storage_key


def rejected_paths() -> dict[str, str]:
    return {r.path: r.reason for r in RejectedFile.select()}


def unique_jpeg(i: int, side: int = 32) -> bytes:
    """A small real JPEG whose bytes differ for every i (noise, so JPEG cannot merge them)."""
    import io
    import random

    from PIL import Image as PILImage

    rng = random.Random(i)
    img = PILImage.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()
