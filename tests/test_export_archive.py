"""The archive behind every export, without a catalog: any byte range of a planned ZIP is
the same bytes as the whole; ZIP64 past 65,535 entries (and when forced) reads back in the
standard library; the spool has no name on disk; a file that changed after the plan stops
the stream rather than sending other bytes."""

from __future__ import annotations

import hashlib
import io
import os
import random
import zipfile

import pytest

from edgecatalog.datasets.archive import ArchiveBuilder, ExportBroken
from edgecatalog.datasets.spool import Spool
from edgecatalog.datasets.zipformat import dos_time

DOS = dos_time((2026, 5, 1, 12, 30, 10))


def planned(tmp_path, files: dict[str, bytes], *, force_zip64: bool = False) -> ArchiveBuilder:
    builder = ArchiveBuilder(Spool(tmp_path / "spool"), force_zip64=force_zip64)
    builder.add_bytes("data.yaml", 'names:\n  0: "é"\n', DOS)
    long = builder.spool.writer()
    for i in range(30_000):
        long.write(f"line {i}\n")
    builder.add_generated("long.txt", long, DOS)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        builder.add_file(f"images/{name}", len(data), sha, str(tmp_path), name, DOS)
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


def test_a_file_changed_after_the_plan_stops_the_stream(tmp_path):
    archive = planned(tmp_path, {"a.bin": b"a" * 5000, "b.bin": b"b" * 5000}).build()
    (tmp_path / "b.bin").write_bytes(b"b" * 4000)
    with pytest.raises(ExportBroken, match="4000 bytes, 5000 planned"):
        b"".join(archive.chunks())
    (tmp_path / "b.bin").unlink()
    with pytest.raises(ExportBroken):  # its CRC, for the central directory of a resume
        b"".join(archive.chunks(archive.cd_offset))
