"""An export as one ZIP whose every byte is decided before the first is sent: its members
(generated ones waiting in a ``spool``, image files on disk), their names, sizes, times and
order, hence its length and an ETag. ``Archive.chunks(start, stop)`` gives any byte range of
it, the same bytes every time, so a download that broke resumes with ``Range``. No Flask.

The plan is held in flat arrays (50 bytes a member besides its name), so an archive of
100,000 images and their labels costs about 16 MB of memory however large their files are; an
image's bytes are sent from its file when its turn comes.

A member's CRC-32 goes in its local header: a generated member's was counted as it was
spooled; an image's is the catalog's (``image.crc32``, counted when its bytes were read in),
so its bytes need not be read before its header: ``spans`` leaves them as a ``Span`` of its
file, which ``chunks`` reads a piece at a time and a sender may pass on unread. An image indexed
before the catalog kept CRCs has none: its bytes are read whole and counted before its header
is sent, and the central directory at the end, which needs every CRC, has a range starting
after such images (a resumed download) read them again to count theirs (a local disk read;
nothing is kept between requests, nothing is written). A file changed in place after it was
indexed (same size, other bytes) goes out with the catalog's CRC, which any unzip then finds
wrong for that member: the archive never vouches for bytes the catalog did not index.

The ETag is a digest of the whole plan (every name, size, time and order, each generated
member's CRC and each image's SHA-256): the same plan is the same bytes. A file that changed
size or vanished after the plan cannot be sent as planned; ``ExportBroken`` then stops the
stream short of its ``Content-Length``, which any client sees as a failed download.

``ArchiveFile`` is a byte range of it as a read-only, seekable file, what a WSGI server's
``wsgi.file_wrapper`` sends from: waitress then reads it from its I/O thread straight into the
socket, instead of every byte going through its output buffer from a worker thread; with
``send_into``, a server that knows it (``server.SendingChannel``) gives it the socket, and
the spans go with ``sendfile``.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import logging
import os
import zlib
from array import array
from collections.abc import Iterator
from itertools import accumulate
from typing import NamedTuple, NoReturn

from .. import safeopen
from . import zipformat as zf
from .spool import Spool, SpoolWriter

GENERATED, FILE = 0, 1  # Archive counts files by summing kinds
# A member's part of the ETag digest, by kind: its kind, name length, size and time, its
# name, then its proof (a generated member's CRC in decimal, a file's SHA-256).
_RECORD = (b"%d\0%d\0%d\0%d\0%s%d", b"%d\0%d\0%d\0%d\0%s%s")
COALESCE = 64 * 1024  # smaller pieces (headers, labels) are sent together up to this size
READ_CHUNK = 1024 * 1024
log = logging.getLogger("edgecatalog.exports")


class ExportBroken(OSError):
    """A planned image file is no longer what the plan saw (gone, or another size).

    An ``OSError``: a server sending from an ``ArchiveFile`` treats it as the connection
    failing and closes it, the only way left to tell a client whose headers are sent."""


class ArchiveBuilder:
    """Members added in archive order, each one's offset and part of the central directory
    counted as it comes (its headers' lengths follow from its name and size); ``build``
    gives the archive, its layout already known."""

    def __init__(self, spool: Spool, *, force_zip64: bool = False) -> None:
        self.spool = spool
        self.force_zip64 = force_zip64
        # "I" (4 bytes) where a value fits 32 bits: "L" is 8 on Linux, and an archive of
        # 100,000 images has 200,000 members.
        self._kind = array("B")
        self._name_at = array("Q")
        self._names = bytearray()
        self._size = array("Q")
        self._crc = array("I")
        self._crc_known = array("B")
        self._unknown = 0  # members whose CRC is counted when sent (images indexed without)
        self._src = array("Q")  # spool offset: a generated member's bytes, a file's path
        self._src_len = array("I")
        self._dos = array("I")
        self._segments: dict[int, list[tuple[int, int]]] = {}  # generated, several pieces
        self._digest = hashlib.sha256()
        # The layout as members come: each one's local header offset, where the next would
        # start (the central directory's offset) and the central directory's size so far.
        self._offset = array("Q")
        self._at = 0
        self._cd_size = 0

    def __len__(self) -> int:
        return len(self._kind)

    def _add(
        self,
        kind: int,
        name: str,
        size: int,
        crc: int | None,
        dos: int,
        proof: bytes | int,
        src: int,
        src_len: int,
    ) -> None:
        """A member's entry in the arrays, the digest and the layout. ``proof``: a file's
        SHA-256 (ASCII hex), a generated member's CRC."""
        raw = name.encode("utf-8")
        length = len(raw)
        if length > zf.MAX16:
            raise ValueError(f"member name longer than {zf.MAX16} bytes: {name[:80]!r}")
        at = self._at
        self._kind.append(kind)
        self._name_at.append(len(self._names))
        self._names += raw
        self._size.append(size)
        self._crc.append(crc or 0)
        self._crc_known.append(crc is not None)
        self._unknown += crc is None
        self._src.append(src)
        self._src_len.append(src_len)
        self._dos.append(dos)
        self._offset.append(at)
        self._digest.update(_RECORD[kind] % (kind, length, size, dos, raw, proof))
        if size < zf.MAX32 and at < zf.MAX32:  # no ZIP64 extra: the headers and the name
            self._cd_size += zf.CENTRAL.size + length
            self._at = at + zf.LOCAL.size + length + size
        else:
            self._cd_size += zf.central_length(raw, size, at)
            self._at = at + zf.local_length(raw, size) + size

    def add_generated(self, name: str, writer: SpoolWriter, dos: int) -> None:
        writer.flush()
        index, segments = len(self._kind), writer.segments
        src = segments[0][0] if segments else 0
        self._add(GENERATED, name, writer.size, writer.crc, dos, writer.crc, src, 0)
        if len(segments) > 1:
            self._segments[index] = list(segments)

    def add_bytes(self, name: str, data: str | bytes, dos: int) -> None:
        """A small generated member (a label) whole: straight to the spool, which gathers
        such pieces into large writes, without a ``SpoolWriter`` of its own."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        crc = zlib.crc32(raw)
        self._add(GENERATED, name, len(raw), crc, dos, crc, self.spool.append(raw), 0)

    def add_file(
        self,
        name: str,
        size: int,
        sha256: str,
        root: str,
        rel: str,
        dos: int,
        crc: int | None = None,
    ) -> None:
        """An image file, ``rel`` beneath ``root``, of ``size`` bytes with that SHA-256 and,
        when the catalog has it, that CRC-32 (None: counted from the bytes when sent)."""
        where = f"{root}\0{rel}".encode()
        src = self.spool.append(where)
        self._add(FILE, name, size, crc, dos, sha256.encode("ascii"), src, len(where))

    def build(self) -> Archive:
        digest = self._digest.copy()
        digest.update(b"zip64" if self.force_zip64 else b"zip")
        return Archive(self, digest.hexdigest()[:40])


class Archive:
    """The planned ZIP: ``size`` bytes, ``etag``; ``chunks`` gives any range of it."""

    def __init__(self, plan: ArchiveBuilder, etag: str) -> None:
        self.spool = plan.spool
        self.etag = etag
        self.force_zip64 = plan.force_zip64
        self._kind, self._size = plan._kind, plan._size
        # Shared with the plan (no member is added after ``build``), but for CRCs still to be
        # counted: copies, so that counting them for this request tells no other.
        self._crc, self._crc_known = plan._crc, plan._crc_known
        if plan._unknown:
            self._crc, self._crc_known = array("I", plan._crc), array("B", plan._crc_known)
        self._name_at, self._names = plan._name_at, plan._names
        self._src, self._src_len, self._dos = plan._src, plan._src_len, plan._dos
        self._segments = plan._segments
        self._offset, self.cd_offset, self.cd_size = plan._offset, plan._at, plan._cd_size
        self.entries = len(self._kind)
        # Image files among the members, and how many end at or before each member's start:
        # a running sum of the kinds, GENERATED being 0 and FILE 1.
        self._files_before = array("I", accumulate(self._kind, initial=0))
        self.files = self._files_before[-1]
        self.size = (
            self.cd_offset
            + self.cd_size
            + zf.end_length(
                self.entries, self.cd_offset, self.cd_size, force_zip64=self.force_zip64
            )
        )

    def name(self, k: int) -> bytes:
        end = self._name_at[k + 1] if k + 1 < len(self._name_at) else len(self._names)
        return bytes(self._names[self._name_at[k] : end])

    def close(self) -> None:
        self.spool.close()

    def files_before(self, offset: int) -> int:
        """How many image files are whole in the archive's first ``offset`` bytes."""
        k = bisect.bisect_right(self._offset, offset)  # members starting at or before it
        whole = k - 1 if k and self._offset[k - 1] + self._length(k - 1) > offset else k
        return self._files_before[whole]

    def _length(self, k: int) -> int:
        return zf.local_length(self.name(k), self._size[k]) + self._size[k]

    # -- bytes -----------------------------------------------------------------------------

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The bytes ``start`` to ``stop`` (exclusive; default: the end), in pieces."""
        for piece in self.spans(start, stop):
            if isinstance(piece, Span):
                yield from self.read_span(piece)
            else:
                yield piece

    def spans(self, start: int = 0, stop: int | None = None) -> Iterator[bytes | Span]:
        """The same range as pieces of bytes and, for each image whose CRC the plan has, a
        ``Span`` of its file: left for the sender to read, or to send without reading."""
        stop = self.size if stop is None else min(stop, self.size)
        out = _Window(start, stop)
        if start < self.cd_offset:
            first = max(bisect.bisect_right(self._offset, start) - 1, 0)
            for k in range(first, self.entries):
                if self._offset[k] >= stop:
                    break
                yield from out.take(self._offset[k], self._member(k, out))
        if stop > self.cd_offset:
            yield from out.take(self.cd_offset, self._central(out))
        yield from out.flush()

    def _member(self, k: int, out: _Window) -> Iterator[bytes | Span]:
        name, size = self.name(k), self._size[k]
        if self._kind[k] == GENERATED:
            yield zf.local_header(name, size, self._crc[k], self._dos[k])
            segments = self._segments.get(k) or [(self._src[k], size)]
            data_at = self._offset[k] + zf.local_length(name, size)
            if out.overlaps(data_at, size):
                yield from self.spool.pieces(segments)
            else:  # none of its data falls in the window: not read
                out.skip(size)
            return
        if self._crc_known[k]:
            yield zf.local_header(name, size, self._crc[k], self._dos[k])
            yield Span(k, 0, size)
            return
        data = self._read_file(k)
        yield zf.local_header(name, size, self._crc[k], self._dos[k])
        yield data

    def _central(self, out: _Window) -> Iterator[bytes]:
        at = self.cd_offset
        for k in range(self.entries):
            name, size, offset = self.name(k), self._size[k], self._offset[k]
            length = zf.central_length(name, size, offset)
            if at + length <= out.start:  # before the window: no CRC needed
                out.skip(length)
            else:
                if at >= out.stop:
                    return
                yield zf.central_entry(name, size, self._file_crc(k), self._dos[k], offset)
            at += length
        yield from zf.end_records(
            self.entries, self.cd_offset, self.cd_size, force_zip64=self.force_zip64
        )

    # -- image files -----------------------------------------------------------------------

    def open_file(self, k: int) -> int:
        """Member ``k``'s file, opened beneath its root without following a link, and still
        the size the plan has (``ExportBroken`` otherwise); the caller closes it."""
        root, rel = self.spool.read(self._src[k], self._src_len[k]).decode().split("\0", 1)
        try:
            fd = safeopen.open_fd(root, rel)
        except (OSError, ValueError) as exc:
            raise ExportBroken(f"{rel}: {exc}") from None
        found = os.fstat(fd).st_size
        if found != self._size[k]:
            os.close(fd)
            raise self.broken(k, found)
        return fd

    def broken(self, k: int, found: int | str) -> ExportBroken:
        return ExportBroken(f"{self.name(k).decode()}: {found} bytes, {self._size[k]} planned")

    def read_span(self, span: Span) -> Iterator[bytes]:
        """A span's bytes, read ``READ_CHUNK`` at a time."""
        fd = self.open_file(span.k)
        try:
            at, end = span.offset, span.offset + span.length
            while at < end:
                piece = os.pread(fd, min(READ_CHUNK, end - at), at)
                if not piece:  # shorter since it was opened
                    raise self.broken(span.k, at)
                at += len(piece)
                yield piece
        finally:
            os.close(fd)

    def _read_file(self, k: int) -> bytes:
        """A file without a planned CRC: read whole (to count it before its header)."""
        size = self._size[k]
        fd = self.open_file(k)
        try:
            chunks, got = [], 0
            while got <= size:
                piece = os.read(fd, size + 1 - got)
                if not piece:
                    break
                chunks.append(piece)
                got += len(piece)
        finally:
            os.close(fd)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(data) != size:  # changed since it was opened
            raise self.broken(k, f"more than {size}" if len(data) > size else len(data))
        if not self._crc_known[k]:
            self._crc[k], self._crc_known[k] = zlib.crc32(data), 1
        return data

    def _file_crc(self, k: int) -> int:
        if not self._crc_known[k]:
            fd, crc, got = self.open_file(k), 0, 0
            try:
                while piece := os.read(fd, READ_CHUNK):
                    crc, got = zlib.crc32(piece, crc), got + len(piece)
            finally:
                os.close(fd)
            if got != self._size[k]:
                raise self.broken(k, got)
            self._crc[k], self._crc_known[k] = crc, 1
        return self._crc[k]


class Span(NamedTuple):
    """Bytes ``offset`` to ``offset + length`` of member ``k``'s file (an image whose CRC
    the plan has)."""

    k: int
    offset: int
    length: int


class ArchiveFile(io.RawIOBase):
    """Bytes ``start`` to ``stop`` of an archive as a read-only file positioned at ``start``
    (its end is ``stop``). A read gives at most one of the archive's pieces (headers and
    labels gathered up to ``COALESCE``, or up to ``READ_CHUNK`` of an image), so a server that
    reads, seeks back and skips what it sent (waitress) gets the same piece again without
    reading it twice; a seek elsewhere starts the pieces over from there. ``send_into`` gives
    the bytes to a socket instead, an image's with ``sendfile``: from the page cache to the
    socket without passing through Python. Closing it closes the archive.

    A file that broke the plan raises ``ExportBroken``, logged here once."""

    def __init__(self, archive: Archive, start: int = 0, stop: int | None = None) -> None:
        super().__init__()
        self.archive = archive
        self._stop = archive.size if stop is None else min(stop, archive.size)
        self._pos = start
        self._piece: bytes | Span = b""
        self._piece_at = start
        self._pieces: Iterator[bytes | Span] | None = None
        self._next_at = start  # where the next piece of ``_pieces`` begins
        self._fd, self._fd_of = -1, -1  # the open file of the current span, and its member
        self._broken: ExportBroken | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._stop}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if self._pos >= self._stop or size == 0:
            return b""
        piece, begin = self._current()
        if isinstance(piece, Span):
            want = min(piece.length - begin, READ_CHUNK if size < 0 else min(size, READ_CHUNK))
            data = os.pread(self._span_fd(piece), want, piece.offset + begin)
            if not data:  # shorter since it was opened
                self._fail(self.archive.broken(piece.k, piece.offset + begin))
            self._pos += len(data)
            return data
        end = len(piece) if size < 0 else min(len(piece), begin + size)
        out = piece if begin == 0 and end == len(piece) else piece[begin:end]
        self._pos += len(out)
        return out

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def send_into(self, fd: int, limit: int) -> int:
        """Give up to ``limit`` bytes from the position on to the non-blocking socket ``fd``,
        without moving the position (a server skips what was taken, as after ``read``); how
        many it took, 0 when it is full."""
        if self._pos >= self._stop or limit <= 0:
            return 0
        piece, begin = self._current()
        try:
            if isinstance(piece, Span):
                want = min(piece.length - begin, limit)
                sent = os.sendfile(fd, self._span_fd(piece), piece.offset + begin, want)
                if not sent:  # end of file before the span's end: shorter than planned
                    self._fail(self.archive.broken(piece.k, piece.offset + begin))
                return sent
            return os.write(fd, memoryview(piece)[begin : begin + limit])
        except BlockingIOError:
            return 0

    def _current(self) -> tuple[bytes | Span, int]:
        """The piece holding the position, and where in it the position is."""
        if self._broken is not None:  # a server may read again before it closes
            raise self._broken
        length = _length_of(self._piece)
        if not self._piece_at <= self._pos < self._piece_at + length:
            self._advance()
        return self._piece, self._pos - self._piece_at

    def _advance(self) -> None:
        if self._pieces is None or self._pos < self._next_at:
            self._pieces, self._next_at = self.archive.spans(self._pos, self._stop), self._pos
        try:
            while True:
                piece = next(self._pieces, None)
                if piece is None:  # cannot be: the plan says how long the archive is
                    raise ExportBroken(f"the archive ended at {self._next_at} of {self._stop}")
                at = self._next_at
                self._next_at += _length_of(piece)
                if self._pos < self._next_at:
                    self._piece, self._piece_at = piece, at
                    return
        except ExportBroken as exc:
            self._fail(exc)

    def _span_fd(self, span: Span) -> int:
        if self._fd_of != span.k:
            self._close_fd()
            try:
                self._fd = self.archive.open_file(span.k)
            except ExportBroken as exc:
                self._fail(exc)
            self._fd_of = span.k
        return self._fd

    def _fail(self, exc: ExportBroken) -> NoReturn:
        log.warning("export stopped short of its length: %s", exc)
        exc.logged = True  # type: ignore[attr-defined]  # the server's log need not repeat it
        self._broken = exc
        raise exc

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._fd_of = -1, -1

    def close(self) -> None:
        if not self.closed:
            self._close_fd()
            self.archive.close()
        super().close()


def _length_of(piece: bytes | Span) -> int:
    return piece.length if isinstance(piece, Span) else len(piece)


class _Window:
    """The requested range [start, stop): clips pieces (and spans) at their absolute
    positions and gathers small pieces into ``COALESCE``-sized ones."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._at = 0  # the absolute position of the next piece ``take`` sees

    def overlaps(self, at: int, length: int) -> bool:
        return at < self.stop and at + length > self.start

    def skip(self, length: int) -> None:
        self._at += length

    def take(self, at: int, pieces: Iterator[bytes | Span]) -> Iterator[bytes | Span]:
        self._at = at
        for piece in pieces:
            length = _length_of(piece)
            begin, end = self._at, self._at + length
            self._at = end
            if end <= self.start or begin >= self.stop or not length:
                continue
            front, back = max(self.start - begin, 0), max(end - self.stop, 0)
            if isinstance(piece, Span):
                yield from self.flush()
                yield Span(piece.k, piece.offset + front, length - front - back)
                continue
            if front or back:
                piece = piece[front : length - back]
            if len(piece) >= COALESCE:
                yield from self.flush()
                yield piece
            else:
                self._pending.append(piece)
                self._pending_size += len(piece)
                if self._pending_size >= COALESCE:
                    yield from self.flush()

    def flush(self) -> Iterator[bytes]:
        if self._pending:
            yield b"".join(self._pending)
            self._pending, self._pending_size = [], 0
