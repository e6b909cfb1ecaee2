"""The systemd notification protocol (``sd_notify``), without a dependency.

``notify(state)`` sends one datagram to ``$NOTIFY_SOCKET`` (a path, or an abstract socket
written with a leading '@'); outside systemd the variable is unset and it does nothing.
``Watchdog`` is a background service that sends ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``,
but only while a health check passes, so a wedged process (database gone, event loop stuck)
stops petting the watchdog and systemd restarts it. No Flask here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger("edgecatalog.sdnotify")


def socket_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The address from ``$NOTIFY_SOCKET``, '@' turned into the abstract namespace's NUL."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address or not address.startswith(("/", "@")):
        return None  # unset, or a vsock/other address this service does not speak
    if address.startswith("@"):
        address = "\0" + address[1:]
    return address


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. 'READY=1') to systemd; False when not under systemd or it fails."""
    address = socket_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:
        # Never fatal: a lost notification is systemd's timeout to handle, not a crash.
        log.warning("sd_notify failed: %s", exc.strerror or exc)
        return False


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``$WATCHDOG_USEC``), or None when off."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. our parent's shell)
    return int(usec) / 1_000_000 / 2


class Watchdog:
    """A thread that sends WATCHDOG=1 every ``interval`` seconds while ``healthy()`` is true."""

    name = "watchdog"

    def __init__(
        self,
        healthy: Callable[[], bool],
        interval: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.healthy = healthy
        self.environ = environ
        self.interval = interval if interval is not None else watchdog_interval(environ)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval is None:
            return
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            try:
                ok = self.healthy()
            except Exception:  # a failing check means "do not ping", never a dead thread
                log.exception("watchdog health check raised")
                ok = False
            if ok:
                notify("WATCHDOG=1", self.environ)
            else:
                log.error("health check failed; not pinging the systemd watchdog")

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
