"""The HTTP client for the cloud's device and data API, and what each answer means.

Every call returns an ``Outcome`` instead of raising: ``ok`` (ids kept as opaque strings),
``duplicate`` (the image is already upstream), ``auth`` (401/403), ``reject`` (400/413/422:
the item itself is bad), ``transient`` (429, 5xx, timeouts, a connection dropped mid-request)
or ``offline`` (no connection could be made). Upload bodies are streamed from the file in
chunks that first pass the bandwidth limiter, so a cap holds inside a large file too.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .. import safeopen
from ..config import ConfigError, Settings, read_secret_file
from .throttle import BandwidthLimiter, parse_retry_after

REJECT_STATUSES = (400, 413, 422)
AUTH_STATUSES = (401, 403)
# 403s that refuse one item, not the credentials (a site gateway's: an image of another device
# id, a change to another device's image): that item is quarantined, the others go on.
ITEM_REFUSALS = ("DEVICE_MISMATCH", "MANUAL_SOURCE_FORBIDDEN", "NOT_OWN_IMAGE")


@dataclass(frozen=True)
class Credentials:
    device_key: str
    api_token: str

    def fingerprint(self, base_url: str) -> str:
        """Identifies the configuration an auth failure was seen with; never the secrets."""
        text = f"{base_url}\n{self.device_key}\n{self.api_token}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def _secret(settings: Settings, key: str) -> str:
    value, path = settings[f"upstream.{key}"], settings[f"upstream.{key}_file"]
    if value and path:
        raise ConfigError(f"upstream.{key}: set {key} or {key}_file, not both")
    return read_secret_file(path, f"upstream.{key}_file") if path else value


def load_credentials(settings: Settings) -> Credentials:
    return Credentials(_secret(settings, "device_key"), _secret(settings, "api_token"))


@dataclass(frozen=True)
class Outcome:
    kind: str  # ok | duplicate | auth | reject | transient | offline | unsupported | local
    status: int | None = None
    message: str = ""
    data: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    sent_bytes: int = 0


def _opaque(value: Any) -> str:
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


def classify(status: int, body: Any, headers: Any, *, upload: bool = False) -> Outcome:
    """What an HTTP answer means for the item that was sent."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code", ""))
    message = str(error.get("message", "")) or f"HTTP {status}"
    if code:
        message = f"{code}: {message}"
    data = body.get("data") if isinstance(body, dict) else None
    data = data if isinstance(data, dict) else {}
    ids = {
        k: _opaque(data.get(k))
        for k in ("image_id", "batch_id", "storage_key", "id")
        if data.get(k) is not None
    }
    if 200 <= status < 300:
        if upload and not ids.get("image_id"):
            return Outcome("transient", status, "2xx answer without data.image_id")
        return Outcome("ok", status, "", ids)
    if status == 409 or "DUPLICATE" in code.upper():
        return Outcome("duplicate", status, message, ids)
    if status in AUTH_STATUSES and code not in ITEM_REFUSALS:
        return Outcome("auth", status, message)
    if status in REJECT_STATUSES or code in ITEM_REFUSALS or (status == 404 and not upload):
        return Outcome("reject", status, message)
    retry_after = parse_retry_after(headers.get("Retry-After")) if status in (429, 503) else None
    return Outcome("transient", status, message, retry_after=retry_after)


def _never_connected(exc: BaseException) -> bool:
    """True when no connection was made at all (refused, unreachable, DNS): the link is down."""
    import requests  # loaded already: only a client's own request raises what comes here
    import urllib3.exceptions

    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(
            item,
            (
                urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.NameResolutionError,
                ConnectionRefusedError,
                requests.exceptions.ConnectTimeout,
            ),
        ):
            return True
        if isinstance(item, BaseException):
            stack.extend(
                [
                    item.__cause__,
                    item.__context__,
                    getattr(item, "reason", None),
                    *[a for a in item.args if isinstance(a, BaseException)],
                ]
            )
    return False


class MultipartBody:
    """A multipart/form-data body read in chunks from memory parts and one file."""

    def __init__(
        self, head: bytes, file: tuple[str, str], size: int, tail: bytes, limiter: BandwidthLimiter
    ) -> None:
        """``file``: (root, path beneath it), opened without following links."""
        self._parts: list[bytes | tuple[tuple[str, str], int]] = [head, (file, size), tail]
        self._length = len(head) + size + len(tail)
        self._limiter = limiter
        self._index, self._handle, self._pending = 0, None, b""

    def __len__(self) -> int:
        return self._length

    def _next_chunk(self, size: int) -> bytes:
        while self._index < len(self._parts):
            part = self._parts[self._index]
            if isinstance(part, bytes):
                self._index += 1
                if part:
                    return part
                continue
            if self._handle is None:
                # Held across read() calls by design; close() (in a finally) releases it.
                self._handle = safeopen.open_file(*part[0])
            chunk = self._handle.read(size)
            if chunk:
                return chunk
            self._handle.close()
            self._handle, self._index = None, self._index + 1
        return b""

    def read(self, n: int = -1) -> bytes:
        size = self._limiter.chunk_size if n is None or n < 0 else min(n, self._limiter.chunk_size)
        chunk = self._pending or self._next_chunk(size)
        chunk, self._pending = chunk[:size], chunk[size:]
        self._limiter.acquire(len(chunk))
        return chunk

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass(frozen=True)
class UploadRequest:
    root: str  # the file: ``path`` beneath ``root``
    path: str
    size: int
    filename: str
    content_type: str
    metadata: dict[str, Any]
    idempotency_key: str


class UpstreamClient:
    def __init__(
        self, settings: Settings, credentials: Credentials, limiter: BandwidthLimiter | None = None
    ) -> None:
        self.base = settings["upstream.base_url"].rstrip("/")
        self.timeout = settings["upstream.timeout_seconds"]
        self.credentials = credentials
        self.limiter = limiter or BandwidthLimiter(settings["upstream.max_bytes_per_second"])
        # requests (5 MB with urllib3) is imported by the client alone: a catalog with no
        # upstream imports this module (for its credentials and outcomes) but never sends.
        import requests

        self._requests = requests
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or netrc picked up from the environment

    def close(self) -> None:
        self.session.close()

    def _send(self, method: str, path: str, *, upload: bool = False, **kw: Any) -> Outcome:
        try:
            resp = self.session.request(
                method, self.base + path, timeout=self.timeout, allow_redirects=False, **kw
            )
        except self._requests.RequestException as exc:
            kind = "offline" if _never_connected(exc) else "transient"
            timed_out = isinstance(exc, self._requests.Timeout)
            reason = "timed out" if timed_out else "connection failed"
            return Outcome(kind, None, f"{reason}: {exc.__class__.__name__}")
        try:
            body = resp.json()
        except ValueError:
            body = None
        return classify(resp.status_code, body, resp.headers, upload=upload)

    def upload(self, req: UploadRequest) -> Outcome:
        boundary = uuid.uuid4().hex
        meta = json.dumps(req.metadata, separators=(",", ":"))
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n'
            f"Content-Type: application/json\r\n\r\n{meta}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{_quote(req.filename)}"\r\nContent-Type: {req.content_type}'
            "\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = MultipartBody(head, (req.root, req.path), req.size, tail, self.limiter)
        headers = {
            "X-Device-Key": self.credentials.device_key,
            "Idempotency-Key": req.idempotency_key,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        try:
            outcome = self._send(
                "POST", "/device/images/upload", upload=True, data=body, headers=headers
            )
        finally:
            body.close()
        return Outcome(
            outcome.kind,
            outcome.status,
            outcome.message,
            outcome.data,
            outcome.retry_after,
            len(body),
        )

    def _bearer(self, key: str, device: bool = False) -> dict[str, str]:
        """The data routes' credentials: the cloud's take a bearer token; a site gateway's
        (``device``) take the device's own key."""
        if device:
            return {"X-Device-Key": self.credentials.device_key, "Idempotency-Key": key}
        return {"Authorization": f"Bearer {self.credentials.api_token}", "Idempotency-Key": key}

    def _json(
        self, method: str, path: str, body: dict[str, Any], key: str, device: bool
    ) -> Outcome:
        raw = json.dumps(body).encode()
        self.limiter.acquire(len(raw))
        return self._send(
            method,
            path,
            data=raw,
            headers={**self._bearer(key, device), "Content-Type": "application/json"},
        )

    def patch_image(
        self, remote_id: str, fields: dict[str, Any], key: str, *, device: bool = False
    ) -> Outcome:
        path = f"/data/images/{quote(remote_id, safe='')}"
        return self._json("PATCH", path, fields, key, device)

    def create_annotation(self, body: dict[str, Any], key: str) -> Outcome:
        return self._json("POST", "/data/annotations", body, key, False)

    def put_annotations(self, remote_id: str, body: dict[str, Any], key: str) -> Outcome:
        """A site gateway only: the image's whole annotation set (``views/site.py``)."""
        path = f"/device/images/{quote(remote_id, safe='')}/annotations"
        return self._json("PUT", path, body, key, True)

    def gateway_mirrors(self) -> tuple[str, ...] | None:
        """What upstream lets this device mirror beyond the cloud's routes, from ``GET
        /device/self``: () from the cloud, which sends no ``gateway``; None when the answer
        could not be had (offline, refused), so the caller keeps what it knew."""
        try:
            resp = self.session.get(
                self.base + "/device/self",
                headers={"X-Device-Key": self.credentials.device_key},
                timeout=self.timeout,
                allow_redirects=False,
            )
            body = resp.json() if resp.status_code == 200 else None
        except (self._requests.RequestException, ValueError):
            return None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return None
        gateway = data.get("gateway")
        mirrors = gateway.get("mirrors") if isinstance(gateway, dict) else None
        if not isinstance(mirrors, list):
            return ()
        return tuple(str(kind) for kind in mirrors[:32])


def _quote(name: str) -> str:
    # RFC 7578 leaves escaping to the sender; quotes and line breaks must not end the header.
    return name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
