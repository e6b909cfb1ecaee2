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
from .outbox import queue_counts

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
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned ``key: value`` lines for a terminal."""
    lines = []
    for key, value in report.items():
        if key == "last_error":
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
