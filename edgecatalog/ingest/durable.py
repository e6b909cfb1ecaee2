"""Making files durable: hard links (or verified copies) of an open capture into the images
folder, fsync of files and folders, and Linux ``syncfs`` to flush a whole chunk of new files in
one call. What is stored is always the file that was opened and hashed, never whatever its
name points at by the time it is linked.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from .. import safeopen

AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400
COPY_CHUNK = 1024 * 1024


class FileChanged(OSError):
    """The file at a capture's name is no longer the one that was read and hashed."""


def same_file(st: os.stat_result, ident: tuple[int, int, int, int]) -> bool:
    """``ident`` is (device, inode, size, mtime_ns) of the descriptor a probe read."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == ident


def store_from_fd(fd: int, target: Path, sha256: str, sync: bool = True) -> None:
    """Make ``target`` hold the bytes of the open file ``fd`` without touching the original.

    A hard link of the descriptor itself (``linkat`` of ``/proc/self/fd/N``), so what is
    linked is the inode that was opened, whatever the name points at by now; across
    filesystems, a copy read from the descriptor whose SHA-256 must be ``sha256`` (else
    ``FileChanged`` and no target). With ``sync`` it is on disk when this returns (else the
    caller flushes, see ``syncfs``)."""
    if not _link_fd(fd, target):
        tmp = target.with_name(f".{target.name}.part")
        try:
            digest = _copy_fd(fd, tmp)
            if digest != sha256:
                raise FileChanged(errno.ESTALE, "changed after it was read", str(target))
        except BaseException:
            tmp.unlink(missing_ok=True)  # a disk-full copy must not keep the space it took
            raise
        os.replace(tmp, target)
    if sync:
        fsync_file(target)


def _copy_fd(fd: int, tmp: Path) -> str:
    with open(tmp, "wb") as out:
        return _digest_fd(fd, out.write)


@lru_cache(maxsize=1)
def _libc_linkat():
    try:
        return ctypes.CDLL(None, use_errno=True).linkat
    except (OSError, AttributeError):
        return None


def _link_fd(fd: int, target: Path) -> bool:
    """Hard-link the open file ``fd`` at ``target``; False where that cannot be done (another
    filesystem, no /proc, not Linux). Python's ``os.link`` cannot: it links the magic link
    itself, which fails with EXDEV."""
    linkat = _libc_linkat()
    if linkat is None or not os.path.isdir("/proc/self/fd"):
        return False
    result = linkat(
        AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, os.fsencode(target), AT_SYMLINK_FOLLOW
    )
    return result == 0


def fsync_file(path: Path) -> None:
    """Flush a file (or, for a folder, the names in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_move(
    root: str, rel: str, target: Path, sha256: str, ident: tuple[int, int, int, int] | None = None
) -> None:
    """Remove the original once its copy is safe; re-create the copy if something removed it
    (the store's start-up reconciliation runs in another process and may have seen it as an
    orphan before the row was committed). The original is opened beneath its root without
    following links, and removed only while its name still holds the file that was stored
    (``ident``, or the same SHA-256): a capture renamed over it since is not ours to delete."""
    try:
        fd = safeopen.open_fd(root, rel)
    except FileNotFoundError:
        return  # the original is already gone: the move was finished elsewhere
    try:
        st = os.fstat(fd)
        if ident is not None and not same_file(st, ident):
            return
        if not target.exists():
            store_from_fd(fd, target, sha256)
        elif ident is None and _digest_fd(fd) != sha256:
            return
        os.unlink(safeopen.as_path(root, rel))
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _digest_fd(fd: int, sink: Callable[[bytes], object] | None = None) -> str:
    """The SHA-256 of the whole open file (read by offset, so the descriptor's position does
    not matter); each chunk also goes to ``sink`` when given (a copy)."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, COPY_CHUNK, offset):
        digest.update(chunk)
        if sink is not None:
            sink(chunk)
        offset += len(chunk)
    return digest.hexdigest()


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
