"""Shared harness for the fault, hostile-input and soak tests: the figures they report, a
subprocess server's memory, and a planted secret that must never be served.

Every test here records its figures with ``record(name, ...)``: they are printed (visible with
``pytest -s``) and merged into ``test-artifacts/reliability.json`` (one entry per test name,
the last run wins), which ``benchmarks/reliability_table.py`` turns into the table of docs/reliability.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from serve_process import ServeProcess

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
REPORT = ARTIFACTS / "reliability.json"
COLUMNS = ("runs", "faults", "requests", "errors", "lost")


def record(
    name: str, *, runs: int, faults: int, requests: int, errors: int, lost: int, **extra: Any
) -> dict[str, Any]:
    """Print one test's figures and merge them into the JSON report.

    ``errors`` counts answers that are failures by the test's own definition (5xx, a lock
    error, an accepted forgery...), not the 4xx a hostile request is supposed to get."""
    entry = {
        "runs": runs,
        "faults": faults,
        "requests": requests,
        "errors": errors,
        "lost": lost,
        **extra,
        "recorded_at": int(time.time()),
    }
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


class LoggedServe(ServeProcess):
    """``edgecatalog serve`` with its stderr in a file the test names (see ServeProcess)."""

    def __init__(
        self, config: Path, port: int, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(config, port, env=env, log_path=log_path)
