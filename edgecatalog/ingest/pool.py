"""Where a scan's probes run: worker processes when the folder is large and forking is safe,
else threads of this process. Either way ``submit`` takes a group of files and gives back a
future of their ``Probe``s, in order; nothing here touches the database.

Why processes: a probe is about half Python (image header walk, sidecar JSON or YOLO
parsing, annotation conversion) and half reading and hashing. In threads the Python halves of
two probes and of the writing thread take turns on one GIL, so a 2-core device tops out near
one core of Python work, and the GIL hand-offs cost more CPU still. Forked workers parse in
parallel with the writer. What crosses the pipe is plain tuples (``Probe.to_wire``): pickling
dataclasses and Paths cost the writer more than the parsing it saved.

Processes are used for at least ``PROCESS_MIN`` files (starting them costs milliseconds). A
process whose only thread is the caller (the ``scan`` command) forks them; one with other
threads (the service: a server thread may hold a lock a forked child would inherit, locked for
ever) has them forked by ``forkserver``, a clean single-threaded process started once. Where
neither works (a sandbox without the semaphores they need, say), threads do the probing. Workers die with their parent (Linux ``PR_SET_PDEATHSIG``), so a killed scan
leaves no orphans probing on; a worker killed on its own (the OOM killer) fails the scan with
one line, and what was committed stays committed (the next scan goes on from there).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

from .probe import CaptureOptions, FileStat, Probe, probe_image
from .sidecars import ClassNames, stem_of

log = logging.getLogger("edgecatalog.capture")

PROCESS_MIN = 256  # files to probe before worker processes pay for their start
FORKSERVER_MIN = 2_000  # the same, from a process with threads (the service)
PR_SET_PDEATHSIG = 1

# A worker process's state, set once by ``_init_worker`` (inherited through fork).
_worker: dict[str, Any] = {}


def start_method() -> str | None:
    """How worker processes can start here: ``fork`` from a process whose only thread is the
    caller (the ``scan`` command); ``forkserver`` from one with threads (the service), whose
    workers are forked from a clean single-threaded server process instead; None without
    either (threads then)."""
    methods = multiprocessing.get_all_start_methods()
    if hasattr(os, "fork") and "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else None


def _init_worker(options: CaptureOptions, owner: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:  # die with the parent (the scan, or the fork server, which dies with the service)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent terminates the pool instead
        pass
    # The parent is not always the owner: a fork server's workers hold its liveness pipe
    # open, so it outlives a killed service, and so would they, waiting for work for ever.
    # The owner itself is watched (and may already be gone: a kill right after the fork).
    threading.Thread(target=_exit_with, args=(owner,), daemon=True).start()
    _worker["options"] = options
    _worker["classes"] = ClassNames(options.classes)


def _exit_with(owner: int) -> None:
    """In a worker: end this process when ``owner`` ends (pidfd where Linux has it, else a
    check a second)."""
    try:
        fd = os.pidfd_open(owner)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])  # readable once the process has exited
        os._exit(1)
    while True:
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # exists, under another user: alive
            pass
        time.sleep(1.0)


def _probe_wire(
    files: list[tuple[str, str, int, int]],
    hints: list[tuple[str, str, int, int] | None],
    look: bool,
) -> list[tuple]:
    """In a worker process: probe each file, answer plain tuples."""
    options, classes = _worker["options"], _worker["classes"]
    out = []
    for (path, rel, size, mtime), hint in zip(files, hints):
        side = None if hint is None else FileStat(*hint)
        out.append(
            probe_image(FileStat(path, rel, size, mtime), options, classes, side, look).to_wire()
        )
    return out


WORKER_DIED = "a probe worker process died; run the scan again"


class ProbePool:
    """Probes groups of files; use as a context manager (``with ProbePool(...) as pool``)."""

    def __init__(self, options: CaptureOptions, workers: int, files: int) -> None:
        self.options = options
        self.classes = ClassNames(options.classes)
        self.workers = max(1, workers)
        method = start_method() if files >= PROCESS_MIN else None
        # A fork server stays up once started (~35 MB, plus multiprocessing's resource
        # tracker): worth it for a backlog, not for the few files a routine pass finds.
        self.method = None if method == "forkserver" and files < FORKSERVER_MIN else method
        self.uses_processes = self.method is not None
        self._procs: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None

    def __enter__(self) -> ProbePool:  # noqa: PYI034 - the class is final; Python 3.10 has no Self
        if self.uses_processes:
            try:
                self._start_processes()
            except (OSError, RuntimeError, ValueError, BrokenProcessPool) as exc:
                # A sandbox without shared-memory semaphores, say: slower, still correct.
                log.warning("probe worker processes could not start (%s); using threads", exc)
                self.uses_processes, self._procs = False, None
        if not self.uses_processes:
            self._threads = ThreadPoolExecutor(max_workers=self.workers)
        return self

    def _start_processes(self) -> None:
        context = multiprocessing.get_context(self.method)
        if self.method == "forkserver":
            # The server imports this module once; each worker forked from it has it.
            context.set_forkserver_preload([__name__])
        # Frozen objects are skipped by the children's collector, which would otherwise
        # touch (and so copy) every page of the parent's heap they share.
        gc.freeze()
        try:
            # An executor, not a multiprocessing.Pool: a worker killed while it waits for
            # work holds the Pool's queue lock and its terminate() then hangs; the executor
            # marks itself broken and fails what is pending instead.
            self._procs = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(self.options, os.getpid()),
            )
            # Start the workers now (with fork: while this is the only thread; the
            # executor's own threads start right after).
            self._procs.submit(int).result()
        except BaseException:
            if self._procs is not None:
                self._procs.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            gc.unfreeze()

    def __exit__(self, *exc: object) -> None:
        if self._procs is not None:
            self._procs.shutdown(wait=True, cancel_futures=True)
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)

    def submit(self, files: list[FileStat], hints: dict[str, FileStat], look: bool) -> Pending:
        """Start probing ``files``; ``result()`` of the answer waits for their probes."""
        mine = [hints.get(stem_of(f.rel)) for f in files]
        if self._threads is not None:
            future: Future = self._threads.submit(
                lambda: [
                    probe_image(f, self.options, self.classes, h, look) for f, h in zip(files, mine)
                ]
            )
            return Pending(future.done, future.result)
        wire_files = [(f.where, f.rel, f.size, f.mtime_ns) for f in files]
        wire_hints = [None if h is None else (h.where, h.rel, h.size, h.mtime_ns) for h in mine]
        try:
            # Broken already if a worker died since the last group was handed out.
            pending = self._procs.submit(_probe_wire, wire_files, wire_hints, look)
        except BrokenProcessPool:
            raise RuntimeError(WORKER_DIED) from None

        def result() -> list[Probe]:
            try:
                wires = pending.result()
            except BrokenProcessPool:  # killed from outside (the OOM killer, say)
                raise RuntimeError(WORKER_DIED) from None
            return [Probe.from_wire(f, w, h) for f, w, h in zip(files, wires, mine)]

        return Pending(pending.done, result)


class Pending(NamedTuple):
    """A submitted group: ``ready()`` without waiting, ``result()`` waits."""

    ready: Callable[[], bool]
    result: Callable[[], list[Probe]]
