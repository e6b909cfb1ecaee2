"""The three servers a benchmark run compares, each a subprocess on its own loopback port:
the service itself (``edgecatalog serve``), the floor (``floor_app.py``) and Datasette.

Also what is measured about a process rather than a request: time to the first answered
request (cold start) and peak resident memory (``VmHWM`` from ``/proc/<pid>/status``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    headers: dict[str, str] = field(default_factory=dict)
    cold_start_s: float = 0.0

    def peak_rss_kb(self) -> int | None:
        return peak_rss_kb(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def peak_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def wait_ready(
    url: str, headers: dict[str, str], process: subprocess.Popen, timeout: float = 60.0
) -> float:
    """Seconds from now until ``url`` answers 200; fails if the process dies or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before answering")
        try:
            if requests.get(url, headers=headers, timeout=5).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its whole life
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def write_service_config(data_dir: Path, port: int, threads: int, folder: Path) -> Path:
    """A 0600 TOML file for this run: it holds a fresh JWT secret."""
    path = folder / "bench-service.toml"
    captures = (data_dir / "captures").resolve()
    text = (
        f'[server]\nhost = "{HOST}"\nport = {port}\nthreads = {threads}\n'
        f'[storage]\ndata_dir = "{data_dir.resolve()}"\n'
        f'[auth]\njwt_secret = "{secrets.token_hex(32)}"\n'
        # An upstream is configured but sync is off: no sync traffic, and pending images
        # stay pending (with no base_url the service would mark them local_only).
        f'[upstream]\nenabled = false\nbase_url = "http://{HOST}:9/api"\n'
        f'[capture]\nwatch_dirs = ["{captures}"]\n'
        f'[logging]\nlevel = "WARNING"\n'
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def start_service(data_dir: Path, workdir: Path, threads: int = 4) -> Server:
    from edgecatalog.auth import Authenticator
    from edgecatalog.config import load_settings

    port = free_port()
    config = write_service_config(data_dir, port, threads, workdir)
    # A real token signed with the configured secret, as any client would present.
    token = Authenticator(load_settings(config, environ={})).issue_token("bench", "read", 6 * 3600)
    headers = {"Authorization": f"Bearer {token}"}
    exe = shutil.which("edgecatalog", path=str(Path(sys.executable).parent)) or "edgecatalog"
    env_free = [exe, "serve", "--config", str(config)]
    started = time.monotonic()
    proc = _spawn(env_free, workdir / "service.log")
    url = f"http://{HOST}:{port}"
    wait_ready(f"{url}/data/images?limit=1", headers, proc)
    return Server("service", url, proc, headers, time.monotonic() - started)


def start_floor(db_path: Path, workdir: Path, threads: int = 4, same_sql: bool = False) -> Server:
    port = free_port()
    started = time.monotonic()
    extra = ["--same-sql"] if same_sql else []
    proc = _spawn(
        [
            sys.executable,
            str(HERE / "floor_app.py"),
            "--db",
            str(db_path),
            "--port",
            str(port),
            "--threads",
            str(threads),
            *extra,
        ],
        workdir / "floor.log",
    )
    url = f"http://{HOST}:{port}"
    wait_ready(f"{url}/data/images?limit=1", {}, proc)
    return Server("floor", url, proc, {}, time.monotonic() - started)


def start_datasette(db_path: Path, workdir: Path) -> Server | None:
    exe = shutil.which("datasette", path=str(Path(sys.executable).parent))
    if exe is None:
        print(
            "datasette is not installed (pip install -e '.[bench]'); skipping it", file=sys.stderr
        )
        return None
    port = free_port()
    started = time.monotonic()
    # A generous time limit: a query Datasette cancels would measure its error page instead.
    proc = _spawn(
        [
            exe,
            "serve",
            str(db_path),
            "-h",
            HOST,
            "-p",
            str(port),
            "--setting",
            "sql_time_limit_ms",
            "30000",
            # Facet suggestions run extra GROUP BYs per request (seconds at 1M rows);
            # the service has no such feature, so they stay off.
            "--setting",
            "suggest_facets",
            "off",
            "--setting",
            "default_page_size",
            "50",
        ],
        workdir / "datasette.log",
    )
    url = f"http://{HOST}:{port}"
    wait_ready(f"{url}/{db_path.stem}/image.json?_size=1", {}, proc)
    return Server("datasette", url, proc, {}, time.monotonic() - started)


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgecatalog-bench-"))
