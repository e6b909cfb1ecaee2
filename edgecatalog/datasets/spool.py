"""Where an export's generated members (labels, JSON, tables) wait between the plan and the
stream: one temporary file that never has a name, plus each member's pieces in it. No Flask.

The file is made with ``tempfile.TemporaryFile``: on Linux an ``O_TMPFILE`` inode that no
folder lists (elsewhere a name removed at once), so a client that goes away, a killed process
or a crash leaves nothing on the device; the space is freed when the last descriptor closes.

A member is written through a ``SpoolWriter`` that buffers ``BUFFER`` bytes, so members that
grow side by side (COCO's images and annotations of each split) take a few pieces each, not
one per image. Its CRC-32 and length are counted as it is written: the archive knows both
before its first byte.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

BUFFER = 256 * 1024
READ_CHUNK = 1024 * 1024


class Spool:
    """An unnamed temporary file that members are appended to and read back from."""

    def __init__(self, folder: Path | None = None) -> None:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed by close()
        self._fd = self._file.fileno()
        self.size = 0  # bytes written to the file; ``_pending`` follows them
        self._pending = bytearray()

    def append(self, data: bytes) -> int:
        """Add ``data`` at the end; its offset. Small pieces (a label, a path) are gathered
        and written ``BUFFER`` at a time: a plan appends two or three per image."""
        offset = self.size + len(self._pending)
        self._pending += data
        if len(self._pending) >= BUFFER:
            self._write_pending()
        return offset

    def _write_pending(self) -> None:
        view = memoryview(self._pending)
        while view:
            written = os.pwrite(self._fd, view, self.size)
            self.size += written
            view = view[written:]
        view.release()
        self._pending = bytearray()

    def read(self, offset: int, length: int) -> bytes:
        if self._pending:
            self._write_pending()
        data = os.pread(self._fd, length, offset)
        while len(data) < length:  # pread may return less than asked
            more = os.pread(self._fd, length - len(data), offset + len(data))
            if not more:
                raise OSError(f"spool ends at {offset + len(data)}, {length} bytes wanted")
            data += more
        return data

    def pieces(self, segments: list[tuple[int, int]]) -> Iterator[bytes]:
        """The bytes of ``segments`` ((offset, length) in order), in reads of at most
        ``READ_CHUNK``, one at a time (a COCO file of a large view is tens of MB)."""
        for offset, length in segments:
            for start in range(0, length, READ_CHUNK):
                yield self.read(offset + start, min(READ_CHUNK, length - start))

    def writer(self) -> SpoolWriter:
        return SpoolWriter(self)

    def close(self) -> None:
        self._file.close()


class SpoolWriter:
    """One generated member being written: text or bytes in, pieces of the spool out."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.segments: list[tuple[int, int]] = []
        self.size = 0
        self.crc = 0
        self._buffer: list[bytes] = []
        self._buffered = 0

    @property
    def empty(self) -> bool:
        return not (self.size or self._buffered)

    def write(self, data: str | bytes) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        self._buffer.append(raw)
        self._buffered += len(raw)
        if self._buffered >= BUFFER:
            self.flush()

    def flush(self) -> None:
        if not self._buffered:
            return
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        offset = self.spool.append(data)
        last = self.segments[-1] if self.segments else None
        if last is not None and last[0] + last[1] == offset:  # contiguous: one piece
            self.segments[-1] = (last[0], last[1] + len(data))
        else:
            self.segments.append((offset, len(data)))

    def extend(self, other: SpoolWriter) -> None:
        """Append ``other``'s bytes (already spooled) after this writer's, without copying
        them: its pieces become this member's too, and their CRC is read back once."""
        self.flush()
        other.flush()
        for segment in other.segments:
            for piece in self.spool.pieces([segment]):
                self.crc = zlib.crc32(piece, self.crc)
            self.size += segment[1]
            self.segments.append(segment)
