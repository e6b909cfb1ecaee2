"""The capture watcher: a background service of ``edgecatalog serve`` that indexes what the
device writes into ``[capture] watch_dirs`` (recursively).

inotify events (through ``watchdog``) name the files to look at; since events can be lost
(queue overflow, a restart, a folder created before its watch), a reconciliation scan of every
watch dir runs at start-up and every ``scan_interval_seconds``. A file is taken once neither
its size nor its mtime changed for ``settle_seconds``; until then it waits in ``pending`` and is
looked at again on each tick. All database work happens on the service's one thread, inside
``connection_context()``; watchdog's thread only hands paths over through a queue. Any error
is logged and the loop goes on: one bad file, or a locked database, never stops the watcher.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ..config import ConfigError, Settings
from ..models import database
from ..retention import SpaceGate
from .indexer import FolderIndexer
from .probe import CaptureOptions
from .rejects import prune_missing
from .scan import ScanReport, index_files, scan_folder, walk
from .sidecars import classify

log = logging.getLogger("edgecatalog.capture")


def check_watch_dirs(settings: Settings) -> list[Path]:
    """The watch dirs as real paths; a missing or overlapping one is a configuration error.

    A missing folder is not created: it is most often an unmounted card or a typo, and
    creating it would silently fill the root filesystem instead.
    """
    images = os.path.realpath(settings.images_dir)
    dirs: list[Path] = []
    for raw in settings["capture.watch_dirs"]:
        path = os.path.realpath(os.path.expanduser(raw))
        if not os.path.isdir(path):
            raise ConfigError(
                f"capture.watch_dirs (from {settings.source}): {raw} is not an existing folder"
            )
        for other in [images, *map(str, dirs)]:
            if os.path.commonpath([path, other]) in (path, other):
                raise ConfigError(
                    f"capture.watch_dirs (from {settings.source}): {raw} overlaps "
                    f"{other}; watch dirs must not contain each other or the "
                    "data folder's images/"
                )
        dirs.append(Path(path))
    return dirs


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: queue.Queue[str]) -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "modified", "closed", "moved"):
            path = getattr(event, "dest_path", "") or event.src_path
            self.inbox.put(os.fsdecode(path))


class CaptureService:
    """Watches the capture folders; implements ``background.Service``."""

    name = "capture watcher"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dirs = check_watch_dirs(settings)
        self.options = CaptureOptions.from_settings(settings)
        self.interval = settings["capture.scan_interval_seconds"]
        self.tick = min(0.5, max(0.05, self.options.settle_seconds / 4))
        self.inbox: queue.Queue[str] = queue.Queue()
        self.pending: dict[str, tuple[int, int, float]] = {}  # path -> size, mtime, seen at
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Observer | None = None
        self.passes = 0  # reconciliation passes done, for tests and logs
        self.space = SpaceGate(settings)  # no files are taken while only unsynced data fits

    def start(self) -> None:
        observer = Observer()
        handler = _Handler(self.inbox)
        for folder in self.dirs:
            observer.schedule(handler, str(folder), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        with database.connection_context():
            indexers = {folder: FolderIndexer(self.options, folder) for folder in self.dirs}
            next_scan = 0.0
            while not self._stop.is_set():
                try:
                    if not self.space.has_room():
                        self._drain()  # keep listening; the files wait in their folder
                        self._stop.wait(max(self.tick, 1.0))
                        continue
                    if time.monotonic() >= next_scan:
                        self._reconcile(indexers)
                        next_scan = time.monotonic() + self.interval
                    self._drain()
                    self._take_ready(indexers)
                except Exception:  # logged, and the next tick tries again
                    log.exception("capture pass failed; retrying")
                self._stop.wait(self.tick)

    def _reconcile(self, indexers: dict[Path, FolderIndexer]) -> None:
        total = ScanReport()
        for indexer in indexers.values():
            report = scan_folder(indexer, recursive=True, cancel=self._stop_or_full)
            self._remember_changing(report)
            for name in ("indexed", "duplicates", "rejected", "sidecars"):
                setattr(total, name, getattr(total, name) + getattr(report, name))
        pruned = prune_missing()
        self.passes += 1
        if pruned:
            log.info("reconciliation: forgot %d rejected file(s) no longer on disk", pruned)
        if total.indexed or total.duplicates or total.rejected or total.sidecars:
            log.info("reconciliation: %s, %d late sidecar(s)", total.summary(), total.sidecars)

    def _stop_or_full(self) -> bool:
        """Checked between the scan's chunks: in move mode each chunk copies bytes into the
        data folder, so a long reconciliation stops (files wait in place) once the disk
        reaches the retention limits, as the event path does."""
        if self._stop.is_set():
            return True
        return self.options.mode == "move" and not self.space.has_room()

    def _drain(self) -> None:
        """Move paths from watchdog's queue into ``pending`` (new folders are walked)."""
        now = time.monotonic()
        while True:
            try:
                path = self.inbox.get_nowait()
            except queue.Empty:
                return
            folder = self._root_of(path)
            if folder is None or any(
                part.startswith(".") for part in Path(path).relative_to(folder).parts
            ):
                continue  # dotfiles and dot folders (rsync's temporaries, say) are not ours
            if os.path.isdir(path):
                for file in walk(Path(path), recursive=True):
                    self.pending.setdefault(str(file), (-1, -1, now))
            elif classify(os.path.basename(path)) in ("image", "sidecar"):
                self.pending.setdefault(path, (-1, -1, now))

    def _take_ready(self, indexers: dict[Path, FolderIndexer]) -> None:
        ready: dict[Path, list[Path]] = {}
        now = time.monotonic()
        for path, (size, mtime, seen) in list(self.pending.items()):
            try:
                st = os.lstat(path)  # a link is judged as itself (and rejected when read)
            except FileNotFoundError:
                del self.pending[path]  # renamed or deleted before it settled
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                self.pending[path] = (st.st_size, st.st_mtime_ns, now)  # changed: wait again
                continue
            if now - seen >= self.options.settle_seconds:
                del self.pending[path]
                folder = self._root_of(path)
                if folder is not None:
                    ready.setdefault(folder, []).append(Path(path))
        for folder, paths in ready.items():
            if self.options.mode == "move" and not self.space.has_room(_total_size(paths)):
                # Moving copies the bytes into the data folder: they must fit above the
                # reserve too, or the copies eat the room SQLite needs for its WAL. The files
                # wait (settled) in their folder until there is room.
                for path in paths:
                    self.pending.setdefault(str(path), (-1, -1, now))
                continue
            report = index_files(indexers[folder], paths, cancel=self._stop.is_set)
            self._remember_changing(report)
            if report.indexed or report.rejected or report.sidecars:
                log.info("%s: %s, %d late sidecar(s)", folder, report.summary(), report.sidecars)

    def _remember_changing(self, report: ScanReport) -> None:
        now = time.monotonic()
        for path in report.changing:
            self.pending.setdefault(str(path), (-1, -1, now))

    def _root_of(self, path: str) -> Path | None:
        for folder in self.dirs:
            if os.path.commonpath([str(folder), path]) == str(folder):
                return folder
        return None


def _total_size(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += os.lstat(path).st_size
        except FileNotFoundError:
            pass
    return total
