"""Run the real ``edgecatalog serve`` as a subprocess for tests that need a whole process:
signals, exit codes, sd_notify. Bounded waits everywhere; the process is always reaped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, data_dir: Path, port: int, **sections: dict[str, Any]) -> Path:
    """A TOML config; ``sections`` like server={"shutdown_timeout": 5.0} are merged in."""
    merged: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": port},
        "storage": {"data_dir": str(data_dir)},
        "auth": {"jwt_secret": "t" * 40},
    }
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    lines = []
    for name, values in merged.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value!r}")
            elif isinstance(value, list):
                lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
            else:
                lines.append(f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


class ServeProcess:
    """``edgecatalog serve`` as a subprocess. Its stderr goes to a file, never a pipe: under
    load waitress logs a warning per queued task, and an undrained pipe fills up and blocks
    the server's main thread."""

    def __init__(
        self,
        config: Path,
        port: int,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path or config.with_name(f"serve-{port}.log")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
        full_env.update(env or {})
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open for the process's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecatalog", "serve", "--config", str(config)],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited early: {self.log_text()[-2000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("serve did not become ready")

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def wait(self, timeout: float = 30.0) -> tuple[int, str]:
        """(exit status, everything the process wrote to stderr)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"serve did not exit in {timeout} s; stderr: {self.log_text()[-2000:]}"
            ) from None
        return self.proc.returncode, self.log_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class ThreadedServer:
    """The app on a real waitress, on a free loopback port, driven by the service's own
    ``GracefulServer`` loop in a thread (so closing it is prompt, as in production)."""

    def __init__(self, app: Any, **adjustments: Any) -> None:
        import threading

        import waitress

        from edgecatalog.server import GracefulServer

        self.graceful = GracefulServer(
            waitress.create_server(app, host="127.0.0.1", port=0, **adjustments)
        )
        self.port = self.graceful.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.graceful.run_until_stopped, daemon=True)
        self.thread.start()

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kw)

    def close(self) -> None:
        self.graceful.request_stop()
        self.thread.join(timeout=5)
        self.graceful.drain(2.0)
