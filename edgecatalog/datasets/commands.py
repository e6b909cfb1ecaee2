"""What ``edgecatalog export`` and ``edgecatalog import`` do, given parsed arguments. No
Flask.

``import`` checks ``--device-id`` and ``--project`` by the API's rules, then runs
``importer.import_dataset`` with a progress bar of the images stored on a terminal; a
malformed dataset is one line naming the file and the line or field.

``export`` plans the same archive as ``GET /data/exports/{format}`` (the same request parser,
given the options as a query string would give them) and writes it to ``--out`` through a
``.part`` file renamed when whole, with a progress bar of images and bytes on a terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from ..config import Settings
from .export import build_export, parse_export


class CommandRefused(Exception):
    """The command cannot act on what it was given (a bad option value, a bad dataset)."""


def run_export(
    settings: Settings,
    fmt: str,
    options: Mapping[str, str],
    out: Path,
    *,
    err: TextIO = sys.stderr,
) -> int:
    """Write the archive; returns its size in bytes."""
    from .. import db
    from ..errors import CatalogError
    from ..models import database

    db.open_for(settings)
    db.migrate()
    try:
        request = parse_export(
            fmt,
            options,
            max_class_values=settings["limits.max_class_values"],
            max_chars=settings["limits.max_param_chars"],
        )
        with database.connection_context():
            archive = build_export(request, settings.data_dir / "exports")
    except CatalogError as exc:
        raise CommandRefused(f"{exc.details}: {exc.message}" if exc.details else exc.message)
    part = out.with_name(out.name + ".part")
    bar = _progress(archive, err)
    try:
        with open(part, "wb") as sink:
            for piece in archive.chunks():
                sink.write(piece)
                if bar is not None:
                    bar.update(len(piece))
                    bar.set_postfix_str(
                        f"{archive.files_before(sink.tell())}/{archive.files} images", refresh=False
                    )
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        archive.close()
        if bar is not None:
            bar.close()
    print(f"wrote {out}: {archive.files} images, {archive.size} bytes", file=err)
    return archive.size


def _progress(archive, err: TextIO):
    if not err.isatty():
        return None
    from tqdm import tqdm

    tqdm.monitor_interval = 0
    return tqdm(
        total=archive.size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=err,
        dynamic_ncols=True,
        leave=False,
    )


def run_import(
    settings: Settings,
    path: Path,
    fmt: str,
    *,
    device_id: str | None,
    project: str | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    from .. import db
    from ..device_keys import check_device_id
    from ..errors import ValidationError
    from ..models import database
    from ..projects import MAX_NAME_CHARS
    from .importer import import_dataset
    from .source import MalformedDataset

    try:
        device_id = None if device_id is None else check_device_id(device_id, "--device-id")
    except ValidationError as exc:
        raise CommandRefused(exc.message) from None
    if project is not None:
        project = project.strip()
        if not project or len(project) > MAX_NAME_CHARS or not project.isprintable():
            raise CommandRefused(f"--project must be 1..{MAX_NAME_CHARS} printable characters")
    db.open_for(settings)
    db.migrate()
    bar = None
    if err.isatty():
        from tqdm import tqdm

        tqdm.monitor_interval = 0
        bar = tqdm(unit="img", file=err, dynamic_ncols=True, leave=False)
    try:
        with database.connection_context():
            report = import_dataset(
                settings,
                path,
                fmt,
                device_id=device_id,
                project=project,
                progress=bar.update if bar is not None else None,
            )
    except MalformedDataset as exc:
        raise CommandRefused(f"{path}: refused, nothing imported: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
    print(report.summary(), file=out)
    return report.images
