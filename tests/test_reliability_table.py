"""benchmarks/reliability_table.py: the docs/reliability.md table from a reliability.json, and a one-line
error (exit 1) when there is none to read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "reliability_table.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_table_rows_come_from_the_json(tmp_path):
    report = {
        "b_test": {
            "runs": 3,
            "faults": 7,
            "requests": 11,
            "errors": 0,
            "lost": 0,
            "p99_read_ms": 12.5,
        },
        "a_test": {"runs": 1, "faults": 2, "requests": 5, "errors": 1, "lost": 4},
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    done = run(str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("| Test | Runs | Faults injected")
    assert lines[2] == "| a_test | 1 | 2 | 5 | 1 | 4 |  |"
    assert lines[3] == "| b_test | 3 | 7 | 11 | 0 | 0 | p99 read 12.5 ms |"


def test_missing_or_broken_report_is_one_line_and_exit_1(tmp_path):
    done = run(str(tmp_path / "none.json"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    (tmp_path / "bad.json").write_text("{oops")
    done = run(str(tmp_path / "bad.json"))
    assert done.returncode == 1 and "not valid JSON" in done.stderr
