"""A list page carrying annotations is written as text straight from the annotation rows
(``serialize.annotation_writer``, ``image_json``): the same bytes, field for field, as
``json.dumps`` of the dicts the single-image routes serialize."""

from __future__ import annotations

import json
import random

import pytest
from conftest import seed_image

from edgecatalog import listing
from edgecatalog.catalog import NewAnnotation
from edgecatalog.listing import ANNOTATION_COLUMNS
from edgecatalog.serialize import annotation_to_dict, annotation_writer, image_json, image_to_dict

pytestmark = pytest.mark.both_engines


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _as_tuple(row: dict) -> tuple:
    return tuple(row[name] for name in ANNOTATION_COLUMNS)


def test_written_annotation_is_json_dumps_of_its_dict():
    rng = random.Random(11)
    classes = ["crack", 'say "hi"', "back\\slash", "caf\u00e9", "\u4e2d\u6587", "tab\there", ""]
    geometries = ["[1,2,3,4]", "[0,0,0,0]", "[-5,10,20,-30]", "[1, 2, 3, 4]", "[-0,3]", "[]"]
    floats = [0.0, 1.0, 0.1 + 0.2, 1e-07, 0.5, 2.5e-05, 0.999999999999, 1 / 3]
    write = annotation_writer(ANNOTATION_COLUMNS)
    for i in range(2000):
        row = {
            "id": rng.randrange(1, 2**40),
            "image": rng.randrange(1, 2**31),
            "class_value": rng.choice(classes),
            "type": rng.choice(["bbox", "polygon"]),
            "geometry": rng.choice(geometries),
            "x_center": rng.choice(floats),
            "y_center": rng.random(),
            "width": rng.choice(floats),
            "height": rng.random(),
            "confidence": rng.choice([None, rng.random(), 0.0, 1.0]),
            "source": rng.choice(["model", "manual", "import"]),
            "z_order": rng.randrange(-3, 1000),
            "created_at": rng.choice([0, 1_794_527_993_505_097, 1_794_527_993_000_000]),
            "updated_at": rng.randrange(0, 2**52),
        }
        assert write(_as_tuple(row)) == _dumps(annotation_to_dict(row)), row


def test_a_page_written_as_text_is_the_page_as_dicts(settings, app, auth_headers):
    boxes = (
        NewAnnotation("crack", "bbox", (0.5, 0.5, 0.1, 0.1), confidence=0.123456789),
        NewAnnotation('dent "deep"', "bbox", (0.25, 0.75, 0.2, 0.3)),
        NewAnnotation("\u00e9caille", "polygon", (0.1, 0.1, 0.9, 0.1, 0.5, 0.8), confidence=1.0),
    )
    for i in range(25):
        seed_image(settings, seed=i, annotations=boxes[: i % 4])
    query = listing.parse_image_query(
        {"include_annotations": "true", "limit": "100"}, max_class_values=50, max_chars=1024
    )
    page = listing.select_images(query)
    expected = [_dumps(image_to_dict(row)) for row in page.items()]
    write = annotation_writer(ANNOTATION_COLUMNS)
    got = [image_json(row, write, None) for row in page.items(tuples=True)]
    assert len(got) == 25 and sum('"annotations":[{' in text for text in got) > 15
    assert got == expected
    # and over HTTP, the envelope around them is the single-image route's format
    body = app.test_client().get(
        "/data/images?include_annotations=true&limit=100", headers=auth_headers()
    )
    assert body.status_code == 200
    assert [json.loads(text) for text in expected] == body.get_json()["data"]
