"""Making files durable: hard links (or copies) into the images folder, fsync of files and
folders, and Linux ``syncfs`` to flush a whole chunk of new files in one call.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from functools import lru_cache
from pathlib import Path


def link_durably(source: Path, target: Path, sync: bool = True) -> None:
    """Make ``target`` the same bytes as ``source`` without touching ``source``; with ``sync``
    they are on disk when this returns (else the caller flushes, see ``syncfs``)."""
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or one without hard links: copy instead
        tmp = target.with_name(f".{target.name}.part")
        try:
            shutil.copyfile(source, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a disk-full copy must not keep the space it took
            raise
        os.replace(tmp, target)
    if sync:
        fsync_file(target)


def fsync_file(path: Path) -> None:
    """Flush a file (or, for a folder, the names in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_move(source: Path, target: Path) -> None:
    """Remove the original once its copy is safe; re-create the copy if something removed it
    (the store's start-up reconciliation runs in another process and may have seen it as an
    orphan before the row was committed)."""
    try:
        if not target.exists():
            link_durably(source, target)
        source.unlink()
    except FileNotFoundError:
        pass  # the original is already gone: the move was finished elsewhere


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fsync_file(path)


@lru_cache(maxsize=1)
def _libc_syncfs():
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # not Linux/glibc: fsync file by file instead
        return None


def syncfs_available() -> bool:
    return _libc_syncfs() is not None


def syncfs(folder: Path) -> bool:
    """Flush the whole filesystem holding ``folder`` (Linux ``syncfs``); False if it failed."""
    func = _libc_syncfs()
    if func is None:
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        return func(fd) == 0
    finally:
        os.close(fd)
