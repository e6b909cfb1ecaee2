"""Token revocation, and the live copy of the database's credentials a running service checks
every request against. No Flask.

``edgecatalog token revoke`` and ``device-key revoke`` write rows (migration 0008); a trigger
bumps one counter (``auth_epoch``) on every change; ``LiveAuthState`` polls that counter at most
once every ``AUTH_POLL_SECONDS`` per process and reloads both small tables only when it moved.
So a revocation is seen within about a second, without a restart, at the cost of one one-row
query a second rather than one per request. Signed file URLs are not tokens and stay valid.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from peewee import DatabaseError, InterfaceError

from .models import TokenRevocation, database
from .timeutil import now_us

if TYPE_CHECKING:
    from .principal import Principal

log = logging.getLogger("edgecatalog.auth")

# How often a process looks for new revocations and device keys: a revocation is seen within
# about this long, at the cost of one one-row query per interval (not per request).
AUTH_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class AuthSnapshot:
    """What the database says about credentials at one moment (see ``LiveAuthState``)."""

    # digest -> (device id, revoked)
    device_keys: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    revoked_jtis: frozenset[str] = frozenset()
    subject_cutoffs: Mapping[str, float] = field(default_factory=dict)  # sub -> unix seconds
    all_cutoff: float | None = None
    empty: bool = True

    def token_revoked(self, principal: Principal) -> str | None:
        """Why the token is revoked, or None. A token without ``iat`` counts as issued
        before any cutoff: nothing says otherwise."""
        if self.empty:
            return None
        if principal.credential_id and principal.credential_id in self.revoked_jtis:
            return "this token was revoked"
        issued = -math.inf if principal.issued_at is None else principal.issued_at
        cutoff = self.subject_cutoffs.get(principal.subject)
        if cutoff is not None and issued < cutoff:
            return f"tokens of '{principal.subject}' issued before its revocation are revoked"
        if self.all_cutoff is not None and issued < self.all_cutoff:
            return "every token issued before the revocation is revoked"
        return None


def load_snapshot() -> AuthSnapshot:
    """Read both tables (small: one row per key and per revocation)."""
    keys = {
        digest: (device_id, revoked_at is not None)
        for digest, device_id, revoked_at in database.execute_sql(
            "SELECT digest, device_id, revoked_at FROM device_key"
        )
    }
    jtis: set[str] = set()
    subjects: dict[str, float] = {}
    everyone: float | None = None
    for kind, value, created_at in database.execute_sql(
        "SELECT kind, value, created_at FROM token_revocation"
    ):
        cutoff = created_at / 1_000_000
        if kind == "jti":
            jtis.add(value)
        elif kind == "subject":
            subjects[value] = max(cutoff, subjects.get(value, cutoff))
        elif kind == "all":
            everyone = max(cutoff, everyone if everyone is not None else cutoff)
    return AuthSnapshot(
        keys,
        frozenset(jtis),
        subjects,
        everyone,
        empty=not (jtis or subjects or everyone is not None),
    )


class LiveAuthState:
    """The database's device keys and revocations, as of at most ``AUTH_POLL_SECONDS`` ago.

    ``current()`` costs a clock read per call; once per interval one caller (the others go on
    with the copy they have) reads ``auth_epoch``, one row bumped by triggers whenever either
    table changes, and reloads both tables only when it moved. It reads only the catalog of
    its own settings (``db_path``): an Authenticator used without that database open (the
    ``token`` command, a unit test) has no database state. A failed read keeps the last copy.
    """

    def __init__(self, db_location: str | Path, interval: float = AUTH_POLL_SECONDS) -> None:
        self._db_path = str(db_location)
        self._interval = interval
        self._next_poll = 0.0
        self._epoch: int | None = None
        self._snapshot = AuthSnapshot()
        self._lock = threading.Lock()

    def current(self) -> AuthSnapshot:
        # The first load waits for whoever is loading; later ones never make a request wait.
        if time.monotonic() >= self._next_poll and self._lock.acquire(blocking=self._epoch is None):
            try:
                if time.monotonic() >= self._next_poll:
                    self._poll()
                    self._next_poll = time.monotonic() + self._interval
            finally:
                self._lock.release()
        return self._snapshot

    def _poll(self) -> None:
        if database.location != self._db_path:
            return
        try:
            row = database.execute_sql("SELECT n FROM auth_epoch WHERE id = 1").fetchone()
            epoch = int(row[0]) if row else 0
            if epoch == self._epoch:
                return
            snapshot = load_snapshot()
        except (DatabaseError, InterfaceError) as exc:  # not migrated yet, or unreadable
            log.debug("device keys and revocations not read: %s", exc)
            return
        self._epoch, self._snapshot = epoch, snapshot


REVOCATION_KINDS = ("jti", "subject", "all")


def revoke_tokens(kind: str, value: str = "") -> TokenRevocation:
    """Record a revocation; running services see it within ``AUTH_POLL_SECONDS``."""
    from .db import write_tx

    if kind not in REVOCATION_KINDS:
        raise ValueError(f"kind must be one of {', '.join(REVOCATION_KINDS)}")
    if kind != "all" and not value.strip():
        raise ValueError(f"a {kind} revocation needs a non-empty value")
    with write_tx():
        return TokenRevocation.create(
            kind=kind, value=value if kind != "all" else "", created_at=now_us()
        )


def token_revocations() -> list[TokenRevocation]:
    return list(TokenRevocation.select().order_by(TokenRevocation.id))
