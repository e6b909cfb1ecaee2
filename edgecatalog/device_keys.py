"""Device keys: each bound to one device id, known only by its SHA-256 digest, and the rate
each device may call at. No Flask.

A key comes from ``edgecatalog device-key add DEVICE_ID`` (the database's ``device_key`` table,
migration 0008) or from ``[auth] device_keys`` / ``device_keys_file`` (``DEVICE_ID=adk_...``,
``DEVICE_ID=sha256:<hex>``; a bare entry is this device's own id). ``auth.Authenticator``
verifies them; this module owns what a key is, the commands' side of the table, and
``DeviceRateLimiter``.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, Settings, read_secret_file
from .errors import RateLimited, ValidationError
from .models import DeviceKey
from .timeutil import now_us

DEVICE_KEY_PREFIX = "adk_"
FINGERPRINT_CHARS = 12
_HEX = re.compile(r"^[0-9a-f]+$")


def digest_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_device_key() -> str:
    """A fresh device key: 256 random bits, URL-safe, with the ``adk_`` prefix upstream uses."""
    return DEVICE_KEY_PREFIX + secrets.token_urlsafe(32)


def check_device_id(value: str, param: str = "device_id") -> str:
    """``value`` as a device id, by exactly the rules an upload's ``metadata.device_id`` is
    held to (the metadata parser itself decides, so the two cannot drift apart), and not
    empty (an empty ``device_id`` in metadata means "none"). ValidationError naming ``param``."""
    from .ingest.metadata import parse_metadata  # the ingest side; loaded only when needed

    if not isinstance(value, str) or not value.strip():
        raise ValidationError(param, f"{param} must be a non-empty device id")
    try:
        parsed = parse_metadata({"device_id": value}, param="metadata").device_id
    except ValidationError as exc:
        raise ValidationError(param, f"{param}: {exc.message}") from None
    if not parsed:
        raise ValidationError(param, f"{param} must be a non-empty device id")
    return parsed


def configured_device_keys(settings: Settings) -> dict[str, str]:
    """digest -> device id of ``[auth] device_keys`` and ``device_keys_file``.

    An entry is ``DEVICE_ID=adk_...``, ``DEVICE_ID=sha256:<hex>``, or (as before device ids
    were bound) a bare key or digest, bound to this device's own id (``[device] id``, else
    the host name). Errors name the entry by position, never by its key.
    """
    entries = [("auth.device_keys", i + 1, e) for i, e in enumerate(settings["auth.device_keys"])]
    if settings["auth.device_keys_file"]:
        path = Path(settings["auth.device_keys_file"])
        text = read_secret_file(path, "auth.device_keys_file")
        entries += [
            (f"auth.device_keys_file ({path}) line", n + 1, line.strip())
            for n, line in enumerate(text.splitlines())
            if line.strip() and not line.strip().startswith("#")
        ]
    own_id = ""
    bound: dict[str, str] = {}
    for where, number, entry in entries:
        name = f"{where} {number}" if "line" in where else f"{where} entry {number}"
        device_id, credential = "", entry
        if not entry.startswith((DEVICE_KEY_PREFIX, "sha256:")) and "=" in entry:
            device_id, _, credential = entry.partition("=")
            device_id, credential = device_id.strip(), credential.strip()
            try:
                device_id = check_device_id(device_id, "device id")
            except ValidationError as exc:
                raise ConfigError(
                    f"{name}: {exc.message} (an entry is DEVICE_ID=adk_... or "
                    "DEVICE_ID=sha256:<hex>)"
                ) from None
        if not device_id:
            if not own_id:
                from .ingest.upload import default_device_id  # one definition of the default

                own_id = default_device_id(settings)
            device_id = own_id
        if credential.startswith("sha256:"):
            digest = credential[len("sha256:") :].lower()
            if len(digest) != 64 or not _HEX.match(digest):
                raise ConfigError(f"{name}: a sha256: entry needs 64 hex digits")
        elif credential:
            digest = digest_key(credential)
        else:
            raise ConfigError(f"{name}: no key after '='")
        if bound.get(digest, device_id) != device_id:
            raise ConfigError(
                f"{name}: the same key is bound to two devices "
                f"({bound[digest]!r} and {device_id!r})"
            )
        bound[digest] = device_id
    return bound


class DeviceRateLimiter:
    """A token bucket per device id: ``per_minute / 60`` requests a second, with a burst of
    ``BURST_SECONDS`` worth. A full minute of burst would let a device make twice its rate in
    one minute; ten seconds' worth bounds any minute to 7/6 of it and still lets a camera
    send a burst of frames. Only authenticated device ids get a bucket, so the table is as
    large as the number of devices. 0 = unlimited."""

    BURST_SECONDS = 10.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * self.BURST_SECONDS)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # device id -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, device_id: str, spend: bool = True) -> None:
        """Spend one request of ``device_id``'s budget (with ``spend`` False: only ask whether
        one is left), or raise RateLimited (429) with the seconds until one is."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            tokens, when = self._buckets.get(device_id, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - when) * self.rate)
            if tokens >= 1.0:
                self._buckets[device_id] = (tokens - 1.0 if spend else tokens, now)
                return
            self._buckets[device_id] = (tokens, now)
            wait = max(1, math.ceil((1.0 - tokens) / self.rate))
        raise RateLimited(
            f"device {device_id!r} is over {self.per_minute} requests per minute "
            f"([auth] device_requests_per_minute); retry in {wait} s",
            "X-Device-Key",
            headers={"Retry-After": str(wait)},
        )


def fingerprint(digest: str) -> str:
    return digest[:FINGERPRINT_CHARS]


def add_device_key(device_id: str, label: str = "") -> tuple[str, DeviceKey]:
    """A new key for ``device_id`` (validated as an upload's device_id): the key, to be shown
    once, and its stored row (digest only)."""
    from .db import write_tx

    device_id = check_device_id(device_id, "DEVICE_ID")
    key = new_device_key()
    with write_tx():
        row = DeviceKey.create(
            device_id=device_id,
            digest=digest_key(key),
            label=label,
            created_at=now_us(),
            revoked_at=None,
        )
    return key, row


def stored_device_keys() -> list[DeviceKey]:
    return list(DeviceKey.select().order_by(DeviceKey.device_id, DeviceKey.created_at))


@dataclass
class RevokeResult:
    revoked: list[DeviceKey]
    already: list[DeviceKey]


def revoke_device_keys(selector: str, configured: Mapping[str, str]) -> RevokeResult:
    """Revoke the stored key whose fingerprint (or longer digest prefix) is ``selector``, or
    every stored key of the device ``selector``. ValueError says why nothing matched."""
    from .db import write_tx

    wanted = selector.strip().lower()
    is_print = len(wanted) >= FINGERPRINT_CHARS and _HEX.match(wanted) is not None
    by_print: list[DeviceKey] = []
    if is_print:
        by_print = list(DeviceKey.select().where(DeviceKey.digest.startswith(wanted)))
    by_device = list(DeviceKey.select().where(DeviceKey.device_id == selector))
    if by_print and by_device and {r.id for r in by_print} != {r.id for r in by_device}:
        raise ValueError(
            f"{selector!r} is both a key's fingerprint and a device id: give more "
            "hex digits of the key's digest to revoke that key alone"
        )
    rows = by_print or by_device
    if not rows:
        from_settings = [
            d
            for d, dev in configured.items()
            if dev == selector or (is_print and d.startswith(wanted))
        ]
        if from_settings:
            raise ValueError(
                f"{selector!r} names a key from [auth] device_keys or "
                "device_keys_file: remove it there and restart the service"
            )
        raise ValueError(
            f"no stored device key has the device id or fingerprint {selector!r} "
            "(see 'edgecatalog device-key list')"
        )
    if len({r.device_id for r in rows}) > 1:
        raise ValueError(
            f"{selector!r} matches keys of several devices; give more of the fingerprint"
        )
    active = [r for r in rows if r.revoked_at is None]
    already = [r for r in rows if r.revoked_at is not None]
    if active:
        now = now_us()
        with write_tx():
            DeviceKey.update(revoked_at=now).where(
                DeviceKey.id.in_([r.id for r in active]) & DeviceKey.revoked_at.is_null()
            ).execute()
        for row in active:
            row.revoked_at = now
    return RevokeResult(active, already)
