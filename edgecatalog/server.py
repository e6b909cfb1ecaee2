"""Running the service: the waitress server built from the settings, its event loop, and an
orderly shutdown.

``serve(settings)`` is what ``edgecatalog serve`` runs: open and migrate the database, bind,
start background services, tell systemd READY=1, then loop until SIGTERM/SIGINT. On a signal
it stops accepting, lets in-flight requests (including responses still being streamed) finish
within ``[server] shutdown_timeout``, stops background services, checkpoints and closes the
database, and returns 0. The loop is ours (one ``wasyncore`` poll at a time) rather than
``server.run()`` because waitress's own loop stops sending the moment it is interrupted.
Before it opens anything, ``serve`` fixes glibc's mmap threshold (``fix_mmap_threshold``), so
the memory of a large export goes back to the system.

Its channels (``SendingChannel``) let a response body that can send itself do so: an export
archive gives its image bytes to the socket with ``sendfile``, never through Python. A
response waiting to be sent keeps at most ``OUTBUF_IN_MEMORY`` in memory, the rest in a
temporary file.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import signal
import threading
import time
from typing import Any

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.wasyncore import _DISCONNECTED

from . import background, sdnotify
from .config import Settings

log = logging.getLogger("edgecatalog.server")
BODY_HEADROOM = 64 * 1024  # multipart framing and the metadata part around an upload


class SendingChannel(HTTPChannel):
    """waitress's channel, but a body that can send itself (``send_into(fd, limit)``, as
    ``datasets.ArchiveFile`` can) is given the socket, up to what remains of it, instead of
    being read into Python and sent: an export's images go with ``sendfile``. About twice the
    bytes a second on loopback with a warm page cache.

    ``_flush_some`` is waitress 3.0's own loop over the output buffers (send what each holds,
    drop each one emptied but the last), with that one branch added.
    """

    def _flush_some(self, do_close: bool = True) -> bool:
        sent = 0
        while True:
            outbuf = self.outbufs[0]
            send_into = getattr(getattr(outbuf, "file", None), "send_into", None)
            remaining = len(outbuf)
            while remaining > 0:
                if send_into is None:
                    n = self.send(outbuf.get(self.sendbuf_len), do_close=do_close)
                else:
                    n = self._send_into(send_into, remaining, do_close)
                if not n:  # the socket is full (or gone): the loop calls again if need be
                    return self._sent(sent)
                outbuf.skip(n, True)
                remaining -= n
                sent += n
                self.total_outbufs_len -= n
            if len(self.outbufs) == 1:  # the last one stays: the next response's
                return self._sent(sent)
            emptied = self.outbufs.pop(0)
            try:
                emptied.close()
            except Exception:
                self.logger.exception("Unexpected error when closing an outbuf")

    def _send_into(self, send_into: Any, limit: int, do_close: bool) -> int:
        try:
            return int(send_into(self.socket.fileno(), limit))
        except OSError as exc:
            if exc.errno not in _DISCONNECTED:
                raise  # ExportBroken among them: waitress logs it and closes the connection
            if do_close:
                self.handle_close()
            return 0

    def _sent(self, sent: int) -> bool:
        if sent:
            self.last_activity = time.time()
        return bool(sent)


OUTBUF_IN_MEMORY = 64 * 1024


def build_server(app: Any, settings: Settings) -> Any:
    """A bound (listening) waitress server with every client-facing limit from the settings."""
    server = waitress.create_server(
        app,
        host=settings["server.host"],
        port=settings["server.port"],
        threads=settings["server.threads"],
        connection_limit=settings["server.connection_limit"],
        channel_timeout=settings["server.channel_timeout"],
        # waitress looks for idle channels only every cleanup_interval (30 s by default);
        # never less often than the timeout itself, or a 5 s timeout would mean 30 s.
        cleanup_interval=min(30, settings["server.channel_timeout"]),
        max_request_header_size=settings["server.max_request_header_bytes"],
        # A hard cap a little above the largest route limit: each route's own limit is
        # enforced in web.py with a JSON 413; a body far beyond any of them is refused by
        # waitress from its Content-Length alone (plain-text 413) before it is spooled.
        max_request_body_size=max(
            settings["ingest.max_upload_bytes"], settings["server.max_json_body_bytes"]
        )
        + BODY_HEADROOM,
        ident="edgecatalog",
        # A response body past this goes to a temporary file until sent, not the heap: at
        # waitress's 1 MB, a page of images carrying their annotations (several MB, written
        # in 64 KB pieces) held ~10 MB more at the peak of 8 concurrent clients. (A low
        # outbuf_high_watermark bounds it as well, without the file, but then a client that
        # reads slowly holds a worker thread until it has read the page.)
        outbuf_overflow=OUTBUF_IN_MEMORY,
        # The app judges forwarded headers itself, against [server] trusted_proxies (a list
        # of addresses and networks, which waitress's single trusted_proxy cannot express).
        clear_untrusted_proxy_headers=False,
    )
    listeners = server.map.values() if hasattr(server, "map") else [server]
    for listener in listeners:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = SendingChannel
    return server


class GracefulServer:
    """Drives a waitress server's event loop so it can be drained instead of cut off."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.adj = server.adj
        self.map: dict = server.map if hasattr(server, "map") else server._map
        self._stop = threading.Event()
        self.last_tick = time.monotonic()

    @property
    def port(self) -> int:
        return int(getattr(self.server, "effective_port", 0) or self._listeners()[0].effective_port)

    def _listeners(self) -> list[BaseWSGIServer]:
        return [d for d in list(self.map.values()) if isinstance(d, BaseWSGIServer)]

    def _channels(self) -> list[HTTPChannel]:
        return [d for d in list(self.map.values()) if isinstance(d, HTTPChannel)]

    def request_stop(self, *_: Any) -> None:
        """Safe from a signal handler: set a flag and wake the poll."""
        self._stop.set()
        for listener in self._listeners():
            try:
                listener.pull_trigger()
            except OSError:
                pass

    def loop_alive(self, within: float) -> bool:
        """True when the event loop went round within ``within`` seconds (for the watchdog)."""
        return time.monotonic() - self.last_tick < within

    def _poll(self, timeout: float) -> None:
        wasyncore.loop(timeout=timeout, map=self.map, use_poll=self.adj.asyncore_use_poll, count=1)
        self.last_tick = time.monotonic()

    def run_until_stopped(self) -> None:
        while not self._stop.is_set():
            self._poll(self.adj.asyncore_loop_timeout)

    def drain(self, timeout: float) -> bool:
        """Stop accepting, finish in-flight requests; True when everything finished in time."""
        for listener in self._listeners():
            listener.accepting = False
            # dispatcher.close, not listener.close: the trigger must keep waking the loop.
            wasyncore.dispatcher.close(listener)
        deadline = time.monotonic() + timeout
        finished = False
        while time.monotonic() < deadline:
            busy = 0
            for channel in self._channels():
                if channel.requests or channel.request is not None or channel.total_outbufs_len:
                    busy += 1
                else:
                    channel.will_close = True  # idle keep-alive: close it now
            if not self._channels():
                finished = True
                break
            self._poll(0.05)
        dispatcher = self.server.task_dispatcher
        dispatcher.shutdown(timeout=max(0.0, deadline - time.monotonic()))
        if not finished:
            log.warning("shutdown timeout: %d connection(s) cut off", len(self._channels()))
        wasyncore.close_all(self.map)
        return finished


def _close_database() -> None:
    from .engines import current as engine
    from .models import database

    try:
        with database.connection_context():
            engine().at_shutdown(database)
    except Exception as exc:  # noqa: BLE001 - shutting down anyway; say so and go on
        log.warning("database checkpoint at shutdown failed: %s", exc)
    if not database.is_closed():
        database.close()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept


def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold where it starts. glibc raises it (up to 32 MB) each time
    a block it had mapped is freed, so the next large blocks (an export plan's arrays, a
    long page of rows) come from the heap and stay with the process once freed: about 20 MB
    more RSS after each 100,000-image export, without end. Fixed, a large block is mapped
    and handed back when freed. False where there is no glibc (a no-op there)."""
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    from . import create_app, health

    fix_mmap_threshold()
    app = create_app(settings)  # opens the database and applies pending migrations
    graceful = GracefulServer(build_server(app, settings))
    services = background.build_services(settings)
    log.info("serving on http://%s:%s", settings["server.host"], graceful.port)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, graceful.request_stop)
    # A look inside a service that seems stuck, without stopping it: SIGUSR1 writes every
    # thread's stack to stderr (the journal). faulthandler does it from C, so it works even
    # when a thread holds the GIL or a lock a Python-level handler would need. A fatal
    # signal (SIGSEGV in a C extension, say) leaves the stacks there too, not just an exit.
    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    background.start_all(services)
    loop_budget = max(5.0, graceful.adj.asyncore_loop_timeout * 5)
    watchdog = sdnotify.Watchdog(
        lambda: graceful.loop_alive(loop_budget) and health.check_database().ok
    )
    sdnotify.notify(f"READY=1\nSTATUS=serving on port {graceful.port}")
    watchdog.start()
    timeout = settings["server.shutdown_timeout"]
    try:
        graceful.run_until_stopped()
        log.info("shutting down (up to %.0f s for in-flight work)", timeout)
    finally:
        sdnotify.notify("STOPPING=1")
        started = time.monotonic()
        graceful.drain(timeout)
        watchdog.stop(1.0)
        remaining = max(1.0, timeout - (time.monotonic() - started))
        background.stop_all(services, remaining)
        _close_database()
    log.info("stopped")
    return 0
