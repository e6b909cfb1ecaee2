"""An export of a view of the catalog: what it asks for (``ExportRequest``, parsed from a
query string by the list's own filter parser) and the planned archive (``build_export``). No
Flask: the view and ``edgecatalog export`` both call this.

The plan reads the view in one read snapshot (``engines.read_snapshot``): the images in id
order with their annotations, each placed (split, unique name), its file checked (present,
a regular file, the size the catalog has); the format's generated members go to the spool.
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
from .select import class_names, matching_ids, read_view
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
    if not us:
        return zipformat.dos_time(zipformat.MIN_DOS)
    return zipformat.dos_time(tuple(time.gmtime(us // 1_000_000))[:6])  # type: ignore[arg-type]


def absent(row: Mapping[str, Any]) -> str | None:
    """Why the image's bytes cannot go in the archive; None when its file is there."""
    if row["evicted_at"] is not None:
        return _evicted(row)
    try:
        st = os.stat(os.path.join(row["root_path"], row["rel_path"]), follow_symlinks=False)
    except OSError as exc:
        return f"file not found ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != row["byte_size"]:
        return f"the file has {st.st_size} bytes, the catalog {row['byte_size']}"
    return None


def _evicted(row: Mapping[str, Any]) -> str | None:
    return None if row["evicted_at"] is None else "evicted from this device after it was synced"


def _sniff(row: Mapping[str, Any]) -> str | None:
    try:
        fd = safeopen.open_fd(row["root_path"], row["rel_path"])
    except (OSError, ValueError):
        return None
    try:
        return sniff_format(os.pread(fd, 32, 0))
    finally:
        os.close(fd)


def build_export(
    request: ExportRequest, spool_dir: Path | None = None, *, force_zip64: bool = False
) -> Archive:
    """Plan the archive of ``request`` (see the module docstring); the caller closes it."""
    spool = Spool(spool_dir)
    try:
        builder = ArchiveBuilder(spool, force_zip64=force_zip64)
        with engine().read_snapshot(database):
            _plan(request, builder, class_names(), matching_ids(request.filters))
        return builder.build()
    except BaseException:
        spool.close()
        raise


def _plan(request: ExportRequest, builder: ArchiveBuilder, classes: list[str], ids) -> None:
    writer: FormatWriter = FORMATS[request.format](builder, classes)
    namer = Namer()
    missing, index = builder.spool.writer(), builder.spool.writer()
    newest = 0
    for row in read_view(ids):
        split = split_of(row, request.assign)
        if split == "none" and writer.needs_split:
            continue
        newest = max(newest, row["updated_at"])
        problem = absent(row) if request.include_images else _evicted(row)
        if problem is not None:
            missing.write(f"{row['id']}\t{row['filename']}\t{problem}\n")
            continue
        name = namer.name(row, lambda row=row: _sniff(row) if request.include_images else None)
        placed = Placed(row, split, name, f"images/{split}/{name}")
        if request.include_images:
            builder.add_file(
                placed.path,
                row["byte_size"],
                row["sha256"],
                row["root_path"],
                row["rel_path"],
                dos_of(row["captured_at"]),
                row["crc32"],
            )
        else:
            _index_line(index, placed)
        writer.add(placed, dos_of(row["updated_at"]))
    end = dos_of(newest)
    writer.finish(end)
    if not request.include_images:
        builder.add_generated("index.csv", _with_header(builder, index, INDEX_HEADER), end)
    if not missing.empty:
        header = "# image_id\tfilename\twhy its bytes are not in this archive\n"
        builder.add_generated("missing.txt", _with_header(builder, missing, header), end)


INDEX_HEADER = "path,image_id,url,sha256,byte_size\r\n"


def _index_line(index: SpoolWriter, placed: Placed) -> None:
    row = placed.row
    path = placed.path.replace('"', '""')
    quoted = f'"{path}"' if any(c in path for c in ',"\r\n') else path
    index.write(f"{quoted},{row['id']},/files/{row['id']},{row['sha256']},{row['byte_size']}\r\n")


def _with_header(builder: ArchiveBuilder, body: SpoolWriter, header: str) -> SpoolWriter:
    out = builder.spool.writer()
    out.write(header)
    out.extend(body)
    return out
