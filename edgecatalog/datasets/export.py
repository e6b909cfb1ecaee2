"""An export of a view of the catalog: what it asks for (``ExportRequest``, parsed from a
query string by the list's own filter parser) and the planned archive (``build_export``). No
Flask: the view and ``edgecatalog export`` both call this.

The plan reads the view in one read snapshot (``engines.read_snapshot``): the images in id
order with their annotations (the columns the format reads, ``select.Shape``), each placed
(split, unique name), its file checked (present, a regular file, the size the catalog has);
the format's generated members go to the spool.
Then nothing more is read from the database: the archive's bytes come from the spool and the
image files. An image whose bytes are not on the device (evicted after sync, or the file is
gone) is listed in ``missing.txt`` and left out, labels included.

Member order: for each image in id order, its file then what the format adds for it (YOLO's
label); then the format's files (``data.yaml``, the COCO instances, ``images.jsonl`` or
``annotations.csv``), ``index.csv`` (with ``include_images=false``: where each image goes and
its ``GET /files`` path, relative to the service) and ``missing.txt``. Times in the headers:
an image's capture time, its label's last change, and the view's last change for the rest.
"""

from __future__ import annotations

import functools
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import param_types, params, safeopen
from ..engines import current as engine
from ..errors import ValidationError
from ..ingest.store import sniff_format
from ..listing import FILTERS, parse_filter_values
from ..models import database
from . import zipformat
from .archive import Archive, ArchiveBuilder
from .coco import CocoWriter
from .naming import Namer, parse_assign_unsplit, split_of
from .placed import FormatWriter, Placed
from .select import Row, class_names, matching_ids, read_view
from .spool import Spool, SpoolWriter
from .tables import CsvWriter, JsonlWriter
from .yolo import YoloWriter

FORMATS: dict[str, type] = {
    "coco": CocoWriter,
    "yolo": YoloWriter,
    "jsonl": JsonlWriter,
    "csv": CsvWriter,
}
ASSIGN = param_types.TypedParser(
    parse_assign_unsplit,
    {"type": "string", "pattern": r"^(train|val|test):[0-9.]+(,(train|val|test):[0-9.]+)*$"},
)
# The options of GET /data/exports/{format} besides the list's filters.
EXPORT_OPTIONS: tuple[param_types.Param, ...] = (
    param_types.Param(
        "include_images",
        param_types.BOOL,
        "put the image files in the archive (true, false, 1 or 0); false: the labels and "
        "index.csv, each image's place in the dataset and its GET /files path",
        extra={"default": True},
    ),
    param_types.Param(
        "assign_unsplit",
        ASSIGN,
        "give the images whose split is none (and not locked) a split by their content "
        "hash, e.g. train:0.8,val:0.1,test:0.1; without it coco and yolo leave them out",
    ),
)


@dataclass(frozen=True)
class ExportRequest:
    format: str
    filters: Mapping[str, Any] = field(default_factory=dict)
    include_images: bool = True
    assign: tuple[tuple[str, float], ...] = ()


def parse_format(text: str) -> str:
    if text not in FORMATS:
        raise ValidationError(
            "format", f"format must be one of {', '.join(FORMATS)}, got {text[:40]!r}"
        )
    return text


def parse_export(
    fmt: str, args: Any, *, max_class_values: int = 50, max_chars: int = 1024
) -> ExportRequest:
    """The format and a query string: the list's filters (same parser, same meaning) and
    ``EXPORT_OPTIONS``; the list's paging and sorting options do not apply."""
    names = [f.param for f in FILTERS] + [o.param for o in EXPORT_OPTIONS]
    given = params.single_values(args, names, max_chars=max_chars)
    return ExportRequest(
        parse_format(fmt),
        parse_filter_values(given, max_class_values=max_class_values),
        params.parse_bool("include_images", given["include_images"])
        if "include_images" in given
        else True,
        parse_assign_unsplit("assign_unsplit", given["assign_unsplit"])
        if "assign_unsplit" in given
        else (),
    )


def dos_of(us: int | None) -> int:
    """A time in microseconds as a header's DOS date and time (``zipformat.dos_time`` of its
    ``time.gmtime``): the date from ``_dos_date``'s few cached days, the time of day counted
    here (a POSIX day is 86,400 seconds, no leap second), two per image without a
    ``time.gmtime`` each."""
    if not us:
        return MIN_DOS_TIME
    day, second = divmod(us // 1_000_000, 86_400)
    date = _dos_date(day)
    if date is None:
        return MIN_DOS_TIME
    return date | (second // 3600) << 11 | (second // 60 % 60) << 5 | (second % 60) // 2


MIN_DOS_TIME = zipformat.dos_time(zipformat.MIN_DOS)


@functools.lru_cache(maxsize=1024)
def _dos_date(day: int) -> int | None:
    """The DOS date bits (its midnight's ``dos_time``) of a day counted from 1970-01-01;
    None before 1980, whose times all become ``MIN_DOS`` (midnight included)."""
    year, month, mday = time.gmtime(day * 86_400)[:3]
    return None if year < 1980 else zipformat.dos_time((year, month, mday, 0, 0, 0))


class Files:
    """Checks an image's file (``absent``) from the descriptor of its root's folder, kept open
    while rows of that root come (one at a time, so a catalog of many roots cannot use up
    descriptors): the kernel then walks only the image's own path, not the root's again
    (measured over 8,000 files: 2.2 µs a stat, 3.1 by the whole path). A root that cannot be
    opened is left to a stat of the whole path, which then says why: the answers are the
    whole path's (``tests/test_export_plan.py``)."""

    def __init__(self) -> None:
        self._root: str | None = None
        self._fd: int | None = None

    def absent(self, row: Row) -> str | None:
        """Why the image's bytes cannot go in the archive; None when its file is there."""
        if row.evicted_at is not None:
            return _evicted(row)
        if row.root_path != self._root:
            self._open(row.root_path)
        path, fd = row.rel_path, self._fd
        if fd is None or not path:  # ("" relative to the folder is no file, joined the folder)
            path, fd = os.path.join(row.root_path, path), None
        try:
            st = os.stat(path, dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            return f"file not found ({exc.strerror or exc})"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size != row.byte_size:
            return f"the file has {st.st_size} bytes, the catalog {row.byte_size}"
        return None

    def _open(self, root: str) -> None:
        self.close()
        self._root = root
        try:  # links followed on the way, as a stat of the whole path follows them
            self._fd = os.open(root, _FOLDER_FLAGS)
        except OSError:
            self._fd = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._root, self._fd = None, None

    def __enter__(self) -> Files:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# O_PATH (Linux): a descriptor to resolve names from, with no read permission needed.
_FOLDER_FLAGS = os.O_DIRECTORY | os.O_CLOEXEC | getattr(os, "O_PATH", os.O_RDONLY)


def _evicted(row: Row) -> str | None:
    return None if row.evicted_at is None else "evicted from this device after it was synced"


def _sniff(row: Row) -> str | None:
    try:
        fd = safeopen.open_fd(row.root_path, row.rel_path)
    except (OSError, ValueError):
        return None
    try:
        return sniff_format(os.pread(fd, 32, 0))
    finally:
        os.close(fd)


def _no_sniff(row: Row) -> None:
    return None


def build_export(
    request: ExportRequest, spool_dir: Path | None = None, *, force_zip64: bool = False
) -> Archive:
    """Plan the archive of ``request`` (see the module docstring); the caller closes it."""
    spool = Spool(spool_dir)
    try:
        builder = ArchiveBuilder(spool, force_zip64=force_zip64)
        with engine().read_snapshot(database), Files() as files:
            _plan(request, builder, class_names(), matching_ids(request.filters), files)
        return builder.build()
    except BaseException:
        spool.close()
        raise


def _plan(
    request: ExportRequest, builder: ArchiveBuilder, classes: list[str], ids, files: Files
) -> None:
    writer: FormatWriter = FORMATS[request.format](builder, classes)
    namer = Namer()
    missing, index = builder.spool.writer(), builder.spool.writer()
    with_images, assign, needs_split = request.include_images, request.assign, writer.needs_split
    sniff = _sniff if with_images else _no_sniff  # without the bytes, no name from them
    newest = 0
    for row, anns in read_view(ids, writer.shape):
        split = split_of(row, assign)
        if split == "none" and needs_split:
            continue
        newest = max(newest, row.updated_at)
        problem = files.absent(row) if with_images else _evicted(row)
        if problem is not None:
            missing.write(f"{row.id}\t{row.filename}\t{problem}\n")
            continue
        name = namer.name(row, sniff)
        placed = Placed(row, anns, split, name, f"images/{split}/{name}")
        if with_images:
            builder.add_file(
                placed.path,
                row.byte_size,
                row.sha256,
                row.root_path,
                row.rel_path,
                dos_of(row.captured_at),
                row.crc32,
            )
        else:
            _index_line(index, placed)
        writer.add(placed, dos_of(row.updated_at))
    end = dos_of(newest)
    writer.finish(end)
    if not with_images:
        builder.add_generated("index.csv", _with_header(builder, index, INDEX_HEADER), end)
    if not missing.empty:
        header = "# image_id\tfilename\twhy its bytes are not in this archive\n"
        builder.add_generated("missing.txt", _with_header(builder, missing, header), end)


INDEX_HEADER = "path,image_id,url,sha256,byte_size\r\n"


def _index_line(index: SpoolWriter, placed: Placed) -> None:
    row = placed.row
    path = placed.path.replace('"', '""')
    quoted = f'"{path}"' if any(c in path for c in ',"\r\n') else path
    index.write(f"{quoted},{row.id},/files/{row.id},{row.sha256},{row.byte_size}\r\n")


def _with_header(builder: ArchiveBuilder, body: SpoolWriter, header: str) -> SpoolWriter:
    out = builder.spool.writer()
    out.write(header)
    out.extend(body)
    return out
