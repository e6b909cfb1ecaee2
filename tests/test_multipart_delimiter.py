"""``ingest.multipart.Delimiter`` finds exactly what Werkzeug's two boundary regexes find,
on random bodies rich in line breaks, dashes, blanks and pieces of the boundary; and a body
parsed with it gives the same parts as Werkzeug's own decoder.
"""

from __future__ import annotations

import io
import random

import pytest
from upload_helpers import BOUNDARY, part, unique_jpeg
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder

from edgecatalog.ingest.multipart import Delimiter, _Decoder

BOUNDARIES = [b"edgecatalogtestboundary", b"a-b", b"-", b"9f86d081884c7d65"]


def _pieces(boundary: bytes) -> list[bytes]:
    return [
        b"\r",
        b"\n",
        b"\r\n",
        b"-",
        b"--",
        b" ",
        b"\t",
        b"\x0b",
        b"\x0c",
        b"x",
        b"\xff\xd9",
        boundary,
        boundary[:2],
        b"--" + boundary,
        b"\r\n--" + boundary,
    ]


def _as_tuple(match):
    return None if match is None else (match.start(), match.end(), bytes(match.group(1)))


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_delimiter_matches_werkzeugs_regexes(boundary):
    rng = random.Random(boundary)
    reference = MultipartDecoder(boundary)
    ours = {
        False: Delimiter(boundary, line_break_first=False),
        True: Delimiter(boundary, line_break_first=True),
    }
    regexes = {False: reference.preamble_re, True: reference.boundary_re}
    pieces = _pieces(boundary)
    found = 0
    for _ in range(4000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 14)))
        for buffer in (data, bytearray(data)):
            pos = rng.randrange(0, len(data) + 1)
            for first in (False, True):
                expected = _as_tuple(regexes[first].search(buffer, pos))
                assert _as_tuple(ours[first].search(buffer, pos)) == expected, (data, pos, first)
                found += expected is not None
    assert found > 1000  # the bodies did exercise matches, not only misses


def _events(decoder: MultipartDecoder, body: bytes, chunk: int) -> list[tuple]:
    out: list[tuple] = []
    stream = io.BytesIO(body)
    while True:
        piece = stream.read(chunk)
        decoder.receive_data(piece or None)
        while True:
            event = decoder.next_event()
            if isinstance(event, (File, Field)):
                out.append(("part", event.name, getattr(event, "filename", None)))
            elif isinstance(event, Data):
                if out and out[-1][0] == "data":
                    out[-1] = ("data", out[-1][1] + event.data)
                else:
                    out.append(("data", event.data))
            elif isinstance(event, Epilogue):
                return out
            else:
                break
        if not piece:
            return out


@pytest.mark.parametrize("chunk", [1, 7, 64, 65536])
def test_decoding_with_it_gives_werkzeugs_parts(chunk):
    body = (
        b"preamble\r\n"
        + part("image", unique_jpeg(5, 30_000) + b"\r\n--" + BOUNDARY.encode()[:-1], "a.jpg")
        + part("metadata", b'{"model_id": "m"}\r\n')
        + part("extra", b"--\r\n-- \r\n")
        + f"--{BOUNDARY}-- \r\nepilogue".encode()
    )
    boundary = BOUNDARY.encode()
    expected = _events(MultipartDecoder(boundary), body, chunk)
    assert [e[0] for e in expected].count("part") == 3
    assert _events(_Decoder(boundary), body, chunk) == expected
