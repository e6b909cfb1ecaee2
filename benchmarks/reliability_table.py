"""Print the reliability table of docs/reliability.md (Markdown) from test-artifacts/reliability.json.

The JSON is written by the fault, hostile-input and soak tests (tests/reliability.py); run

    .venv/bin/python -m pytest -q -m "slow or not slow" tests/test_fault_*.py \
        tests/test_hostile_*.py tests/test_soak.py
    .venv/bin/python benchmarks/reliability_table.py

Columns: runs (kills, phases, fuzz examples...), faults injected (kills, upstream faults,
hostile requests...), requests sent, errors (by the test's own definition: 5xx, "database is
locked", a forgery accepted, a request inside the backoff floor...), data lost (acknowledged
writes or captured files missing afterwards). Rows the last run did not produce are absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent.parent / "test-artifacts" / "reliability.json"
COLUMNS = ("runs", "faults", "requests", "errors", "lost")
HEADERS = ("Test", "Runs", "Faults injected", "Requests sent", "Errors", "Data lost", "Notes")
# Extra figures worth a note, when a row has them.
NOTES = {
    "p99_read_ms": "p99 read {} ms",
    "rss_growth_mib": "RSS +{} MiB",
    "sigkills": "{} SIGKILLs",
    "images": "{} images",
    "recovered_after_s": "recovered in {} s",
    "uploads_before_507": "507 after {} uploads",
    "first_failure_status": "full disk -> {}",
    "reads": "{} reads",
}


def table(report: dict[str, dict]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for name in sorted(report):
        row = report[name]
        notes = ", ".join(fmt.format(row[k]) for k, fmt in NOTES.items() if k in row)
        cells = [name] + [str(row.get(c, "")) for c in COLUMNS] + [notes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, default=DEFAULT)
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except FileNotFoundError:
        print(f"error: {args.report} not found; run the reliability tests first", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {args.report} is not valid JSON: {exc}", file=sys.stderr)
        return 1
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
