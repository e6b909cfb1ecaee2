"""The shared sync state (the one ``SyncStatus`` row) and the status report built from it and
the queue: what GET /sync/status answers and ``edgecatalog status`` prints.

States: ``idle`` (nothing due, or waiting for the next pass), ``syncing`` (a pass is sending),
``offline`` (no connection could be made; retried with backoff), ``backoff`` (429, 5xx or
timeouts; retried with backoff), ``auth_failed`` (401/403; nothing is sent until the
credentials change or ``sync --once`` is run by hand), ``disabled`` (no upstream configured,
or no worker runs in ``serve`` and no ``sync`` process is active).
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..db import write_tx
from ..models import SyncStatus
from ..timeutil import format_ts, now_us
from .outbox import QueueCounts, queue_counts
from .rules import in_window, next_open, parse_windows
from .usage import recent

ROW_ID = 1
LIVE_STATES = ("syncing",)


def load_status() -> SyncStatus:
    row = SyncStatus.get_or_none(SyncStatus.id == ROW_ID)
    return row if row is not None else SyncStatus(id=ROW_ID)


def save_status(**changes: Any) -> None:
    """Update the shared row (created on first use) in one short transaction."""
    changes["updated_at"] = now_us()
    with write_tx():
        if SyncStatus.update(**changes).where(SyncStatus.id == ROW_ID).execute() == 0:
            SyncStatus.insert(id=ROW_ID, **changes).on_conflict_ignore().execute()
            SyncStatus.update(**changes).where(SyncStatus.id == ROW_ID).execute()


def backoff_left_us(row: SyncStatus, now: int) -> int:
    """Microseconds until the backoff recorded in ``row`` ends; 0 when a pass is due.

    The deadline is wall time because ``edgecatalog sync`` processes share it. A row written
    later than ``now`` means the clock was set back since (NTP correcting a device that booted
    without a real-time clock): its deadline was measured on the old clock, and honouring it
    would stall the sync for as long as the jump, so it is void. Otherwise the wait left can
    never exceed the delay the row asked for."""
    if row.state not in ("offline", "backoff") or not row.next_attempt_at:
        return 0
    if row.updated_at is not None and row.updated_at > now:
        return 0
    return max(row.next_attempt_at - now, 0)


def effective_state(settings: Settings, row: SyncStatus, fingerprint: str | None) -> str:
    if not settings["upstream.base_url"]:
        return "disabled"
    if row.state == "auth_failed":
        # A changed configuration is retried, so it no longer counts as failed.
        return "auth_failed" if fingerprint in (None, row.auth_fingerprint) else "idle"
    if not settings["upstream.enabled"] and row.state not in LIVE_STATES:
        return "disabled"
    return row.state


def _age_seconds(since: int | None, now: int) -> float | None:
    return None if since is None else round(max(now - since, 0) / 1e6, 3)


def status_report(settings: Settings, fingerprint: str | None = None) -> dict[str, Any]:
    """The sync status as the API and the CLI show it (timestamps RFC 3339, '' when unset)."""
    row, counts, now = load_status(), queue_counts(), now_us()
    last_error = None
    if row.last_error_at is not None:
        last_error = {
            "at": format_ts(row.last_error_at),
            "status": row.last_error_status,
            "message": row.last_error_message,
        }
    return {
        "state": effective_state(settings, row, fingerprint),
        "enabled": bool(settings["upstream.enabled"]),
        "upstream_configured": bool(settings["upstream.base_url"]),
        "pending_count": counts.pending,
        "pending_bytes": counts.pending_bytes,
        "oldest_pending_age_seconds": _age_seconds(counts.oldest_pending_at, now),
        "waiting_for_token_count": counts.waiting_token,
        "quarantined_count": counts.quarantined,
        "unsupported_count": counts.unsupported,
        "last_success_at": format_ts(row.last_success_at),
        "last_error": last_error,
        "next_attempt_at": format_ts(row.next_attempt_at),
        **_selection_report(settings, counts, now),
    }


def _selection_report(settings: Settings, counts: QueueCounts, now: int) -> dict[str, Any]:
    """What the selection rules, quotas and windows make of the queue: depth per priority,
    skipped and deferred, throughput over the last minutes and the time the queue would take
    to drain at that rate (None while nothing was sent lately), and the sync windows."""
    spent, seconds = recent(now)
    per_second = spent.bytes / seconds
    eta = None
    if spent.images and counts.pending:
        eta = round(
            counts.pending_bytes / per_second if per_second else counts.pending / spent.images,
            1,
        )
    windows = parse_windows(settings["upstream.windows"])
    ts = now / 1e6
    opens = None if not windows or in_window(windows, ts) else next_open(windows, ts)
    return {
        "pending_by_priority": [
            {"priority": priority, "count": count, "bytes": size}
            for priority, (count, size) in counts.by_priority.items()
        ],
        "skipped_count": counts.skipped,
        "deferred_count": counts.deferred,
        "deferred_bytes": counts.deferred_bytes,
        "throughput_images_per_minute": round(spent.images * 60 / seconds, 2),
        "throughput_bytes_per_second": round(per_second, 1),
        "drain_eta_seconds": eta,
        "in_window": in_window(windows, ts),
        "next_window_at": format_ts(int(opens * 1e6)) if opens is not None else "",
    }


def _priority_name(priority: int) -> str:
    return "undecided" if priority < 0 else f"priority {priority}"


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned ``key: value`` lines for a terminal."""
    lines = []
    for key, value in report.items():
        if key == "pending_by_priority":
            value = (
                ", ".join(
                    f"{_priority_name(p['priority'])}: {p['count']} ({p['bytes']} B)" for p in value
                )
                or "-"
            )
        elif key == "last_error":
            value = (
                "-"
                if value is None
                else (
                    f"{value['at']} HTTP {value['status'] if value['status'] is not None else '-'}"
                    f" {value['message']}"
                )
            )
        elif value in ("", None):
            value = "-"
        lines.append(f"{key.replace('_', ' '):<27} {value}")
    return "\n".join(lines)
