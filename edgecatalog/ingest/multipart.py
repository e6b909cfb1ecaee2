"""Reading an upload's ``multipart/form-data`` body as a stream, one piece at a time.

The ``image`` part goes straight from the request stream into ``images/.incoming/`` through
``store.IncomingFile`` (hashed and counted on the way); small text parts such as ``metadata``
are kept in memory up to a cap. Nothing ever holds the whole body, so a 50 MiB upload costs a
few 64 KiB buffers, and a body over the limit is refused as soon as the limit is passed.

Uses Werkzeug's sans-IO ``MultipartDecoder`` (a parser, not Flask): the caller passes any
binary stream, so the CLI and the tests can drive it without a web framework. Its two
boundary regexes are replaced by ``Delimiter`` (``bytes.find``, the same matches): compiled
anew for every request's random boundary and run over every CR and LF of the image's bytes,
they took 0.5 of the 0.8 ms of CPU that reading a 100 KB upload cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import (
    NEED_DATA,
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
    State,
)

from ..errors import PayloadTooLarge, UnsupportedMediaType, ValidationError
from .store import IncomingFile

READ_SIZE = 64 * 1024
MAX_PARTS = 16  # image + metadata, with room for fields a client adds and we ignore
# Part headers and preamble are buffered until their end is seen; real ones are tiny.
MAX_FRAMING_BYTES = 64 * 1024
IMAGE_PART = "image"


@dataclass
class UploadParts:
    """What a multipart upload carried: the received image (not yet checked or persisted),
    the file name its part declared, and the small text fields by name."""

    image: IncomingFile | None = None
    image_filename: str = ""
    fields: dict[str, bytes] = field(default_factory=dict)

    def discard(self) -> None:
        if self.image is not None:
            self.image.discard()


_BLANKS = b" \t\f\v"  # the regexes' [^\S\n\r]: whitespace that ends no line
_CR, _LF = 13, 10


class _Match:
    """The little of ``re.Match`` the decoder uses."""

    __slots__ = ("_end", "_group", "_start")

    def __init__(self, start: int, end: int, group: bytes) -> None:
        self._start, self._end, self._group = start, end, group

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end

    def group(self, index: int) -> bytes:
        assert index == 1
        return self._group


class Delimiter:
    """Finds what Werkzeug's ``MultipartDecoder.preamble_re`` (``line_break_first`` False)
    or ``boundary_re`` (True) matches, with ``bytes.find``:
    ``LB? --boundary ( --[blanks]* LB? | [blanks]* LB )``, LB being CRLF, LF or CR.

    Werkzeug compiles both regexes for every decoder, and a client sends a new random
    boundary with every request, so Python's regex cache never hits: 0.19 ms of CPU an
    upload, about what the rest of parsing a 100 KB body costs. ``search`` gives the same
    leftmost match (``tests/test_multipart_delimiter.py`` compares the two)."""

    def __init__(self, boundary: bytes, *, line_break_first: bool) -> None:
        self._dashed = b"--" + boundary
        self._line_break_first = line_break_first

    def search(self, data: bytes | bytearray, pos: int = 0) -> _Match | None:
        dashed = self._dashed
        at = data.find(dashed, pos)
        while at != -1:
            after = at + len(dashed)
            end = _delimiter_end(data, after)
            if end is not None:
                start = self._start(data, at, pos)
                if start is not None:
                    return _Match(start, end, bytes(data[after:end]))
            at = data.find(dashed, at + 1)
        return None

    def _start(self, data: bytes | bytearray, at: int, pos: int) -> int | None:
        """Where a match ending in ``--boundary`` at ``at`` begins: at the line break before
        it (CRLF preferred), or, when the line break is optional, at the dashes."""
        if at - 2 >= pos and data[at - 2] == _CR and data[at - 1] == _LF:
            return at - 2
        if at - 1 >= pos and data[at - 1] in (_CR, _LF):
            return at - 1
        return None if self._line_break_first else at


def _line_break_end(data: bytes | bytearray, at: int) -> int | None:
    if at < len(data) and data[at] == _CR:
        return at + 2 if at + 1 < len(data) and data[at + 1] == _LF else at + 1
    return at + 1 if at < len(data) and data[at] == _LF else None


def _delimiter_end(data: bytes | bytearray, at: int) -> int | None:
    """The end of what follows ``--boundary`` at ``at``: ``--``, blanks and an optional
    line break (the closing delimiter), or blanks and a line break; None if neither."""
    closing = data[at : at + 2] == b"--"
    if closing:
        at += 2
    while at < len(data) and data[at] in _BLANKS:
        at += 1
    end = _line_break_end(data, at)
    if end is not None:
        return end
    return at if closing else None


class _Decoder(MultipartDecoder):
    """Werkzeug's decoder with ``Delimiter`` in place of its two per-boundary regexes."""

    def __init__(self, boundary: bytes) -> None:
        # The parent's set-up for a fixed boundary: its regexes then come from Python's
        # regex cache (microseconds), and are replaced below.
        super().__init__(b"edgecatalog")
        self.boundary = boundary
        self.preamble_re = Delimiter(boundary, line_break_first=False)  # type: ignore[assignment]
        self.boundary_re = Delimiter(boundary, line_break_first=True)  # type: ignore[assignment]


def multipart_boundary(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, or the error naming it."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        raise UnsupportedMediaType(
            "the upload must be multipart/form-data with an 'image' part", "Content-Type"
        )
    boundary = options.get("boundary", "")
    if not boundary or len(boundary) > 200 or not boundary.isascii():
        raise ValidationError("Content-Type", "multipart/form-data needs a boundary parameter")
    return boundary.encode("ascii")


class _Reader:
    """Routes decoder events to the part they belong to."""

    def __init__(self, images_dir: Path, max_image_bytes: int, field_limits: dict[str, int]):
        self.parts = UploadParts()
        self.images_dir = images_dir
        self.max_image_bytes = max_image_bytes
        self.field_limits = field_limits
        self.count = 0
        self.sink: IncomingFile | bytearray | None = None
        self.sink_name = ""

    def start(self, name: str, filename: str | None) -> None:
        self.count += 1
        if self.count > MAX_PARTS:
            raise ValidationError("body", f"the upload has more than {MAX_PARTS} parts")
        self.sink, self.sink_name = None, name
        if name == IMAGE_PART:
            if self.parts.image is not None:
                raise ValidationError(IMAGE_PART, "give exactly one 'image' part")
            # Accepted with or without a filename: curl -F 'image=<f' sends none.
            self.parts.image = IncomingFile(self.images_dir, max_bytes=self.max_image_bytes)
            self.parts.image_filename = filename or ""
            self.sink = self.parts.image
        elif name in self.field_limits:
            if name in self.parts.fields:
                raise ValidationError(name, f"give the '{name}' part once")
            self.sink = self.parts.fields[name] = bytearray()  # type: ignore[assignment]
        # Any other part is read and dropped: clients may send fields this service ignores.

    def data(self, chunk: bytes) -> None:
        if isinstance(self.sink, IncomingFile):
            self.sink.write(chunk)
        elif self.sink is not None:
            limit = self.field_limits[self.sink_name]
            if len(self.sink) + len(chunk) > limit:
                raise PayloadTooLarge(
                    f"the '{self.sink_name}' part is larger than {limit} bytes", self.sink_name
                )
            self.sink.extend(chunk)


def read_upload(
    stream: BinaryIO,
    content_type: str,
    *,
    images_dir: Path,
    max_body_bytes: int,
    field_limits: dict[str, int],
) -> UploadParts:
    """Read the whole body; on any error remove what was written and re-raise."""
    decoder = _Decoder(multipart_boundary(content_type))
    reader = _Reader(images_dir, max_body_bytes, field_limits)
    try:
        _pump(stream, decoder, reader, max_body_bytes)
    except BaseException:
        reader.parts.discard()
        raise
    parts = reader.parts
    parts.fields = {k: bytes(v) for k, v in parts.fields.items()}
    return parts


def _pump(stream: BinaryIO, decoder: MultipartDecoder, reader: _Reader, max_body: int) -> None:
    received = 0
    while True:
        chunk = stream.read(READ_SIZE)
        received += len(chunk)
        if received > max_body:
            raise PayloadTooLarge(f"the upload body is larger than {max_body} bytes", "body")
        decoder.receive_data(chunk if chunk else None)
        if _drain(decoder, reader):
            return  # the closing boundary was seen; an epilogue is not read
        if not chunk:  # pragma: no cover - the decoder raises first on a truncated body
            raise ValidationError("body", "the multipart body ended before its closing boundary")
        if len(decoder.buffer) > MAX_FRAMING_BYTES and decoder.state != State.DATA:
            raise ValidationError("body", "the multipart framing (part headers) is too long")


def _drain(decoder: MultipartDecoder, reader: _Reader) -> bool:
    """Handle every event the buffered bytes yield; True once the body is complete."""
    while True:
        if decoder.state == State.EPILOGUE:
            return True
        try:
            event = decoder.next_event()
        except (ValueError, UnicodeDecodeError, RequestEntityTooLarge):
            raise ValidationError(
                "body", "the multipart body is malformed or truncated (no closing boundary)"
            ) from None
        if event is NEED_DATA:
            return False
        if isinstance(event, (File, Field)):
            reader.start(event.name, event.filename if isinstance(event, File) else None)
        elif isinstance(event, Data):
            reader.data(event.data)
        elif isinstance(event, Epilogue):
            return True
