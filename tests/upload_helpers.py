"""Helpers for the upload tests: real image bytes in several formats, hand-built multipart
bodies (so malformed ones can be made too), and what is on disk and in the catalog.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

from edgecatalog.auth import digest_key
from edgecatalog.models import Annotation, Image, database

BOUNDARY = "edgecatalogtestboundary"
DEVICE_KEY = "adk_" + "5" * 32
PLAIN_DEVICE_KEY = "adk_" + "7" * 32


def image_bytes(fmt: str = "JPEG", width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    img = PILImage.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, seed % 256))
    img.putpixel((0, 0), (seed % 256, (seed // 256) % 256, (seed // 65536) % 256))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def noisy_jpeg(seed: int, size: int = 100_000) -> bytes:
    """A JPEG of roughly ``size`` bytes (random pixels do not compress)."""
    import random

    rng = random.Random(seed)
    side = 180
    while True:
        img = PILImage.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        if buf.tell() >= size * 0.9:
            return buf.getvalue()
        side += 20


@functools.lru_cache(maxsize=4)
def _noisy_base(size: int) -> bytes:
    return noisy_jpeg(0, size)


def unique_jpeg(seed: int, size: int = 100_000) -> bytes:
    """A distinct real JPEG of about ``size`` bytes, cheaply: bytes after the end-of-image
    marker change the file (and its SHA-256) but not the picture or its header."""
    return _noisy_base(size) + seed.to_bytes(8, "big")


def part(
    name: str, data: bytes, filename: str | None = None, content_type: str | None = None
) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode("utf-8") + b"\r\n" + data + b"\r\n"


def body(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def upload_body(data: bytes, metadata: Any = None, filename: str | None = "frame.jpg") -> bytes:
    parts = [part("image", data, filename, "application/octet-stream")]
    if metadata is not None:
        text = metadata if isinstance(metadata, (str, bytes)) else json.dumps(metadata)
        parts.append(part("metadata", text.encode() if isinstance(text, str) else text))
    return body(*parts)


CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def device_key_settings() -> dict[str, Any]:
    """One key configured as a digest, one as a plain key."""
    return {"auth__device_keys": [f"sha256:{digest_key(DEVICE_KEY)}", PLAIN_DEVICE_KEY]}


def stored_files(images_dir: Path) -> list[Path]:
    """Every file under raw-data/ and .incoming/: what an upload may have left."""
    found: list[Path] = []
    for sub in ("raw-data", ".incoming"):
        folder = images_dir / sub
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.is_file())
    return found


def catalog_counts() -> tuple[int, int]:
    with database.connection_context():
        return Image.select().count(), Annotation.select().count()
