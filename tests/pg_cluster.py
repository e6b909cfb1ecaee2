"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary folder (as the
``postgres`` user when the tests run as root, which ``initdb`` refuses), a free loopback port,
fsync off, stopped and removed at the end of the session. Debian's ``postgresql`` package
provides the binaries; ``.ci/run`` installs it where it is missing.

``EDGECATALOG_TEST_POSTGRES_URL`` (a superuser URL) uses a running server instead. Each test
gets its own database, a copy of one migrated template (``CREATE DATABASE ... TEMPLATE``).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV_URL = "EDGECATALOG_TEST_POSTGRES_URL"
TEMPLATE = "ec_template"
# Taken out of the environment when the tests start: a service they run must not see an
# EDGECATALOG_ variable it does not know (it would refuse to start).
GIVEN_URL = os.environ.pop(ENV_URL, "")


def _bin_dir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    url: str  # superuser URL of the maintenance database
    stop: object  # () -> None
    counter: itertools.count
    # (stop the server, start it again on the same port and data), for a cluster of our own
    pause: object = None
    resume: object = None

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """A fresh, migrated catalog database; its URL."""
        name = f"ec_test_{os.getpid()}_{next(self.counter)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {urlsplit(url).path.lstrip('/')} WITH (FORCE)")


def start(own: bool = False) -> tuple[Cluster | None, str]:
    """The cluster, or None with the reason the PostgreSQL tests are skipped. ``own``: a
    cluster of this process even when a server's URL is given (a test that stops it)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg is not installed (pip install '.[test]')"
    if GIVEN_URL and not own:
        return Cluster(GIVEN_URL, lambda: None, itertools.count()), ""
    bin_dir = _bin_dir()
    if bin_dir is None:
        return None, f"no PostgreSQL binaries (apt install postgresql) and no {ENV_URL}"
    base = Path(tempfile.mkdtemp(prefix="ec-pg-"))
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(bin_dir / "initdb"),
            "-D",
            str(base / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = (
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )

        def server_start() -> None:
            run(
                str(bin_dir / "pg_ctl"),
                "-D",
                str(base / "data"),
                "-l",
                str(base / "log"),
                "-w",
                "-o",
                options,
                "start",
            )

        server_start()
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        return (
            None,
            f"could not start a PostgreSQL cluster: {exc} {detail.decode(errors='replace')[:300]}",
        )

    def stop() -> None:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,  # already stopped is fine
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)

    def pause() -> None:
        # -m fast: sessions are ended, committed work is kept (a restart, not a crash).
        run(str(bin_dir / "pg_ctl"), "-D", str(base / "data"), "-w", "-m", "fast", "stop")

    cluster = Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", stop, itertools.count())
    cluster.pause, cluster.resume = pause, server_start
    return cluster, ""


def make_template(cluster: Cluster) -> None:
    """The migrated template every test database is copied from."""
    from edgecatalog import db
    from edgecatalog.engines import postgres

    cluster.admin(f"DROP DATABASE IF EXISTS {TEMPLATE}")
    cluster.admin(f"CREATE DATABASE {TEMPLATE}")
    database = db.bind(postgres.open_database(cluster.database_url(TEMPLATE)))
    try:
        db.migrate(database)
    finally:
        database.close()
