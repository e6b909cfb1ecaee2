"""Structure checks of an image file, without decoding a pixel: is it whole?

The format sniff and the header's width/height accept a file whose first bytes are right and
whose rest is garbage or missing (a truncated copy, a PNG header glued to noise). Decoding
every upload would catch that but costs milliseconds of CPU per image; walking the container
costs microseconds and catches what a byte-level check can:

* PNG: every chunk's length fits and its CRC matches, up to IEND (what ``pngcheck`` does);
* JPEG: the marker segments up to the start of scan fit in the file, and an end-of-image
  marker follows the scan (the entropy-coded data has no other framing to check without
  decoding; a copy cut short loses its EOI, while bytes some cameras append after it are
  allowed);
* WebP: the RIFF size covers the file; BMP: the declared size and pixel offset fit.

``structure_problem(stream, fmt, size)`` returns what is wrong, or None. ``jpeg_fast_size``
is the folder scan's shortcut for the common case: one walk over bytes already in memory that
both checks the structure and reads the size. No Flask.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_JPEG_SEGMENTS = 10_000
PIECE = 1024 * 1024


def structure_problem(stream: BinaryIO, fmt: str, size: int) -> str | None:
    stream.seek(0)
    check = {"PNG": _png, "JPEG": _jpeg, "WEBP": _webp, "BMP": _bmp}.get(fmt)
    return check(stream, size) if check else None


def _png(stream: BinaryIO, size: int) -> str | None:
    stream.seek(len(PNG_SIGNATURE))
    first = True
    while True:
        head = stream.read(8)
        if len(head) < 8:
            return "the PNG ends before its IEND chunk"
        length, kind = struct.unpack(">I4s", head)
        if first and kind != b"IHDR":
            return "the PNG does not start with an IHDR chunk"
        first = False
        if length > size:
            return f"the PNG chunk {kind!r} claims {length} bytes, more than the file holds"
        crc, left = zlib.crc32(kind), length
        while left:  # piecewise: one chunk may be most of a 50 MiB file
            piece = stream.read(min(left, PIECE))
            if not piece:
                return "the PNG ends in the middle of a chunk"
            crc, left = zlib.crc32(piece, crc), left - len(piece)
        stored = stream.read(4)
        if len(stored) < 4:
            return "the PNG ends in the middle of a chunk"
        if crc != struct.unpack(">I", stored)[0]:
            return f"the PNG chunk {kind!r} is damaged (CRC mismatch)"
        if kind == b"IEND":
            return None


def _jpeg(stream: BinaryIO, size: int) -> str | None:
    stream.seek(2)  # after SOI
    for _ in range(MAX_JPEG_SEGMENTS):
        marker = stream.read(2)
        while marker[:1] == b"\xff" and marker[1:2] == b"\xff":  # fill bytes before a marker
            marker = marker[1:] + stream.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            return "the JPEG header is damaged (a segment does not start with a marker)"
        code = marker[1]
        if code == 0xD9:
            return "the JPEG ends before its image data"
        if 0xD0 <= code <= 0xD7 or code == 0x01:
            continue  # markers without a length
        raw = stream.read(2)
        if len(raw) < 2:
            return "the JPEG ends inside its header"
        length = struct.unpack(">H", raw)[0]
        if length < 2 or stream.tell() + length - 2 > size:
            return "the JPEG header is damaged (a segment runs past the end of the file)"
        if code == 0xDA:  # start of scan: the header is whole
            return _jpeg_tail(stream, stream.tell() + length - 2, size)
        stream.seek(length - 2, 1)
    return "the JPEG header has too many segments"


def _jpeg_tail(stream: BinaryIO, scan_start: int, size: int) -> str | None:
    """Is there an EOI (FF D9) after the scan starts? Searched backwards from the end, so a
    whole file answers from its last two bytes. Inside entropy-coded data every FF is
    followed by 00 or a restart marker, so FF D9 there is the end of the image."""
    end = size
    while end > scan_start:
        start = max(scan_start, end - PIECE)
        stream.seek(start)
        if stream.read(end - start + (1 if end < size else 0)).rfind(b"\xff\xd9") >= 0:
            return None
        end = start
    return "the JPEG is truncated: no end-of-image marker after its image data"


def jpeg_fast_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG whose header ``_jpeg`` accepts, with one size frame and no
    EXIF block; None for anything else, which then goes the slow way (imagesize, whose EXIF
    rotation and tolerant parsing this does not repeat, and ``structure_problem``, whose
    message says what is wrong). On the bytes it accepts it answers as that pair does, in a
    fraction of the time: the scan reads thousands of JPEGs a second."""
    size, pos, dims = len(data), 2, None
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 2 > size or data[pos] != 0xFF:
            return None
        code = data[pos + 1]
        while code == 0xFF:  # fill bytes before a marker
            pos += 1
            if pos + 2 > size:
                return None
            code = data[pos + 1]
        pos += 2
        if code == 0xD9:
            return None
        if 0xD0 <= code <= 0xD7 or code == 0x01:
            continue
        if pos + 2 > size:
            return None
        length = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if length < 2 or pos + length - 2 > size:
            return None
        if code == 0xDA:  # start of scan: the header is whole, and EOI must follow the scan
            return dims if data.rfind(b"\xff\xd9", pos + length - 2) >= 0 else None
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):  # a size frame (SOFn)
            if dims is not None or length < 8:
                return None
            dims = ((data[pos + 3] << 8) | data[pos + 4], (data[pos + 1] << 8) | data[pos + 2])
        elif code == 0xE1 and length >= 8 and data[pos : pos + 6] == b"Exif\x00\x00":
            return None  # may rotate the size: imagesize reads the orientation
        pos += length - 2
    return None


def _webp(stream: BinaryIO, size: int) -> str | None:
    head = stream.read(12)
    declared = struct.unpack("<I", head[4:8])[0] + 8
    if declared > size:
        return f"the WebP file is truncated: it declares {declared} bytes and has {size}"
    return None


def _bmp(stream: BinaryIO, size: int) -> str | None:
    head = stream.read(14)
    if len(head) < 14:
        return "the BMP header is truncated"
    declared, offset = struct.unpack("<I4xI", head[2:14])
    if declared > size or offset >= size:
        return f"the BMP file is truncated: its header points past the {size} bytes it has"
    return None
