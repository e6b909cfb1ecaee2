"""What ``edgecatalog scan`` and ``edgecatalog rejected`` do, given already-parsed arguments.

``scan`` indexes an existing folder in its own process while the service may be serving the
same database (short IMMEDIATE transactions, busy timeout). In ``index`` mode the folder becomes
a file root and ``GET /files`` serves from it (every root the catalog registered is served,
checked with its real path); a folder inside a configured watch dir is indexed under that
watch dir, so the watcher and ``scan`` agree on paths. In ``move`` mode the files are moved
into ``<data_dir>/images/``. The mode defaults to ``[capture] mode``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

from ..config import Settings
from .probe import CaptureOptions
from .rejects import list_rejected
from .scan import ScanReport, scan_folder
from .store import IngestLock


class ScanRefused(Exception):
    """The folder given to ``scan`` cannot be scanned (missing, or inside the data folder)."""


def scan_root(settings: Settings, folder: Path) -> Path:
    """The root a scanned folder's files are recorded under."""
    real = os.path.realpath(folder)
    if not os.path.isdir(real):
        raise ScanRefused(f"{folder} is not an existing folder")
    data = os.path.realpath(settings.data_dir)
    if os.path.commonpath([real, data]) == data:
        raise ScanRefused(
            f"{folder} is inside the data folder {data}, which holds the catalog's own files"
        )
    for watch in settings["capture.watch_dirs"]:
        watch_real = os.path.realpath(os.path.expanduser(watch))
        if os.path.commonpath([real, watch_real]) == watch_real:
            return Path(watch_real)
    return Path(real)


def run_scan(
    settings: Settings,
    folder: Path,
    *,
    recursive: bool,
    mode: str | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> ScanReport:
    from .. import db

    root = scan_root(settings, folder)
    db.open_for(settings)
    db.migrate()
    options = CaptureOptions.from_settings(settings, mode=mode)
    # Move mode writes into images/: hold the ingest lock shared, so a service starting now
    # does not take a file linked there, and not yet committed, for an orphan.
    lock = IngestLock(settings.images_dir) if options.mode == "move" else None
    if lock is not None:
        lock.shared()
    try:
        report = _scan(settings, folder, root, options, recursive, err)
    finally:
        if lock is not None:
            lock.release()
    print(report.summary(), file=out)
    if report.changing:
        print(
            f"{len(report.changing)} file(s) changed in the last "
            f"{options.settle_seconds:g} s and were left for later; run scan again",
            file=err,
        )
    return report


def _scan(
    settings: Settings,
    folder: Path,
    root: Path,
    options: CaptureOptions,
    recursive: bool,
    err: TextIO,
) -> ScanReport:
    from ..models import database
    from .indexer import FolderIndexer

    with database.connection_context():
        indexer = FolderIndexer(options, root)
        bar = None
        if err.isatty():
            from tqdm import tqdm

            # No monitor thread: the bar is updated per chunk anyway, and a second thread
            # would keep the scan from forking its probe workers (``pool``).
            tqdm.monitor_interval = 0
            bar = tqdm(total=0, unit="img", file=err, dynamic_ncols=True, leave=False)

        def on_total(total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.refresh()

        try:
            report = scan_folder(
                indexer,
                recursive,
                folder=Path(os.path.realpath(folder)),
                exclude=[settings.data_dir],
                on_total=on_total,
                progress=bar.update if bar is not None else None,
            )
        finally:
            if bar is not None:
                bar.close()
    return report


def print_rejected(
    settings: Settings, *, limit: int | None, as_json: bool, out: TextIO = sys.stdout
) -> int:
    from .. import db
    from ..models import database
    from ..timeutil import format_ts

    db.open_for(settings)
    db.migrate()
    with database.connection_context():
        rows = list_rejected(limit)
    if as_json:
        json.dump(
            [
                {
                    "path": r.path,
                    "reason": r.reason,
                    "byte_size": r.byte_size,
                    "mtime": format_ts(r.mtime_ns // 1000),
                    "rejected_at": format_ts(r.created_at),
                }
                for r in rows
            ],
            out,
            indent=2,
        )
        out.write("\n")
        return 0
    for r in rows:
        print(f"{format_ts(r.created_at)}  {r.byte_size:>10}  {r.path}: {r.reason}", file=out)
    if not rows:
        print("no rejected files", file=out)
    return 0
