"""Indexing the files of a folder: what ``edgecatalog scan``, the watcher's reconciliation
pass and its inotify events all go through.

Files already taken (same root, path, size and mtime in ``CaptureFile``) and rejected files that
have not changed are skipped without being read; files changed within ``settle_seconds`` are
left for later. The rest is probed by a small thread pool while this thread commits chunks of
at most ``CHUNK`` images or ``CHUNK_SECONDS`` per transaction, so a server sharing the database
never waits long for the write lock. Sidecars whose image is already in the catalog are then
applied (``attach``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..db import write_tx
from ..errors import ValidationError
from .attach import apply_sidecar
from .indexer import CHANGING, DUPLICATE, INDEXED, MOVED, REJECTED, SIDECAR, FolderIndexer
from .probe import CaptureOptions, FileStat, Probe, probe_image, reason_of
from .rejects import Rejection, clear_rejected, record_rejected, rejected_among
from .sidecars import ClassNames, classify, preferred_sidecar, read_sidecar, stem_of

log = logging.getLogger("edgecatalog.capture")

CHUNK = 1024
CHUNK_SECONDS = 0.25
IN_FLIGHT = 512  # probes queued ahead of the committing thread: bounds memory
GROUP = 32


@dataclass
class ScanReport:
    indexed: int = 0
    duplicates: int = 0
    rejected: int = 0
    sidecars: int = 0  # late sidecars applied to images already indexed
    changing: list[Path] = field(default_factory=list)  # not settled yet: look again later
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"indexed {self.indexed}, duplicates {self.duplicates}, "
                f"rejected {self.rejected} in {self.seconds:.2f} s")

    def count(self, outcome: str, probe: Probe) -> None:
        if outcome == INDEXED:
            self.indexed += 1
        elif outcome == DUPLICATE:
            self.duplicates += 1
        elif outcome == REJECTED:
            self.rejected += 1
        elif outcome == CHANGING:
            self.changing.append(probe.file.path)


def walk(root: Path, recursive: bool, exclude: Iterable[Path] = ()) -> Iterator[Path]:
    """Files under root that may be ours; dot folders and excluded folders are skipped."""
    excluded = {os.path.realpath(p) for p in exclude}
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while we walked
        except OSError as exc:  # unreadable: say so, and index the rest
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                if recursive and not entry.name.startswith(".") \
                        and os.path.realpath(entry.path) not in excluded:
                    stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False) and classify(entry.name) in (
                    "image", "sidecar"):
                yield Path(entry.path)


def index_files(indexer: FolderIndexer, paths: Iterable[Path], *, workers: int = 2,
                cancel: Callable[[], bool] | None = None,
                progress: Callable[[int], None] | None = None,
                on_total: Callable[[int], None] | None = None,
                listing_complete: bool = False) -> ScanReport:
    """Index these files (all under ``indexer.root``) and attach their late sidecars.

    ``listing_complete``: ``paths`` lists whole folders, so an image's sidecar, if any, is
    among them and need not be looked for on disk. ``cancel``: checked between chunks; when it says so, what is not committed is left for
    the next pass.
    """
    started = time.monotonic()
    report = ScanReport()
    images, sidecars = _stat_all(indexer, paths)
    known = indexer.known([f.rel for f in images + sidecars])
    rejected_now = rejected_among([str(f.path) for f in images + sidecars])
    todo = [f for f in images if _wants(indexer, f, known, rejected_now, report)]
    if on_total is not None:
        on_total(len(todo))
    hints = _sidecars_by_stem(sidecars)
    consumed = _index_images(indexer, todo, set(rejected_now), report, workers, progress,
                             hints, look=not listing_complete, cancel=cancel or (lambda: False))
    if cancel is not None and cancel():
        report.seconds = time.monotonic() - started
        return report
    for sidecar in sidecars:
        if sidecar.rel not in consumed and _wants(indexer, sidecar, known, rejected_now, report):
            _attach(indexer, sidecar, str(sidecar.path) in rejected_now, report)
    report.seconds = time.monotonic() - started
    return report


def _stat_all(indexer: FolderIndexer, paths: Iterable[Path]) -> tuple[list[FileStat],
                                                                       list[FileStat]]:
    images, sidecars = [], []
    for path in paths:
        kind = classify(path.name)
        if kind not in ("image", "sidecar"):
            continue
        try:
            stat = FileStat.of(path, indexer.root)
        except (FileNotFoundError, ValueError):  # gone, or not under this root
            continue
        (images if kind == "image" else sidecars).append(stat)
    return images, sidecars


def _sidecars_by_stem(sidecars: list[FileStat]) -> dict[str, FileStat]:
    """The sidecar of each stem, ``.json`` before ``.txt`` (as ``find_sidecar`` prefers)."""
    found: dict[str, FileStat] = {}
    for stat in sidecars:
        stem = stem_of(stat.rel)
        if stem not in found or stat.rel.lower().endswith(".json"):
            found[stem] = stat
    return found


def _wants(indexer: FolderIndexer, file: FileStat, known: dict, rejected: dict,
           report: ScanReport) -> bool:
    """Whether a listed file needs work now."""
    row = known.get(file.rel)
    if row is not None and (row.byte_size, row.mtime_ns) == (file.size, file.mtime_ns):
        if row.kind == MOVED and indexer.resume_move(file, row):
            log.info("finished moving %s", file.path)
        return False
    if rejected.get(str(file.path)) == (file.size, file.mtime_ns):
        return False  # still the same broken file: retried once it changes
    if not file.settled(indexer.options.settle_seconds):
        report.changing.append(file.path)
        return False
    return True


def _probe_group(files: list[FileStat], options: CaptureOptions, classes: ClassNames,
                 hints: dict[str, FileStat], look: bool) -> list[Probe]:
    return [probe_image(f, options, classes, hints.get(stem_of(f.rel)), look) for f in files]


def _index_images(indexer: FolderIndexer, todo: list[FileStat], rejected: set[str],
                  report: ScanReport, workers: int,
                  progress: Callable[[int], None] | None, hints: dict[str, FileStat],
                  look: bool, cancel: Callable[[], bool]) -> set[str]:
    """Probe in a pool, commit in chunks; returns the sidecars consumed with their images.

    Threads, not processes: reading and hashing release the GIL; worker processes were
    tried and, on a busy 2-core machine, cost about 30% more CPU (pickling every result)
    than their parallel parsing saved, and halved throughput.
    """
    classes = ClassNames(indexer.options.classes)
    consumed: set[str] = set()
    # Files go to the pool in groups: one future per file costs as much as probing it.
    groups = iter([todo[i:i + GROUP] for i in range(0, len(todo), GROUP)])
    futures: deque = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def fill() -> None:
            while len(futures) * GROUP < IN_FLIGHT:
                group = next(groups, None)
                if group is None:
                    return
                futures.append(pool.submit(_probe_group, group, indexer.options, classes,
                                           hints, look))

        fill()
        chunk: list[Probe] = []
        chunk_started = time.monotonic()
        while futures and not cancel():
            chunk.extend(futures.popleft().result())
            fill()
            if futures and len(chunk) < CHUNK and time.monotonic() - chunk_started < CHUNK_SECONDS:
                continue
            _commit_chunk(indexer, chunk, rejected, report, consumed)
            if progress is not None:
                progress(len(chunk))
            chunk, chunk_started = [], time.monotonic()
        for future in futures:  # cancelled: do not wait for probes nobody will commit
            future.cancel()
    return consumed


def _commit_chunk(indexer: FolderIndexer, chunk: list[Probe], rejected: set[str],
                  report: ScanReport, consumed: set[str]) -> None:
    for probe, outcome in zip(chunk, indexer.commit(chunk, rejected)):
        report.count(outcome, probe)
        if outcome == INDEXED and probe.sidecar_error:
            report.rejected += 1  # the image is in, its sidecar is not
        if probe.sidecar is not None and outcome != CHANGING:
            consumed.add(probe.sidecar.rel)


def _attach(indexer: FolderIndexer, sidecar: FileStat, was_rejected: bool,
            report: ScanReport) -> None:
    if not preferred_sidecar(sidecar.path):
        return  # a .txt next to a .json for the same image: the .json is the sidecar
    image_id = indexer.image_for_stem(stem_of(sidecar.rel))
    if image_id is None:
        return  # its image is not indexed yet (or is a duplicate): read together later
    try:
        meta = read_sidecar(sidecar.path, ClassNames(indexer.options.classes),
                            indexer.options.max_annotations)
    except ValidationError as exc:
        record_rejected(Rejection(str(sidecar.path), reason_of(exc), sidecar.size,
                                  sidecar.mtime_ns))
        report.rejected += 1
        return
    with write_tx():
        if apply_sidecar(image_id, meta):
            report.sidecars += 1
        indexer.remember(sidecar, SIDECAR, image_id)
        if was_rejected:
            clear_rejected([str(sidecar.path)])


def scan_folder(indexer: FolderIndexer, recursive: bool, **kw) -> ScanReport:
    """Index everything under the indexer's root (the images folder itself is never walked)."""
    paths = walk(indexer.root, recursive, exclude=[indexer.options.images_dir])
    return index_files(indexer, paths, listing_complete=True, **kw)
