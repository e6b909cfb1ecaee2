"""The plan's shortcuts give what their plain forms gave: the same bytes and ETag for a fixed
plan (pinned: they were computed before the plan was made faster), a header length counted
without building the header, ``split_suffix`` as ``os.path.splitext``, ``dos_of`` as
``time.gmtime`` then ``dos_time``, and ``Files.absent`` (a stat relative to the root's folder)
as a stat of the whole path, failures included."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import stat
import time
import zlib

import pytest

from edgecatalog.datasets.archive import ArchiveBuilder
from edgecatalog.datasets.export import Files, dos_of
from edgecatalog.datasets.naming import split_suffix
from edgecatalog.datasets.select import ExportRow
from edgecatalog.datasets.spool import Spool
from edgecatalog.datasets.zipformat import MAX32, MIN_DOS, central_entry, central_length, dos_time

DOS = dos_time((2026, 5, 1, 12, 30, 10))


def fixed_plan(tmp_path, force_zip64: bool) -> ArchiveBuilder:
    builder = ArchiveBuilder(Spool(tmp_path / "spool"), force_zip64=force_zip64)
    builder.add_bytes("data.yaml", 'names:\n  0: "é"\n', DOS)
    builder.add_bytes("labels/train/a.txt", b"0 0.500000 0.500000 0.250000 0.250000\n", DOS + 1)
    builder.add_bytes("labels/train/empty.txt", b"", DOS)
    long = builder.spool.writer()
    for i in range(30_000):
        long.write(f"line {i}\n")
        if i % 7000 == 0:  # another member spooled meanwhile: this one in several pieces
            other = builder.spool.writer()
            other.write("x" * 300_000)
            other.flush()
    builder.add_generated("long.txt", long, DOS)
    for i, n in enumerate([0, 1, 1000, 70_000]):
        data = bytes((i * 7 + k) % 251 for k in range(n))
        (tmp_path / f"f{i}.bin").write_bytes(data)
        crc = zlib.crc32(data) if i % 2 else None
        sha = hashlib.sha256(data).hexdigest()
        builder.add_file(f"images/train/é{i}.bin", n, sha, str(tmp_path), f"f{i}.bin", DOS - i, crc)
    return builder


@pytest.mark.parametrize(
    ("force_zip64", "etag", "size", "sha256"),
    [
        (
            False,
            "749ddc14f312b16647e1a94f1311ff390863dadd",
            390850,
            "16ff22eff62ec3a5afce0d1063317d624b5bc581d32e037de624eca6f19a2811",
        ),
        (
            True,
            "b2956b155307d107d908efa45eebffc766656558",
            390926,
            "e6baf4626fb1b3a8aa2a6f60ddd3b9a9158e7a9775e65c575f3f9c157b7b9e17",
        ),
    ],
)
def test_a_fixed_plan_is_the_bytes_and_etag_it_always_was(
    tmp_path, force_zip64, etag, size, sha256
):
    archive = fixed_plan(tmp_path, force_zip64).build()
    assert (archive.etag, archive.size) == (etag, size)
    assert hashlib.sha256(b"".join(archive.chunks())).hexdigest() == sha256


@pytest.mark.parametrize("size", [0, 5, MAX32 - 1, MAX32, MAX32 + 5])
@pytest.mark.parametrize("offset", [0, MAX32 - 1, MAX32, 3 * MAX32])
def test_a_central_entrys_length_is_counted_without_it(size, offset):
    assert central_length(b"name", size, offset) == len(central_entry(b"name", size, 0, 0, offset))


def test_split_suffix_is_splitext_for_a_name_without_separators():
    for n in range(8):
        for chars in itertools.product(".a _é", repeat=n):
            name = "".join(chars)
            assert split_suffix(name) == os.path.splitext(name), name


def _dos_by_gmtime(us: int | None) -> int:
    if not us:
        return dos_time(MIN_DOS)
    return dos_time(tuple(time.gmtime(us // 1_000_000))[:6])  # type: ignore[arg-type]


def test_dos_of_is_gmtime_then_dos_time():
    rng = random.Random(7)
    start_1980, end_2107 = 315_532_800_000_000, 4_354_819_200_000_000
    edges = [None, 0, 1, -1, start_1980, start_1980 - 1, end_2107, end_2107 - 1, 10**16, -(10**15)]
    near = [
        rng.randrange(t - 10**11, t + 10**11) for t in (start_1980, end_2107) for _ in range(3000)
    ]
    anywhere = [rng.randrange(-4 * 10**15, 8 * 10**15) for _ in range(20_000)]
    for us in edges + near + anywhere:
        assert dos_of(us) == _dos_by_gmtime(us), us
    runs = [us + k for us in edges[1:] + near[:500] for k in (0, 1, 999_999, 10**6)]
    assert [dos_of(us) for us in runs] == [_dos_by_gmtime(us) for us in runs]


def _absent_by_whole_path(row: ExportRow) -> str | None:
    if row.evicted_at is not None:
        return "evicted from this device after it was synced"
    try:
        st = os.stat(os.path.join(row.root_path, row.rel_path), follow_symlinks=False)
    except OSError as exc:
        return f"file not found ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != row.byte_size:
        return f"the file has {st.st_size} bytes, the catalog {row.byte_size}"
    return None


def _row(root: str, rel: str, size: int = 3, evicted_at: int | None = None) -> ExportRow:
    return ExportRow(
        1, "a.jpg", 8, 8, "cam", "train", False, 1, evicted_at, "0" * 64, None, size, 1, root, rel
    )


def test_files_absent_is_a_stat_of_the_whole_path(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"abc")
    (root / "link.jpg").symlink_to(root / "sub" / "a.jpg")
    (tmp_path / "root-link").symlink_to(root)
    (tmp_path / "sub-link").symlink_to(root / "sub")
    (tmp_path / "a-file").write_bytes(b"abc")
    rows = [
        _row(str(root), "sub/a.jpg"),
        _row(str(root), "sub/a.jpg", size=4),
        _row(str(root), "sub/a.jpg", evicted_at=5),
        _row(str(root), "sub/gone.jpg"),
        _row(str(root), "sub"),
        _row(str(root), ""),
        _row(str(root), "link.jpg"),
        _row(str(root), "../sub-link/a.jpg"),
        _row(str(root), str(root / "sub" / "a.jpg")),  # absolute: the root is not used
        _row(str(tmp_path / "root-link"), "sub/a.jpg"),
        _row(str(tmp_path / "root-link") + "/", "sub/a.jpg"),
        _row(str(tmp_path / "no-such-root"), "sub/a.jpg"),
        _row(str(tmp_path / "a-file"), "sub/a.jpg"),
        _row(str(root), "sub/a.jpg"),  # back to a root seen before
    ]
    with Files() as files:
        found = [files.absent(row) for row in rows]
    assert found == [_absent_by_whole_path(row) for row in rows]
    assert found[0] is None and found[4] == "not a regular file" and found[6] == found[4]
