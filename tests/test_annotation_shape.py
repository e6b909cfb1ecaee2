"""Annotations as the contract shows them: integer pixel geometry, normalized box fields, and
every AnnotationDTO field, for a bbox and a polygon on a 200 x 100 image.
"""

from __future__ import annotations

import pytest
from conftest import seed_image

from edgecatalog.catalog import NewAnnotation

DTO_FIELDS = [
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
]


def test_bbox_and_polygon(client, auth_headers, settings):
    anns = (
        NewAnnotation("cat", "bbox", (0.5, 0.5, 0.2, 0.4), confidence=0.75, z_order=0),
        NewAnnotation(
            "dog",
            "polygon",
            (0.1, 0.2, 0.5, 0.2, 0.3, 0.8),
            confidence=None,
            z_order=1,
            source="manual",
        ),
        NewAnnotation("edge", "bbox", (0.05, 0.05, 0.2, 0.2), z_order=2),
    )
    img = seed_image(settings, width=200, height=100, annotations=anns, data=b"shape")
    row = client.get(f"/data/images/{img.id}", headers=auth_headers()).get_json()["data"]
    bbox, poly, edge = row["annotations"]
    for ann in row["annotations"]:
        assert list(ann) == DTO_FIELDS and ann["image_id"] == img.id
        assert all(type(v) is int for v in ann["geometry"])
        assert ann["created_at"].endswith("Z")
    # bbox: centre 0.5,0.5 size 0.2x0.4 -> x 0.4..0.6 (80..120 px), y 0.3..0.7 (30..70 px)
    assert bbox["geometry"] == [80, 30, 120, 70]
    assert (bbox["x_center"], bbox["y_center"], bbox["width"], bbox["height"]) == pytest.approx(
        (0.5, 0.5, 0.2, 0.4)
    )
    assert bbox["confidence"] == pytest.approx(0.75) and bbox["type"] == "bbox"
    # polygon: flat pixel points; normalized fields are its bounding box x 0.1..0.5, y 0.2..0.8
    assert poly["geometry"] == [20, 20, 100, 20, 60, 80]
    assert (poly["x_center"], poly["y_center"], poly["width"], poly["height"]) == pytest.approx(
        (0.3, 0.5, 0.4, 0.6)
    )
    assert poly["confidence"] is None and poly["source"] == "manual" and poly["z_order"] == 1
    # A box that pokes out of the frame is clipped to the image in pixels.
    assert edge["geometry"] == [0, 0, 30, 15]
