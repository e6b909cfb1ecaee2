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


class ServeProcess:
    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecatalog", "serve", "--config", str(config)],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited early: {self.proc.communicate()[1]}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve did not become ready")

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"serve did not exit in {timeout} s; stderr: {err}") from None
        return self.proc.returncode, err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


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
