"""The JPEG end-of-image check: a whole file passes whatever follows its EOI, a file cut
anywhere in its image data fails, in the stream check (uploads, pieces read backwards from
the end) and the in-memory fast path (scan) alike."""

from __future__ import annotations

import io

import pytest
from conftest import jpeg_bytes

from edgecatalog.ingest import imagecheck


def stream_check(data: bytes) -> str | None:
    return imagecheck.structure_problem(io.BytesIO(data), "JPEG", len(data))


def scan_start(data: bytes) -> int:
    """Where the entropy-coded data begins: after the SOS segment (found independently)."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


@pytest.mark.parametrize("piece", [3, 7, 64, imagecheck.PIECE])
def test_cut_image_data_fails_and_trailers_pass(monkeypatch, piece):
    monkeypatch.setattr(imagecheck, "PIECE", piece)  # small pieces: EOI across their edges
    whole = jpeg_bytes(seed=21)
    assert whole.endswith(b"\xff\xd9") and stream_check(whole) is None
    start = scan_start(whole)
    for cut in range(start, len(whole) - 1, max(1, (len(whole) - start) // 40)):
        problem = stream_check(whole[:cut])
        assert problem is not None and "end-of-image" in problem, cut
        assert imagecheck.jpeg_fast_size(whole[:cut]) is None, cut
    for trailer in (b"x", b"\xff", b"camera data" * 50, bytes(3 * piece + 1)):
        assert stream_check(whole + trailer) is None, trailer[:8]
        assert imagecheck.jpeg_fast_size(whole + trailer) is not None


def test_an_eoi_inside_the_header_does_not_count():
    """An EXIF thumbnail ends with its own FF D9 before the main scan: not the image's end."""
    whole = jpeg_bytes(seed=22)
    thumb = b"Exif\x00\x00" + b"\xff\xd8 thumbnail \xff\xd9"
    app1 = b"\xff\xe1" + (len(thumb) + 2).to_bytes(2, "big") + thumb
    with_thumb = whole[:2] + app1 + whole[2:]
    assert stream_check(with_thumb) is None
    cut = with_thumb[:-4]
    assert "end-of-image" in (stream_check(cut) or "")
