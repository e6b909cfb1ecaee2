"""Group commit: concurrent uploads share one write transaction and one disk flush.

With ``synchronous = FULL`` every SQLite commit waits for an fsync of the WAL (several ms on
an SD card or a VM disk), and commits are serialized by the write lock, so one commit per
upload caps ingestion at a few dozen images a second whatever the thread count. Here the
first thread to arrive becomes the leader: it runs every job waiting at that moment in one
``BEGIN IMMEDIATE`` transaction (each job in its own savepoint, so a bad one rolls back
alone), flushes the folders the jobs' files were renamed into, commits once, and wakes each
job's thread with its own result. Threads that arrive meanwhile queue for the next round.
There is no background thread and no waiting for company: a lone upload commits at once.

Durability is unchanged: no job returns before the commit holding its row is on disk, and
the folder flush precedes the commit, so a row never points at a rename the disk forgot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..db import write_tx
from .durable import fsync_dir, fsync_file, syncfs, syncfs_available

MAX_JOBS_PER_COMMIT = 64  # keeps each write transaction short for readers and other writers


@dataclass
class _Job:
    work: Callable[[], Any]
    folders: tuple[Path, ...]
    files: tuple[Path, ...] = ()
    wake: threading.Event = field(default_factory=threading.Event)
    finished: bool = False  # False when woken: this thread is to lead the next round
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    """Run ``work`` inside a write transaction shared with whatever else is waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._leading = False

    def run(
        self,
        work: Callable[[], Any],
        *,
        sync_folders: Iterable[Path] = (),
        sync_files: Iterable[Path] = (),
    ) -> Any:
        """``work()``'s result once committed, or its exception (its writes rolled back).

        ``sync_files`` and ``sync_folders`` are flushed to disk before the commit: pass the
        file a job stored and the folder it was renamed into, so both are durable before the
        row pointing at them is.
        """
        job = _Job(work, tuple(sync_folders), tuple(sync_files))
        with self._lock:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead_one_round()
        while not job.finished:
            job.wake.wait()
            if not job.finished:  # handed the lead: this job is first in the next round
                job.wake.clear()
                self._lead_one_round()
        if job.error is not None:
            raise job.error
        return job.result

    def _lead_one_round(self) -> None:
        """Commit what is waiting, then hand the lead to the first job still waiting, so no
        thread's own response waits behind an endless stream of other threads' uploads."""
        with self._lock:
            batch = self._pending[:MAX_JOBS_PER_COMMIT]
            del self._pending[:MAX_JOBS_PER_COMMIT]
        try:
            _flush(batch)
            _commit(batch)
        # The transaction as a whole failed, whatever the reason: so did every job, and each
        # waiting thread must be told rather than wait forever.
        except BaseException as exc:  # noqa: BLE001
            for job in batch:
                job.error = job.error or exc
        finally:
            for job in batch:
                job.finished = True
                job.wake.set()
            with self._lock:
                if self._pending:
                    self._pending[0].wake.set()
                else:
                    self._leading = False


def _commit(batch: list[_Job]) -> None:
    with write_tx():
        for job in batch:
            try:
                with write_tx():  # nested: a savepoint, rolled back alone on error
                    job.result = job.work()
            except Exception as exc:  # noqa: BLE001 - handed to the job's own thread to raise
                job.error = exc


def _flush(batch: list[_Job]) -> None:
    """Make every job's file and rename durable, before (and outside) the write transaction.

    One ``syncfs`` of the filesystem costs about what one fsync does, so a round of N uploads
    pays one flush instead of N file fsyncs plus a folder fsync; without ``syncfs`` each file
    and folder is fsync'ed.
    """
    files = [f for job in batch for f in job.files]
    folders = list(dict.fromkeys(f for job in batch for f in job.folders))
    if not files and not folders:
        return
    if syncfs_available() and syncfs(folders[0] if folders else files[0].parent):
        return
    for path in files:
        fsync_file(path)
    for folder in folders:
        fsync_dir(folder)


# One per process: every upload thread of the service shares it.
UPLOADS = GroupCommit()
