"""Shared harness for the fault, hostile-input and soak tests: the figures they report, a
subprocess server's memory, and a planted secret that must never be served.

Every test here records its figures with ``record(name, ...)``: they are printed (visible with
``pytest -s``) and merged into ``test-artifacts/reliability.json`` (one entry per test name,
the last run wins), which ``benchmarks/reliability_table.py`` turns into the README table.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
REPORT = ARTIFACTS / "reliability.json"
COLUMNS = ("runs", "faults", "requests", "errors", "lost")


def record(name: str, *, runs: int, faults: int, requests: int, errors: int, lost: int,
           **extra: Any) -> dict[str, Any]:
    """Print one test's figures and merge them into the JSON report.

    ``errors`` counts answers that are failures by the test's own definition (5xx, a lock
    error, an accepted forgery...), not the 4xx a hostile request is supposed to get."""
    entry = {"runs": runs, "faults": faults, "requests": requests, "errors": errors,
             "lost": lost, **extra, "recorded_at": int(time.time())}
    print(f"\n[reliability] {name}: " + json.dumps(entry, sort_keys=True))
    ARTIFACTS.mkdir(exist_ok=True)
    # A lock file, so xdist-style parallel runs cannot interleave the read-modify-write.
    with open(ARTIFACTS / ".reliability.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        except ValueError:
            current = {}
        current[name] = entry
        tmp = REPORT.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, REPORT)
    return entry


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc (Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


SECRET_BYTES = b"TOP-SECRET-" + os.urandom(8).hex().encode() + b"-MUST-NEVER-BE-SERVED"


def plant_secret(folder: Path) -> Path:
    """A file outside every served folder whose bytes no response may ever contain."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "secret.txt"
    path.write_bytes(SECRET_BYTES)
    return path


class LoggedServe:
    """``edgecatalog serve`` as a subprocess whose stderr goes to a file, not a pipe: under
    load waitress logs a warning per queued task, and an undrained pipe fills up and blocks
    the server's main thread in the middle of a soak (found the hard way)."""

    def __init__(self, config: Path, port: int, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        import subprocess
        import sys

        self.port, self.url, self.log_path = port, f"http://127.0.0.1:{port}", log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
        full_env.update(env or {})
        self._log = open(log_path, "ab")  # noqa: SIM115 - open for the process's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecatalog", "serve", "--config", str(config)],
            env=full_env, stdout=subprocess.DEVNULL, stderr=self._log)

    def wait_ready(self, timeout: float = 20.0) -> None:
        import requests

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

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = 9) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()
