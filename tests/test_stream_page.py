"""A list page with annotations is written out image by image: the same JSON the envelope
builds in one piece, but never whole in the server's memory."""

from __future__ import annotations

import json
import random

from conftest import LiveServer, seed_image

from edgecatalog import envelope
from edgecatalog.catalog import NewAnnotation


def test_streamed_page_is_the_envelope_text():
    rng = random.Random(5)
    for count in (0, 1, 2, 300):
        items = [
            {
                "id": i,
                "name": "caf\u00e9 \u4e2d" * rng.randrange(0, 900),
                "geometry": [rng.random() for _ in range(rng.randrange(0, 50))],
            }
            for i in range(count)
        ]
        meta = envelope.page_meta(count, 100, 0, 12345)
        pieces = list(envelope.stream_ok(iter(items), meta))
        expected = json.dumps(envelope.ok(items, meta), separators=(",", ":")) + "\n"
        assert "".join(pieces) == expected
        assert all(len(p) < envelope.STREAM_CHUNK + 60_000 for p in pieces)
        if count == 300:
            assert len(pieces) > 3  # really written in pieces


def test_a_page_with_annotations_is_chunked_over_http(settings, app, auth_headers):
    boxes = tuple(
        NewAnnotation("crack", "bbox", (0.5, 0.5, 0.1, 0.1), confidence=0.5) for _ in range(50)
    )
    for i in range(30):
        seed_image(settings, seed=i, annotations=boxes)
    server = LiveServer(app)
    try:
        with_annotations = server.get(
            "/data/images?limit=100&include_annotations=true", headers=auth_headers(), stream=True
        )
        assert with_annotations.headers.get("Transfer-Encoding") == "chunked"
        body = with_annotations.json()
        plain = server.get("/data/images?limit=100", headers=auth_headers()).json()
        assert [i["id"] for i in body["data"]] == [i["id"] for i in plain["data"]]
        assert (
            body["meta"] == plain["meta"] == {"count": 30, "limit": 100, "offset": 0, "total": 30}
        )
        assert all(len(i["annotations"]) == 50 for i in body["data"])
    finally:
        server.close()
