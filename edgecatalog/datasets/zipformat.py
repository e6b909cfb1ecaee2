"""The ZIP records an export is made of, as bytes: stored (uncompressed) members whose size and
CRC-32 are known when their local header is written, the central directory, and the end
records, ZIP64 where a size, an offset or the number of entries needs it. Standard library
only (``struct``); no Flask.

Why no data descriptors: a member's CRC is computed from its bytes just before its header is
written (an image is read whole, at most ``[ingest] max_upload_bytes``), so every local header
is complete and a streaming reader (``unzip -``, Java's ``ZipInputStream``) can read a stored
member without the central directory. Every length here follows from the names and sizes
alone, so an archive's total length is known before its first byte (``archive``).

Names are UTF-8 (general-purpose flag bit 11); every member is a regular file, mode 0644.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
END = struct.Struct("<IHHHHIIH")  # 22 bytes
END64 = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
LOCATOR64 = struct.Struct("<IIQI")  # 20 bytes

UTF8 = 0x0800
STORED = 0
VERSION = 20  # 2.0: stored members, folders in names
VERSION64 = 45  # 4.5: ZIP64 extensions
MADE_BY_UNIX = 3 << 8
REGULAR_0644 = (0o100644 << 16) & 0xFFFFFFFF
MAX32 = 0xFFFFFFFF
MAX16 = 0xFFFF
MIN_DOS = (1980, 1, 1, 0, 0, 0)


def dos_time(stamp: tuple[int, int, int, int, int, int]) -> int:
    """(year, month, day, hour, minute, second) as the DOS date (high 16 bits) and time (low
    16 bits) a ZIP header holds; clamped to 1980..2107, seconds rounded down to even."""
    year, month, day, hour, minute, second = stamp
    if year < 1980:
        year, month, day, hour, minute, second = MIN_DOS
    year = min(year, 2107)
    date = ((year - 1980) << 9) | (month << 5) | day
    return (date << 16) | (hour << 11) | (minute << 5) | (second // 2)


def local_length(name: bytes, size: int) -> int:
    """Bytes of a member's local header (with its ZIP64 extra when the size needs one)."""
    return LOCAL.size + len(name) + (20 if size >= MAX32 else 0)


def local_header(name: bytes, size: int, crc: int, dos: int) -> bytes:
    big = size >= MAX32
    extra = struct.pack("<HHQQ", 1, 16, size, size) if big else b""
    head = LOCAL.pack(
        0x04034B50,
        VERSION64 if big else VERSION,
        UTF8,
        STORED,
        dos & 0xFFFF,
        dos >> 16,
        crc,
        MAX32 if big else size,
        MAX32 if big else size,
        len(name),
        len(extra),
    )
    return head + name + extra


def _central_extra(size: int, offset: int) -> bytes:
    values = [v for v in (size, size) if size >= MAX32]
    if offset >= MAX32:
        values.append(offset)
    if not values:
        return b""
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values)


def central_length(name: bytes, size: int, offset: int) -> int:
    """Bytes of a member's central directory entry: ``central_entry``'s length."""
    return CENTRAL.size + len(name) + len(_central_extra(size, offset))


def central_entry(name: bytes, size: int, crc: int, dos: int, offset: int) -> bytes:
    extra = _central_extra(size, offset)
    version = VERSION64 if extra else VERSION
    head = CENTRAL.pack(
        0x02014B50,
        MADE_BY_UNIX | version,
        version,
        UTF8,
        STORED,
        dos & 0xFFFF,
        dos >> 16,
        crc,
        min(size, MAX32),
        min(size, MAX32),
        len(name),
        len(extra),
        0,
        0,
        0,
        REGULAR_0644,
        min(offset, MAX32),
    )
    return head + name + extra


def needs_zip64(entries: int, cd_offset: int, cd_size: int) -> bool:
    return entries >= MAX16 or cd_offset >= MAX32 or cd_size >= MAX32


def end_length(entries: int, cd_offset: int, cd_size: int, *, force_zip64: bool = False) -> int:
    big = force_zip64 or needs_zip64(entries, cd_offset, cd_size)
    return END.size + (END64.size + LOCATOR64.size if big else 0)


def end_records(
    entries: int, cd_offset: int, cd_size: int, *, force_zip64: bool = False
) -> Iterator[bytes]:
    """The records after the central directory: ZIP64's end record and locator when needed
    (or forced), then the classic end record (its fields at their maximum when ZIP64 holds
    the real values)."""
    big = force_zip64 or needs_zip64(entries, cd_offset, cd_size)
    if big:
        end64_offset = cd_offset + cd_size
        yield END64.pack(
            0x06064B50,
            END64.size - 12,
            MADE_BY_UNIX | VERSION64,
            VERSION64,
            0,
            0,
            entries,
            entries,
            cd_size,
            cd_offset,
        )
        yield LOCATOR64.pack(0x07064B50, 0, end64_offset, 1)
    yield END.pack(
        0x06054B50,
        0,
        0,
        min(entries, MAX16) if not big else MAX16,
        min(entries, MAX16) if not big else MAX16,
        min(cd_size, MAX32) if not big else MAX32,
        min(cd_offset, MAX32) if not big else MAX32,
        0,
    )
