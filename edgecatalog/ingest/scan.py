"""Indexing the files of a folder: what ``edgecatalog scan``, the watcher's reconciliation
pass and its inotify events all go through.

Files already taken (same root, path, size and mtime in ``CaptureFile``) and rejected files that
have not changed are skipped without being read; files changed within ``settle_seconds`` are
left for later. The rest is probed by a ``ProbePool`` (worker processes for a large folder in
the ``scan`` command, threads otherwise) while this thread commits chunks of at most ``CHUNK``
images or ``CHUNK_SECONDS`` per transaction, so a server sharing the database never waits long
for the write lock. Sidecars whose image is already in the catalog are then applied
(``attach``).

Speed (``benchmarks/ingest.py``): a folder is listed with one ``stat`` per file from its
directory entries; probes cross from workers as plain tuples; a chunk is written with a few
``executemany`` in its own transaction (no savepoint: one copied every touched page) with the
list's counts grouped per chunk (``counts``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..db import write_tx
from ..errors import ValidationError
from .attach import apply_sidecar
from .indexer import CHANGING, DUPLICATE, INDEXED, MOVED, REJECTED, SIDECAR, FolderIndexer
from .pool import Pending, ProbePool
from .probe import FileStat, Probe, reason_of
from .rejects import Rejection, clear_rejected, record_rejected, rejected_among
from .sidecars import ClassNames, classify, preferred_sidecar, read_sidecar, stem_of

log = logging.getLogger("edgecatalog.capture")

CHUNK = 1024
CHUNK_SECONDS = 0.25
IN_FLIGHT = 2048  # probes queued ahead of the committing thread: bounds memory (~1 KB each)
GROUP = 64
MIN_CHUNK = 128  # a commit has fixed costs (lookups, grouped counts, fsync): not for a few


@dataclass
class ScanReport:
    indexed: int = 0
    duplicates: int = 0
    rejected: int = 0
    sidecars: int = 0  # late sidecars applied to images already indexed
    changing: list[Path] = field(default_factory=list)  # not settled yet: look again later
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"indexed {self.indexed}, duplicates {self.duplicates}, "
            f"rejected {self.rejected} in {self.seconds:.2f} s"
        )

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
    for entry, _ in _entries(root, recursive, exclude):
        yield Path(entry.path)


def list_tree(
    root: Path, folder: Path, recursive: bool, exclude: Iterable[Path] = ()
) -> tuple[list[FileStat], list[FileStat]]:
    """``walk`` with each file's size and mtime from its directory entry (one stat each, no
    Path arithmetic): the images and the sidecars under ``folder``, relative to ``root``."""
    prefix = str(root).rstrip(os.sep) + os.sep
    cut = len(prefix)
    images: list[FileStat] = []
    sidecars: list[FileStat] = []
    for entry, kind in _entries(folder, recursive, exclude):
        path = entry.path
        if not path.startswith(prefix):
            continue  # not under this root
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed while we listed
        rel = path[cut:] if os.sep == "/" else path[cut:].replace(os.sep, "/")
        (images if kind == "image" else sidecars).append(
            FileStat(path, rel, st.st_size, st.st_mtime_ns)
        )
    return images, sidecars


def _entries(
    folder: Path, recursive: bool, exclude: Iterable[Path]
) -> Iterator[tuple[os.DirEntry, str]]:
    """The directory entries ``walk`` yields paths of, in the same order, with their kind."""
    excluded = {os.path.realpath(p) for p in exclude}
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            log.warning("cannot list %s: %s", current, exc.strerror or exc)
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if (
                    recursive
                    and not entry.name.startswith(".")
                    and os.path.realpath(entry.path) not in excluded
                ):
                    stack.append(entry.path)
                continue
            kind = classify(entry.name)
            # A link with an image's or sidecar's name is listed too, so that reading it
            # rejects it with its reason rather than passing over it without a word.
            if kind in ("image", "sidecar") and (
                entry.is_file(follow_symlinks=False) or entry.is_symlink()
            ):
                yield entry, kind


def index_files(
    indexer: FolderIndexer,
    paths: Iterable[Path],
    *,
    workers: int = 2,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    listing_complete: bool = False,
) -> ScanReport:
    """Index these files (all under ``indexer.root``) and attach their late sidecars.

    ``listing_complete``: ``paths`` lists whole folders, so an image's sidecar, if any, is
    among them and need not be looked for on disk. ``cancel``: checked between chunks; when it
    says so, what is not committed is left for the next pass.
    """
    images, sidecars = _stat_all(indexer, paths)
    return index_listing(
        indexer,
        images,
        sidecars,
        workers=workers,
        cancel=cancel,
        progress=progress,
        on_total=on_total,
        listing_complete=listing_complete,
    )


def index_listing(
    indexer: FolderIndexer,
    images: list[FileStat],
    sidecars: list[FileStat],
    *,
    workers: int = 2,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    listing_complete: bool = False,
) -> ScanReport:
    """``index_files`` for files already listed with their size and mtime."""
    started = time.monotonic()
    report = ScanReport()
    known = indexer.known([f.rel for f in images + sidecars])
    rejected_now = rejected_among([f.where for f in images + sidecars])
    now = time.time()
    todo = [f for f in images if _wants(indexer, f, known, rejected_now, report, now)]
    if on_total is not None:
        on_total(len(todo))
    hints = _sidecars_by_stem(sidecars)
    consumed = _index_images(
        indexer,
        todo,
        set(rejected_now),
        report,
        workers,
        progress,
        hints,
        look=not listing_complete,
        cancel=cancel or (lambda: False),
    )
    if cancel is not None and cancel():
        report.seconds = time.monotonic() - started
        return report
    for sidecar in sidecars:
        if sidecar.rel not in consumed and _wants(
            indexer, sidecar, known, rejected_now, report, now
        ):
            _attach(indexer, sidecar, sidecar.where in rejected_now, report)
    report.seconds = time.monotonic() - started
    return report


def _stat_all(
    indexer: FolderIndexer, paths: Iterable[Path]
) -> tuple[list[FileStat], list[FileStat]]:
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


def _wants(
    indexer: FolderIndexer,
    file: FileStat,
    known: dict,
    rejected: dict,
    report: ScanReport,
    now: float,
) -> bool:
    """Whether a listed file needs work now."""
    row = known.get(file.rel)
    if row is not None and (row.byte_size, row.mtime_ns) == (file.size, file.mtime_ns):
        if row.kind == MOVED and indexer.resume_move(file, row):
            log.info("finished moving %s", file.path)
        return False
    if rejected.get(file.where) == (file.size, file.mtime_ns):
        return False  # still the same broken file: retried once it changes
    if not file.settled(indexer.options.settle_seconds, now):
        report.changing.append(file.path)
        return False
    return True


def _index_images(
    indexer: FolderIndexer,
    todo: list[FileStat],
    rejected: set[str],
    report: ScanReport,
    workers: int,
    progress: Callable[[int], None] | None,
    hints: dict[str, FileStat],
    look: bool,
    cancel: Callable[[], bool],
) -> set[str]:
    """Probe in a pool (``ProbePool``: processes or threads), commit in chunks on this thread;
    returns the sidecars consumed with their images."""
    consumed: set[str] = set()
    # Files go to the pool in groups: one task per file costs as much as probing it.
    groups = iter([todo[i : i + GROUP] for i in range(0, len(todo), GROUP)])
    waiting: deque[Pending] = deque()
    with ProbePool(indexer.options, workers, len(todo)) as pool:

        def fill() -> None:
            while len(waiting) * GROUP < IN_FLIGHT:
                group = next(groups, None)
                if group is None:
                    return
                waiting.append(pool.submit(group, hints, look))

        fill()
        chunk: list[Probe] = []
        chunk_started = time.monotonic()
        while waiting and not cancel():
            chunk.extend(waiting.popleft().result())
            fill()
            # Commit when the chunk is full or old, and also whenever the probes are behind
            # (the next group is not ready): the writer works while the workers do, and the
            # last commit, which nothing overlaps, stays small.
            behind = bool(waiting) and len(chunk) >= MIN_CHUNK and not waiting[0].ready()
            if (
                waiting
                and not behind
                and len(chunk) < CHUNK
                and time.monotonic() - chunk_started < CHUNK_SECONDS
            ):
                continue
            _commit_chunk(indexer, chunk, rejected, report, consumed)
            if progress is not None:
                progress(len(chunk))
            chunk, chunk_started = [], time.monotonic()
    return consumed


def _commit_chunk(
    indexer: FolderIndexer,
    chunk: list[Probe],
    rejected: set[str],
    report: ScanReport,
    consumed: set[str],
) -> None:
    for probe, outcome in zip(chunk, indexer.commit(chunk, rejected)):
        report.count(outcome, probe)
        if outcome == INDEXED and probe.sidecar_error:
            report.rejected += 1  # the image is in, its sidecar is not
        if probe.sidecar is not None and outcome != CHANGING:
            consumed.add(probe.sidecar.rel)


def _attach(
    indexer: FolderIndexer, sidecar: FileStat, was_rejected: bool, report: ScanReport
) -> None:
    if not preferred_sidecar(sidecar.path):
        return  # a .txt next to a .json for the same image: the .json is the sidecar
    image_id = indexer.image_for_stem(stem_of(sidecar.rel))
    if image_id is None:
        return  # its image is not indexed yet (or is a duplicate): read together later
    try:
        meta = read_sidecar(
            str(indexer.root),
            sidecar.rel,
            ClassNames(indexer.options.classes),
            indexer.options.max_annotations,
            limits=indexer.options.limits,
        )
    except ValidationError as exc:
        record_rejected(Rejection(sidecar.where, reason_of(exc), sidecar.size, sidecar.mtime_ns))
        report.rejected += 1
        return
    with write_tx():
        if apply_sidecar(image_id, meta):
            report.sidecars += 1
        indexer.remember(sidecar, SIDECAR, image_id)
        if was_rejected:
            clear_rejected([sidecar.where])


def scan_folder(
    indexer: FolderIndexer,
    recursive: bool,
    *,
    folder: Path | None = None,
    exclude: Iterable[Path] = (),
    **kw,
) -> ScanReport:
    """Index everything under ``folder`` (default: the indexer's root); the images folder and
    ``exclude`` are never walked."""
    images, sidecars = list_tree(
        indexer.root,
        folder or indexer.root,
        recursive,
        exclude=[indexer.options.images_dir, *exclude],
    )
    return index_listing(indexer, images, sidecars, listing_complete=True, **kw)
