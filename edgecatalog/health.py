"""Health checks shared by ``GET /readyz``, the systemd watchdog and ``edgecatalog doctor``.

Each check returns a ``Check`` (name, ok, message, figures). Messages are written for an
operator and never carry a secret or a path of the machine: ``/readyz`` answers without auth.
No Flask here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings
from .models import database


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str
    figures: dict[str, Any] = field(default_factory=dict)
    warning: bool = False  # not ok, but not a reason to fail (doctor prints WARN)


@contextmanager
def _connection() -> Iterator[None]:
    # A request thread keeps its connection open between requests; connection_context()
    # would close it on exit, so only threads without one get a temporary connection.
    if database.is_closed():
        with database.connection_context():
            yield
    else:
        yield


def check_database() -> Check:
    """The database answers a trivial query."""
    try:
        with _connection():
            database.execute_sql("SELECT 1").fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure is the answer "not healthy"
        return Check("database", False, f"database does not answer: {exc.__class__.__name__}")
    return Check("database", True, "database answers")


def check_migrations() -> Check:
    from .db import runner

    try:
        with _connection():
            pending = [m.name for m in runner().status() if m.applied is None and m.path]
    except Exception as exc:  # noqa: BLE001 - any failure is the answer "not healthy"
        return Check("migrations", False, f"cannot read migration state: {exc.__class__.__name__}")
    if pending:
        return Check(
            "migrations",
            False,
            f"{len(pending)} migration(s) pending: " + ", ".join(pending),
            {"pending": len(pending)},
        )
    return Check("migrations", True, "migrations current", {"pending": 0})


def check_writable(data_dir: Path) -> Check:
    """The data folder accepts a new file (a read-only remount or a full inode table fails)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".writecheck-", dir=data_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return Check("data_dir", False, f"data folder is not writable: {exc.strerror or exc}")
    return Check("data_dir", True, "data folder writable")


def disk_figures(data_dir: Path) -> dict[str, Any]:
    usage = shutil.disk_usage(data_dir)
    used_percent = 100.0 * (usage.total - usage.free) / usage.total if usage.total else 100.0
    return {
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "used_percent": round(used_percent, 2),
    }


def check_disk(settings: Settings) -> Check:
    """Free space above ``[retention] min_free_bytes`` and use below ``max_disk_percent``."""
    try:
        figures = disk_figures(settings.data_dir)
    except OSError as exc:
        return Check("disk", False, f"cannot read disk usage: {exc.strerror or exc}")
    min_free = settings["retention.min_free_bytes"]
    max_percent = settings["retention.max_disk_percent"]
    figures.update(min_free_bytes=min_free, max_disk_percent=max_percent)
    if figures["free_bytes"] < min_free:
        return Check(
            "disk",
            False,
            f"only {figures['free_bytes']} bytes free, below retention.min_free_bytes = {min_free}",
            figures,
        )
    if figures["used_percent"] > max_percent:
        return Check(
            "disk",
            False,
            f"disk is {figures['used_percent']}% full, above "
            f"retention.max_disk_percent = {max_percent:g}",
            figures,
        )
    return Check("disk", True, "enough free disk", figures)


def readiness(settings: Settings) -> list[Check]:
    """Everything /readyz requires, in a fixed order."""
    db_check = check_database()
    checks = [db_check]
    # Migration state needs a working database; reporting it twice helps nobody.
    checks.append(
        check_migrations()
        if db_check.ok
        else Check("migrations", False, "not checked: database does not answer")
    )
    checks.append(check_writable(settings.data_dir))
    checks.append(check_disk(settings))
    return checks
