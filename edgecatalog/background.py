"""Background work that runs inside ``edgecatalog serve``: each piece is a ``Service`` with
``start()`` and ``stop(timeout)``. ``build_services`` decides which run for a configuration; the
CLI starts them after the server is listening and stops them, in reverse, on shutdown.
No Flask here: services use the domain and ``database.connection_context()`` directly.

Several ``serve`` processes may share one catalog (a site gateway on PostgreSQL with a shared
data folder). Jobs that must run in one of them at a time are elected: the sync worker and
eviction take the engine's job lock for each pass (``sync/worker.py``, ``retention.py``), and
the capture watcher runs inside ``Elected``, in whichever process holds its lock, moving to
another within ``ELECTION_SECONDS`` of that one dying (its lock dies with its session or
descriptor).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from peewee import DatabaseError, InterfaceError

from .config import Settings
from .engines import current as engine
from .models import database

log = logging.getLogger("edgecatalog.background")
ELECTION_SECONDS = 2.0  # how often a process not running an elected job asks for it


class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...


def build_services(settings: Settings) -> list[Service]:
    """The background services this configuration asks for, in start order."""
    services: list[Service] = []
    from .sync.service import build_sync_services

    services.extend(build_sync_services(settings))  # sync worker, or the local_only marker
    if settings["capture.watch_dirs"]:
        from .ingest.capture import CaptureService

        # A missing watch dir raises ConfigError here, in every process.
        services.append(Elected(CaptureService(settings), settings))
    return services


class Elected:
    """``service`` runs in one process of the catalog at a time: the one holding the job lock
    ``elected-<name>`` (a file lock in ``data_dir`` on SQLite, a session advisory lock on
    PostgreSQL). The others ask every ``retry`` seconds. The holder checks its lock's session
    as often, and stops the service when it is gone (the server restarted): the lock may be
    someone else's by then."""

    def __init__(self, service: Service, settings: Settings, retry: float = ELECTION_SECONDS):
        self.inner = service
        self.name = f"{service.name} (elected)"
        self.settings = settings
        self.retry = retry
        self.running = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="elected", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        lock = f"elected-{self.inner.name.replace(' ', '-')}"
        while not self._stop.is_set():
            try:
                with engine().job_lock(database, lock, self.settings.data_dir, 0.0) as got:
                    if got:
                        self._hold()
            except (DatabaseError, InterfaceError, OSError) as exc:  # asked again after a pause
                log.warning("%s: election failed: %s", self.inner.name, exc)
            self._stop.wait(self.retry)

    def _hold(self) -> None:
        log.info("%s runs in this process", self.inner.name)
        self.inner.start()
        self.running = True
        try:
            while not self._stop.wait(self.retry):
                with database.connection_context():
                    database.execute_sql("SELECT 1")  # the lock's session is still there
        except (DatabaseError, InterfaceError) as exc:
            log.warning("%s stops here: its lock's session was lost (%s)", self.inner.name, exc)
        finally:
            self.running = False
            self.inner.stop(self.settings["server.shutdown_timeout"])


def start_all(services: list[Service]) -> None:
    for service in services:
        log.info("starting %s", service.name)
        service.start()


def stop_all(services: list[Service], timeout: float) -> None:
    for service in reversed(services):
        log.info("stopping %s", service.name)
        service.stop(timeout)
