"""A dataset to import, as a ZIP or a folder: its files by '/'-separated relative name, each
read with a bound. No Flask.

Refused whole, before anything is read, with the member named (``MalformedDataset``): a name
that is absolute, climbs out (``..``), holds a backslash, a NUL or a control character, or
appears twice; a symbolic link (a ZIP member whose mode says so, or a link in the folder);
an encrypted or compressed-by-an-unknown-method member; more than ``MAX_ENTRIES`` files. A
member is never read past the size it declares (a ZIP bomb's inflated bytes stop there, and
``zipfile`` checks the CRC at the end), nor past the bound its caller gives.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .. import safeopen

MAX_ENTRIES = 2_000_000
READ_CHUNK = 1024 * 1024
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\\]")


class MalformedDataset(Exception):
    """The dataset cannot be imported: ``where`` (a file, and a line or a field) and why."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def _check_name(name: str) -> str:
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or _BAD_NAME.search(name)
        or any(p in ("..", ".") for p in parts)
        or re.match(r"^[A-Za-z]:", name)
    ):
        raise MalformedDataset(name or "(empty name)", "not a plain relative path in the dataset")
    return name


class Source:
    """The files of a dataset: ``names`` (sorted), their ``size``, and their bytes."""

    def __init__(self, sizes: dict[str, int]) -> None:
        if len(sizes) > MAX_ENTRIES:
            raise MalformedDataset("dataset", f"more than {MAX_ENTRIES} files")
        self.sizes = sizes
        self.names = sorted(sizes)

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def read(self, name: str, limit: int) -> bytes:
        """The whole file, refused when it is larger than ``limit`` bytes."""
        if self.sizes[name] > limit:
            raise MalformedDataset(name, f"larger than {limit} bytes")
        with self.open(name) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise MalformedDataset(name, f"larger than {limit} bytes")
        return data

    def chunks(self, name: str) -> Iterator[bytes]:
        with self.open(name) as fh:
            while piece := fh.read(READ_CHUNK):
                yield piece

    def close(self) -> None:
        return None


class ZipSource(Source):
    def __init__(self, path: Path) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise MalformedDataset(str(path), f"not a readable ZIP ({exc})") from None
        sizes: dict[str, int] = {}
        for info in self.zip.infolist():
            name = _check_name(info.filename)
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise MalformedDataset(name, "a symbolic link; a dataset holds files only")
            if info.flag_bits & 0x1:
                raise MalformedDataset(name, "encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise MalformedDataset(name, f"compressed with method {info.compress_type}")
            if name in sizes:
                raise MalformedDataset(name, "appears twice in the ZIP")
            sizes[name] = info.file_size
        super().__init__(sizes)

    def open(self, name: str) -> BinaryIO:
        return self.zip.open(name)  # type: ignore[return-value]

    def close(self) -> None:
        self.zip.close()


class FolderSource(Source):
    def __init__(self, root: Path) -> None:
        self.root = str(root)
        sizes: dict[str, int] = {}
        stack = [""]
        while stack:
            rel = stack.pop()
            with os.scandir(os.path.join(self.root, rel) if rel else self.root) as entries:
                for entry in entries:
                    name = f"{rel}/{entry.name}" if rel else entry.name
                    if entry.is_symlink():
                        raise MalformedDataset(name, "a symbolic link; a dataset holds files only")
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(name)
                    elif entry.is_file(follow_symlinks=False):
                        sizes[_check_name(name)] = entry.stat(follow_symlinks=False).st_size
                        if len(sizes) > MAX_ENTRIES:
                            raise MalformedDataset(str(root), f"more than {MAX_ENTRIES} files")
        super().__init__(sizes)

    def open(self, name: str) -> BinaryIO:
        try:
            return safeopen.open_file(self.root, name)
        except (OSError, ValueError) as exc:
            raise MalformedDataset(name, f"cannot be read ({exc})") from None


def open_source(path: Path) -> Source:
    if path.is_dir():
        return FolderSource(path)
    if not path.exists():
        raise MalformedDataset(str(path), "no such file or folder")
    return ZipSource(path)
