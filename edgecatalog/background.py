"""Background work that runs inside ``edgecatalog serve``: each piece is a ``Service`` with
``start()`` and ``stop(timeout)``. ``build_services`` decides which run for a configuration; the
CLI starts them after the server is listening and stops them, in reverse, on shutdown.
No Flask here: services use the domain and ``database.connection_context()`` directly.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .config import Settings

log = logging.getLogger("edgecatalog.background")


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

        services.append(CaptureService(settings))  # a missing watch dir raises ConfigError here
    return services


def start_all(services: list[Service]) -> None:
    for service in services:
        log.info("starting %s", service.name)
        service.start()


def stop_all(services: list[Service], timeout: float) -> None:
    for service in reversed(services):
        log.info("stopping %s", service.name)
        service.stop(timeout)
