"""A small catalog for the export and import tests: two devices with a file name in common,
boxes and polygons, model and manual sources, every split, a locked unsplit image."""

from __future__ import annotations

import io
import zipfile

from conftest import seed_image

from edgecatalog.catalog import NewAnnotation
from edgecatalog.models import Image

BOX = "bbox"
POLY = "polygon"


def seed_catalog(settings) -> dict[str, int]:
    """name -> image id; splits set as named."""
    spec = {
        "a": (
            "frame.jpg",
            "cam01",
            "train",
            False,
            (
                NewAnnotation("crack", BOX, [0.5, 0.5, 0.25, 0.5], 0.9),
                NewAnnotation("dent", POLY, [0.1, 0.1, 0.4, 0.15, 0.3, 0.6], None, source="manual"),
            ),
        ),
        "b": (
            "frame.jpg",
            "cam02",
            "val",
            False,
            (NewAnnotation("dent", BOX, [0.3, 0.4, 0.2, 0.1], 0.75),),
        ),
        "c": ("Frame.JPG", "cam02", "train", False, ()),
        "d": (
            "unsplit.jpg",
            "cam01",
            "none",
            False,
            (NewAnnotation("crack", BOX, [0.6, 0.6, 0.1, 0.1], 0.5),),
        ),
        "e": (
            "locked.jpg",
            "cam01",
            "none",
            True,
            (NewAnnotation("scratch", BOX, [0.2, 0.2, 0.1, 0.1], None, source="manual"),),
        ),
        "f": (
            "test.jpg",
            "cam01",
            "test",
            False,
            (NewAnnotation("scratch", BOX, [0.7, 0.3, 0.3, 0.2], None, source="manual"),),
        ),
    }
    ids = {}
    for seed, (key, (filename, device, split, locked, anns)) in enumerate(spec.items(), 1):
        image = seed_image(
            settings,
            filename=filename,
            device_id=device,
            annotations=anns,
            seed=seed,
            width=80 + seed * 8,
            height=60,
        )
        Image.update(split=split, split_locked=locked).where(Image.id == image.id).execute()
        ids[key] = image.id
    return ids


def open_zip(data: bytes) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    return archive
