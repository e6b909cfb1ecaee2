"""Opening a file that a device or a capture folder put there: relative to its root, without
following a link anywhere on the way, and only if it is a regular file. No Flask.

A process that can write into a capture folder can plant a symbolic link (to ``jwt.secret``,
the credentials directory, ``/etc/shadow``), or rename one over a file between two looks at
it. Checking a resolved path and then opening it by name loses that race; so every component
is opened with ``O_NOFOLLOW`` relative to the descriptor of the one before, and the last one
is checked with ``fstat`` on the very descriptor that is then read. Whatever is read, hashed,
copied, served or sent upstream comes through that descriptor.

``O_NONBLOCK`` keeps a planted FIFO from hanging the open; it changes nothing for a regular
file. A hard link cannot point outside the folder's filesystem, and Linux refuses to make one
to a file the linker cannot write (``fs.protected_hardlinks``, on by default): see
docs/threat-model.md.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = (
    os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
)


class UnsafeFile(OSError):
    """The path leads through a link or ends at something other than a regular file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(errno.ELOOP, reason, path)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def relative_to_root(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """``path`` (absolute, under ``root``, or already relative) as a '/'-separated relative
    path; ValueError when it is not beneath ``root`` or climbs out with '..'."""
    root_text, text = os.fspath(root).rstrip(os.sep), os.fspath(path)
    if os.path.isabs(text):
        prefix = root_text + os.sep
        if not text.startswith(prefix):
            raise ValueError(f"{text} is not under {root_text}")
        text = text[len(prefix) :]
    parts = text.replace(os.sep, "/").split("/")
    if not text or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{text!r} is not a plain relative path")
    return "/".join(parts)


def _open_parent(root: str | os.PathLike[str], rel: str) -> tuple[int, str]:
    """A descriptor of the folder holding ``rel`` (reached through no link) and the name."""
    *folders, name = rel.split("/")
    current = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for folder in folders:
            try:
                following = os.open(folder, _DIR_FLAGS, dir_fd=current)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeFile(rel, f"{folder} is a link or not a folder") from None
                raise
            os.close(current)
            current = following
    except BaseException:
        os.close(current)
        raise
    return current, name


def open_fd(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the regular file at ``path`` beneath ``root``.

    ``root`` itself is a folder the operator configured (it may be a link: it is resolved as
    given); nothing below it may be. Raises ``UnsafeFile`` for a link or a non-regular file,
    ``FileNotFoundError`` when a component is missing, ``ValueError`` for a path not beneath
    ``root``."""
    rel = relative_to_root(root, path)
    current, name = _open_parent(root, rel)
    try:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=current)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link
                raise UnsafeFile(rel, "is a symbolic link, not a file") from None
            if exc.errno == errno.ENXIO:  # a socket or a FIFO without a writer
                raise UnsafeFile(rel, "is not a regular file") from None
            raise
    finally:
        os.close(current)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeFile(
            rel, "is a folder, not a file" if stat.S_ISDIR(mode) else "is not a regular file"
        )
    return fd


def unlink(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> int:
    """Remove the name ``path`` beneath ``root`` (reached through no link; a link there is
    removed itself, never what it points at). Returns the bytes a regular file held, 0 for
    anything else; FileNotFoundError when it is gone."""
    rel = relative_to_root(root, path)
    folder, name = _open_parent(root, rel)
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        os.unlink(name, dir_fd=folder)
    finally:
        os.close(folder)
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def open_file(
    root: str | os.PathLike[str], path: str | os.PathLike[str], buffering: int = -1
) -> BinaryIO:
    """``open_fd`` as a binary file object (closed with it)."""
    return os.fdopen(open_fd(root, path), "rb", buffering=buffering)


def root_of(where: str, rel: str) -> str:
    """The root a listed file was found under, from its absolute path and relative path."""
    tail = os.sep + rel.replace("/", os.sep)
    if not where.endswith(tail):
        raise ValueError(f"{where} does not end with {rel}")
    return where[: -len(tail)] or os.sep


def as_path(root: str | os.PathLike[str], rel: str) -> Path:
    return Path(root, *rel.split("/"))
