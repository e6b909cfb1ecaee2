"""Writing probed captures of one folder (a "root") into the catalog.

Images go through ``ingest.bulk.add_probed_images`` (image + annotations + outbox row, the
annotations as the probe workers converted them); a chunk of images shares one short
IMMEDIATE transaction (one by one, after a failed chunk: a savepoint each), so a folder
is indexed at disk speed without holding the write lock for long. ``CaptureFile`` remembers
what was taken from where, so nothing is indexed twice (key: root + path, and SHA-256).

Move mode: the file is hard-linked (or copied, across filesystems) into
``images/raw-data/<uuid>_<name>`` and fsync'ed, the row is committed, and only then is the
original unlinked. What is linked or copied is the file the probe read, opened again beneath
its root without following links and checked to be the same inode, size and mtime; a copy is
hashed again. A link renamed over the capture since is rejected; another file is taken later.
A crash before the commit leaves the original in place (the orphaned link is removed by the
store's start-up reconciliation); a crash after it leaves an original whose ``CaptureFile``
row says "moved", and the next pass finishes the move.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from .. import safeopen
from ..catalog import NewImage, file_root
from ..db import write_tx
from ..models import FileRoot, Image, database
from ..timeutil import now_us
from .bulk import add_probed_images
from .durable import (
    FileChanged,
    finish_move,
    fsync_dir,
    fsync_file,
    same_file,
    store_from_fd,
    syncfs,
    syncfs_available,
)
from .probe import CaptureOptions, FileStat, Probe
from .rejects import Rejection, clear_rejected, record_rejected
from .sidecars import IMAGE_SUFFIXES

# Every spelling of every image suffix (".jpg", ".JPG", ".jPg", ...): classify() lowers it.
IMAGE_SUFFIX_SPELLINGS = tuple(
    sorted(
        "".join(spelling)
        for suffix in IMAGE_SUFFIXES
        for spelling in itertools.product(*({c, c.upper()} for c in suffix))
    )
)

log = logging.getLogger("edgecatalog.capture")

INDEXED, DUPLICATE, REJECTED, CHANGING = "indexed", "duplicate", "rejected", "changing"
IN_PLACE, MOVED, DUPLICATE_KIND, SIDECAR = "image", "moved", "duplicate", "sidecar"
UPSERT_SQL = (
    'INSERT INTO "capture_file" ("root_id", "path", "kind", "image_id", "byte_size", '
    '"mtime_ns", "updated_at") VALUES (?, ?, ?, ?, ?, ?, ?) '
    'ON CONFLICT ("root_id", "path") DO UPDATE SET "kind" = excluded."kind", '
    '"image_id" = excluded."image_id", '
    '"byte_size" = excluded."byte_size", "mtime_ns" = excluded."mtime_ns", '
    '"updated_at" = excluded."updated_at"'
)


class Known(NamedTuple):
    """A file's CaptureFile row: what it was taken as, its size and mtime then, its image."""

    kind: str
    byte_size: int
    mtime_ns: int
    image_id: int | None


class FolderIndexer:
    """Indexes files found under one root folder (a watch dir or a scanned folder)."""

    def __init__(self, options: CaptureOptions, root: Path) -> None:
        self.options = options
        self.root = Path(os.path.realpath(root))
        with write_tx():
            self.root_row = file_root(str(self.root))

    # -- what is already known -------------------------------------------------------------
    def known(self, rels: Iterable[str]) -> dict[str, Known]:
        """What CaptureFile says of these relative paths (queried in chunks: bounded SQL;
        plain SQL and tuples, as a reconciliation pass asks this for every file it lists)."""
        rels = list(rels)
        found: dict[str, Known] = {}
        for i in range(0, len(rels), 500):
            chunk = rels[i : i + 500]
            rows = database.execute_sql(
                'SELECT "path", "kind", "byte_size", "mtime_ns", "image_id" FROM "capture_file" '
                f'WHERE "root_id" = ? AND "path" IN ({", ".join("?" * len(chunk))})',
                [self.root_row.id, *chunk],
            )
            found.update({row[0]: Known(*row[1:]) for row in rows})
        return found

    def image_for_stem(self, stem: str) -> int | None:
        """The image last taken from a file of this stem (``sidecars.stem_of``): its path is
        the stem and an image suffix in any case, so those paths (56) are looked up in the
        (root, path) index. No column of its own: a copy of every path less its suffix, and
        its index, cost ~100 bytes an image; a range of paths would depend on PostgreSQL's
        collation, which need not sort by code point."""
        paths = [stem + suffix for suffix in IMAGE_SUFFIX_SPELLINGS]
        row = database.execute_sql(
            'SELECT "image_id" FROM "capture_file" WHERE "root_id" = ? AND "kind" IN (?, ?) '
            f'AND "path" IN ({", ".join("?" * len(paths))}) ORDER BY "updated_at" DESC',
            (self.root_row.id, IN_PLACE, MOVED, *paths),
        ).fetchone()
        return row[0] if row is not None else None

    def remember(self, file: FileStat, kind: str, image_id: int | None) -> None:
        self.remember_many([(file, kind, image_id)])

    def remember_many(self, rows: list[tuple[FileStat, str, int | None]]) -> None:
        """Upsert CaptureFile rows (plain executemany: this runs once per indexed file)."""
        if not rows:
            return
        now = now_us()
        database.cursor().executemany(
            UPSERT_SQL,
            [
                (self.root_row.id, f.rel, kind, image_id, f.size, f.mtime_ns, now)
                for f, kind, image_id in rows
            ],
        )

    # -- images ----------------------------------------------------------------------------
    def commit(self, probes: list[Probe], rejected: set[str]) -> list[str]:
        """Index a chunk of probes in one transaction; returns one outcome per probe."""
        targets = self._stage_moves(probes) if self.options.mode == "move" else {}
        try:
            try:
                # Its own transaction, not a savepoint in a wider one: a savepoint copies
                # every page the chunk touches into its journal first, which cost a third
                # of the chunk's SQLite time. A failure rolls the whole chunk back.
                with write_tx():
                    outcomes = self._commit_bulk(probes, targets, rejected)
            except Exception:
                log.warning("bulk indexing failed; indexing one by one", exc_info=True)
                with write_tx():
                    outcomes = [self._commit_one(p, targets.get(id(p)), rejected) for p in probes]
        except BaseException:
            for target in targets.values():
                target.unlink(missing_ok=True)
            raise
        if targets:
            self._finish_moves(probes, outcomes, targets)
        return outcomes

    def _commit_bulk(
        self, probes: list[Probe], targets: dict[int, Path], rejected: set[str]
    ) -> list[str]:
        outcomes = [CHANGING if p.changing else REJECTED for p in probes]
        ready = [i for i, p in enumerate(probes) if not p.changing and not p.error]
        news = [self._new_image(probes[i], targets.get(id(probes[i]))) for i in ready]
        rows: list[tuple[FileStat, str, int | None]] = []
        rejections = [
            Rejection(p.file.where, p.error, p.file.size, p.file.mtime_ns)
            for p in probes
            if p.error and not p.changing
        ]
        results = add_probed_images(
            news, [probes[i].rows for i in ready], self.options.policy, limits=self.options.limits
        )
        for i, (image_id, created) in zip(ready, results):
            probe = probes[i]
            outcomes[i] = INDEXED if created else DUPLICATE
            kind = (MOVED if id(probe) in targets else IN_PLACE) if created else DUPLICATE_KIND
            rows.append((probe.file, kind, image_id))
            sidecar = probe.sidecar
            if created and sidecar is not None:
                if probe.sidecar_error:
                    rejections.append(
                        Rejection(
                            sidecar.where, probe.sidecar_error, sidecar.size, sidecar.mtime_ns
                        )
                    )
                else:
                    rows.append((sidecar, SIDECAR, image_id))
        self.remember_many(rows)
        for rej in rejections:
            record_rejected(rej)
            rejected.add(rej.path)
        cleared = [f.where for f, _, _ in rows if f.where in rejected]
        clear_rejected(cleared)
        rejected.difference_update(cleared)
        return outcomes

    def _commit_one(self, probe: Probe, target: Path | None, rejected: set[str]) -> str:
        file = probe.file
        if probe.changing:
            return CHANGING
        if probe.error:
            record_rejected(Rejection(file.where, probe.error, file.size, file.mtime_ns))
            rejected.add(file.where)
            return REJECTED
        try:
            with write_tx():  # a savepoint: a failed image leaves the rest of the chunk
                [(image_id, created)] = add_probed_images(
                    [self._new_image(probe, target)],
                    [probe.rows],
                    self.options.policy,
                    limits=self.options.limits,
                )
        except Exception as exc:  # one bad file must not stop the rest of the chunk
            log.exception("cannot index %s", file.path)
            reason = getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"
            record_rejected(Rejection(file.where, reason, file.size, file.mtime_ns))
            return REJECTED
        kind = (MOVED if target else IN_PLACE) if created else DUPLICATE_KIND
        self.remember(file, kind, image_id)
        if file.where in rejected:
            clear_rejected([file.where])
            rejected.discard(file.where)
        if created and probe.sidecar is not None:
            self._commit_sidecar(probe, image_id, rejected)
        return INDEXED if created else DUPLICATE

    def _commit_sidecar(self, probe: Probe, image_id: int, rejected: set[str]) -> None:
        sidecar = probe.sidecar
        assert sidecar is not None
        if probe.sidecar_error:
            record_rejected(
                Rejection(sidecar.where, probe.sidecar_error, sidecar.size, sidecar.mtime_ns)
            )
            rejected.add(sidecar.where)
            return
        self.remember(sidecar, SIDECAR, image_id)
        if sidecar.where in rejected:
            clear_rejected([sidecar.where])
            rejected.discard(sidecar.where)

    def _new_image(self, probe: Probe, target: Path | None) -> NewImage:
        meta = probe.metadata
        file = probe.file
        filename = meta.filename if meta and meta.filename else os.path.basename(file.where)
        if target is not None:
            root, rel = (
                str(self.options.images_dir),
                target.relative_to(self.options.images_dir).as_posix(),
            )
        else:
            root, rel = str(self.root), file.rel
        return NewImage(
            filename=filename,
            storage_key=rel,
            sha256=probe.sha256,
            crc32=probe.crc32,
            byte_size=file.size,
            width=probe.width,
            height=probe.height,
            root=root,
            device_id=(meta.device_id if meta and meta.device_id else self.options.device_id),
            # Without a timestamp in the sidecar, the file's mtime is the best capture time.
            captured_at=meta.captured_at if meta and meta.captured_at else file.mtime_ns // 1000,
            model_id=meta.model_id if meta else "",
            model_version=meta.model_version if meta else "",
            source=meta.source if meta else "",
            annotations=(),  # a probe's sidecar annotations come converted, in probe.rows
        )

    # -- move mode -------------------------------------------------------------------------
    def _stage_moves(self, probes: list[Probe]) -> dict[int, Path]:
        """Link each new image into images/raw-data/ durably, before its row is committed."""
        fresh = [p for p in probes if not p.changing and not p.error]
        shas = sorted({p.sha256 for p in fresh})
        existing: set[str] = set()
        for i in range(0, len(shas), 500):
            existing |= {
                s
                for (s,) in Image.select(Image.sha256)
                .where(Image.sha256.in_(shas[i : i + 500]))
                .tuples()
            }
        folder = self.options.images_dir / "raw-data"
        folder.mkdir(parents=True, exist_ok=True)
        targets: dict[int, Path] = {}
        batch_sync = syncfs_available()
        for probe in fresh:
            if probe.sha256 in existing:
                continue  # a duplicate stays where it is: nothing to move
            target = folder / f"{uuid.uuid4()}_{probe.file.path.name}"
            try:
                if not self._stage_one(probe, target, sync=not batch_sync):
                    continue
            except OSError:
                # Disk full, say: the copies staged so far have no row and never will in this
                # pass; remove them now rather than leave the space taken until a restart.
                for staged in targets.values():
                    staged.unlink(missing_ok=True)
                raise
            targets[id(probe)] = target
        # One flush of the filesystem for the whole chunk (the data and the new names) instead
        # of an fsync per file: the same guarantee, a fraction of the waiting.
        if targets and not (batch_sync and syncfs(folder)):
            if batch_sync:  # syncfs failed: flush file by file after all
                for target in targets.values():
                    fsync_file(target)
            fsync_dir(folder)
        return targets

    def _stage_one(self, probe: Probe, target: Path, sync: bool) -> bool:
        """Store the very file the probe read at ``target``; False (and the probe marked
        rejected or changing) when its name no longer holds that file."""
        try:
            fd = safeopen.open_fd(probe.root, probe.file.rel)
        except FileNotFoundError:
            probe.changing = True
            return False
        except safeopen.UnsafeFile as exc:
            probe.error = f"{exc.reason}: replaced after it was read"
            return False
        try:
            if probe.ident is None or not same_file(os.fstat(fd), probe.ident):
                probe.changing = True  # another file by that name now: probe it afresh
                return False
            store_from_fd(fd, target, probe.sha256, sync=sync)
        except FileChanged:
            probe.changing = True
            return False
        finally:
            os.close(fd)
        return True

    def _finish_moves(
        self, probes: list[Probe], outcomes: list[str], targets: dict[int, Path]
    ) -> None:
        folders = set()
        for probe, outcome in zip(probes, outcomes):
            target = targets.get(id(probe))
            if target is None:
                continue
            if outcome == INDEXED:
                finish_move(probe.root, probe.file.rel, target, probe.sha256, probe.ident)
                folders.add(probe.file.path.parent)
            else:  # same bytes twice in one chunk, or rejected after staging
                target.unlink(missing_ok=True)
        for folder in folders:
            fsync_dir(folder)

    def resume_move(self, file: FileStat, row: Known) -> bool:
        """An original still present after its move was committed: finish the move."""
        image = (
            Image.select(Image, FileRoot.path.alias("root_path"))
            .join(FileRoot, on=(Image.root == FileRoot.id))
            .where(Image.id == row.image_id)
            .objects()
            .first()
        )
        if image is None or image.byte_size != file.size:
            return False
        finish_move(
            str(self.root), file.rel, Path(image.root_path) / image.storage_key, image.sha256
        )
        return True
