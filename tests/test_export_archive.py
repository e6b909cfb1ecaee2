"""The archive behind every export, without a catalog: any byte range of a planned ZIP is
the same bytes as the whole; ZIP64 past 65,535 entries (and when forced) reads back in the
standard library; read as a file (a server's ``wsgi.file_wrapper``: read, seek back, skip
what was sent) it gives the same bytes; the spool has no name on disk; a file that changed
after the plan stops the stream rather than sending other bytes."""

from __future__ import annotations

import hashlib
import io
import os
import random
import zipfile
import zlib

import pytest

from edgecatalog.datasets.archive import READ_CHUNK, ArchiveBuilder, ArchiveFile, ExportBroken
from edgecatalog.datasets.spool import Spool
from edgecatalog.datasets.zipformat import dos_time

DOS = dos_time((2026, 5, 1, 12, 30, 10))


def planned(
    tmp_path, files: dict[str, bytes], *, force_zip64: bool = False, crcs: bool = False
) -> ArchiveBuilder:
    builder = ArchiveBuilder(Spool(tmp_path / "spool"), force_zip64=force_zip64)
    builder.add_bytes("data.yaml", 'names:\n  0: "é"\n', DOS)
    long = builder.spool.writer()
    for i in range(30_000):
        long.write(f"line {i}\n")
    builder.add_generated("long.txt", long, DOS)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        crc = zlib.crc32(data) if crcs else None  # the catalog's, or none (indexed before)
        builder.add_file(f"images/{name}", len(data), sha, str(tmp_path), name, DOS, crc)
    return builder


@pytest.mark.parametrize("force_zip64", [False, True])
def test_every_range_is_the_same_bytes(tmp_path, force_zip64):
    rng = random.Random(5)
    files = {f"f{i}.bin": os.urandom(rng.randrange(0, 200_000)) for i in range(12)}
    builder = planned(tmp_path, files, force_zip64=force_zip64)
    archive = builder.build()
    whole = b"".join(archive.chunks())
    assert len(whole) == archive.size
    z = zipfile.ZipFile(io.BytesIO(whole))
    assert z.testzip() is None
    assert [z.read(f"images/{n}") for n in files] == list(files.values())
    assert z.getinfo("data.yaml").date_time == (2026, 5, 1, 12, 30, 10)
    for _ in range(60):
        start = rng.randrange(archive.size)
        stop = rng.randrange(start, archive.size + 1)
        fresh = builder.build()  # a new request: no CRC known yet
        assert b"".join(fresh.chunks(start, stop)) == whole[start:stop], (start, stop)
    assert builder.build().etag == archive.etag


def sent_as_waitress_does(file: ArchiveFile, rng: random.Random) -> bytes:
    """What waitress's ReadOnlyFileBasedBuffer sends: its size from seeking to the end, then
    read up to a socket buffer, seek back, and skip as much as the socket took (a part)."""
    start = file.tell()
    remain = file.seek(0, io.SEEK_END) - start
    file.seek(start)
    out = bytearray()
    while remain:
        at = file.tell()
        chunk = file.read(min(rng.choice([1, 700, 65536, 300_000]), remain))
        file.seek(at)
        taken = rng.randrange(1, len(chunk) + 1)
        out += chunk[:taken]
        file.seek(taken, io.SEEK_CUR)
        remain -= taken
    return bytes(out)


def test_the_archive_read_as_a_file_is_the_same_bytes(tmp_path):
    rng = random.Random(7)
    files = {f"f{i}.bin": os.urandom(rng.randrange(0, 200_000)) for i in range(8)}
    builder = planned(tmp_path, files)
    whole = b"".join(builder.build().chunks())
    opened = [ArchiveFile(builder.build())]  # kept: a file closed (or collected) closes the spool
    assert sent_as_waitress_does(opened[0], rng) == whole
    for _ in range(20):
        start = rng.randrange(len(whole))
        stop = rng.randrange(start, len(whole) + 1)
        file = ArchiveFile(builder.build(), start, stop)
        opened.append(file)
        assert sent_as_waitress_does(file, rng) == whole[start:stop], (start, stop)
        file.seek(rng.randrange(start, stop + 1))  # backwards too: the pieces start over
        at, rest = file.tell(), bytearray()
        while piece := file.read():
            rest += piece
        assert bytes(rest) == whole[at:stop], (at, stop)
    # Read as an iterating server does (werkzeug's FileWrapper): read(block) until empty.
    file, got = ArchiveFile(builder.build(), 1000), bytearray()
    while piece := file.read(256 * 1024):
        got += piece
    assert bytes(got) == whole[1000:]
    spool = file.archive.spool
    file.close()
    assert file.closed and spool._file.closed


def test_the_catalogs_crcs_give_the_same_archive_read_a_piece_at_a_time(tmp_path):
    files = {"a.bin": os.urandom(2_500_000), "b.bin": os.urandom(1000), "c.bin": b""}
    counted = planned(tmp_path / "counted", files).build()
    known = planned(tmp_path / "known", files, crcs=True).build()
    whole = b"".join(counted.chunks())
    assert known.etag == counted.etag  # the same plan: the CRC is the bytes', however known
    pieces = list(known.chunks())
    assert b"".join(pieces) == whole
    assert max(map(len, pieces)) <= READ_CHUNK  # never a whole file in memory
    # A resume past an image needs no read of it for the central directory.
    (tmp_path / "known" / "a.bin").unlink()
    assert b"".join(known.chunks(known.cd_offset)) == whole[known.cd_offset :]


def test_a_file_changed_in_place_fails_its_crc_not_silently(tmp_path):
    files = {"a.bin": os.urandom(5000), "b.bin": os.urandom(5000)}
    archive = planned(tmp_path, files, crcs=True).build()
    (tmp_path / "b.bin").write_bytes(os.urandom(5000))  # same size, other bytes
    z = zipfile.ZipFile(io.BytesIO(b"".join(archive.chunks())))
    assert z.testzip() == "images/b.bin"
    assert z.read("images/a.bin") == files["a.bin"]


def test_zip64_past_65535_entries(tmp_path):
    builder = ArchiveBuilder(Spool(tmp_path / "spool"))
    for i in range(70_000):
        builder.add_bytes(f"labels/{i}.txt", f"{i}\n" if i % 3 else "", DOS)
    archive = builder.build()
    z = zipfile.ZipFile(io.BytesIO(b"".join(archive.chunks())))
    assert len(z.infolist()) == 70_000
    assert z.read("labels/69998.txt") == b"69998\n" and z.read("labels/69999.txt") == b""


def test_the_spool_has_no_name(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.append(b"x" * 1000)
    assert os.listdir(tmp_path / "spool") == []
    spool.close()


@pytest.mark.parametrize("crcs", [False, True])
def test_a_file_changed_after_the_plan_stops_the_stream(tmp_path, crcs):
    archive = planned(tmp_path, {"a.bin": b"a" * 5000, "b.bin": b"b" * 5000}, crcs=crcs).build()
    (tmp_path / "b.bin").write_bytes(b"b" * 4000)
    with pytest.raises(ExportBroken, match="4000 bytes, 5000 planned"):
        b"".join(archive.chunks())
    (tmp_path / "b.bin").write_bytes(b"b" * 6000)
    with pytest.raises(ExportBroken, match="6000 bytes, 5000 planned"):
        b"".join(archive.chunks())
    (tmp_path / "b.bin").unlink()
    if not crcs:
        with pytest.raises(ExportBroken):  # its CRC, for the central directory of a resume
            b"".join(archive.chunks(archive.cd_offset))
    file = ArchiveFile(archive)
    with pytest.raises(ExportBroken, match="b.bin: ") as raised:
        while file.read(65536):
            pass
    assert raised.value.logged  # said once where it happened; the server's log skips it
    with pytest.raises(ExportBroken):  # and again, should the server read once more
        file.read(65536)
    assert isinstance(raised.value, OSError)  # what makes a server close the connection
