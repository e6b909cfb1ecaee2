"""Who may call the service: bearer JWTs, device keys and signed file URLs. No Flask.

* Algorithms come from the configuration, never from the token header; ``exp`` and ``sub``
  are required; ``aud``/``iss`` are checked when configured. Each way a token can be bad has
  its own error code, so a client (and an operator reading logs) can tell which. A token may
  live at most ``[auth] max_token_ttl`` (``exp`` minus ``iat``, or minus now without ``iat``),
  whoever issued it. The HMAC secret must have at least ``MIN_SECRET_BYTES``.
* A device key is one device: every key is bound to a device id (``edgecatalog device-key
  add`` in the database, ``DEVICE_ID=adk_...`` or ``DEVICE_ID=sha256:<hex>`` in ``[auth]
  device_keys``; a bare entry is this device's own id). Keys are known only as SHA-256
  digests; plain keys never stay in memory longer than start-up.
* Revocation without a restart and without touching signed URLs: ``edgecatalog token revoke``
  and ``device-key revoke`` write rows (migration 0008); ``LiveAuthState`` polls one counter at
  most once a second per process and reloads its copy when it moved. Every request, cached
  token or not, is checked against that copy.
* File URLs carry ``expires`` and an HMAC over ``image id + expiry`` with a key derived from the
  local secret, so an ``<img src>`` works without a bearer header and cannot be moved to
  another image or extended. Revoking tokens leaves them alone: they are not tokens.
* ``DeviceRateLimiter``: a token bucket per device id (``[auth] device_requests_per_minute``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from jwt import exceptions as jwt_exc
from jwt.algorithms import get_default_algorithms
from peewee import DatabaseError, InterfaceError

from .config import ConfigError, Settings, read_secret_file
from .errors import AuthError, CatalogError, Forbidden, TokenExpired, ValidationError
from .models import DeviceKey, TokenRevocation, database
from .timeutil import now_us

log = logging.getLogger("edgecatalog.auth")

SCOPES = ("read", "write")
MAX_TOKEN_CHARS = 8192
SECRET_FILE = "jwt.secret"
# HS256 is only as strong as its key: RFC 7518 asks for a key at least as long as the hash
# output (32 bytes for SHA-256). The generated secret has 64 hex characters.
MIN_SECRET_BYTES = 32
DEVICE_KEY_PREFIX = "adk_"
FINGERPRINT_CHARS = 12
# How often a process looks for new revocations and device keys: a revocation is seen within
# about this long, at the cost of one one-row query per interval (not per request).
AUTH_POLL_SECONDS = 1.0
_HEX = re.compile(r"^[0-9a-f]+$")
_ASCII_DIGITS = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    kind: str = "user"  # user | device | signed-url
    # Set for a device key: the one device it may write as.
    device_id: str = ""
    # A token's jti, or a device key's fingerprint: what an operator names to revoke it.
    credential_id: str = ""
    issued_at: float | None = None  # a token's iat; None when it carried none

    def can(self, scope: str) -> bool:
        return scope in self.scopes


class RateLimited(CatalogError):
    """A device made more requests than ``[auth] device_requests_per_minute`` allows."""

    status = 429
    code = "RATE_LIMITED"


def ensure_local_secret(data_dir: Path) -> str:
    """The generated secret at <data_dir>/jwt.secret, created once with mode 0600."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once must not overwrite each other's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return checked_secret(read_secret_file(path, "auth.jwt_secret"),
                              f"auth.jwt_secret (generated file {path})")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return read_secret_file(path, "auth.jwt_secret")


def checked_secret(secret: str, name: str) -> str:
    """The secret, or ConfigError naming the setting when it is too short to be a key."""
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{name}: the HMAC secret must be at least {MIN_SECRET_BYTES} bytes, got {size} "
            "(make one with: python3 -c 'import secrets; print(secrets.token_hex(32))')")
    return secret


def local_secret(settings: Settings, *, generate: bool = True) -> str | None:
    """The HMAC secret of tokens and URL signatures: ``jwt_secret``, the file of
    ``jwt_secret_file``, or the generated one (None when ``generate`` is False and it is
    not there yet). Too short a secret is a ConfigError whichever way it came."""
    if settings["auth.jwt_secret"]:
        return checked_secret(settings["auth.jwt_secret"],
                              "auth.jwt_secret (EDGECATALOG_AUTH_JWT_SECRET)")
    if settings["auth.jwt_secret_file"]:
        path = Path(settings["auth.jwt_secret_file"])
        return checked_secret(read_secret_file(path, "auth.jwt_secret_file"),
                              f"auth.jwt_secret_file ({path})")
    if generate:
        return ensure_local_secret(settings.data_dir)
    path = settings.data_dir / SECRET_FILE
    if path.exists():
        return checked_secret(read_secret_file(path, "auth.jwt_secret"),
                              f"auth.jwt_secret (generated file {path})")
    return None


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
        entries += [(f"auth.device_keys_file ({path}) line", n + 1, line.strip())
                    for n, line in enumerate(text.splitlines())
                    if line.strip() and not line.strip().startswith("#")]
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
                raise ConfigError(f"{name}: {exc.message} (an entry is DEVICE_ID=adk_... or "
                                  "DEVICE_ID=sha256:<hex>)") from None
        if not device_id:
            if not own_id:
                from .ingest.upload import default_device_id  # one definition of the default

                own_id = default_device_id(settings)
            device_id = own_id
        if credential.startswith("sha256:"):
            digest = credential[len("sha256:"):].lower()
            if len(digest) != 64 or not _HEX.match(digest):
                raise ConfigError(f"{name}: a sha256: entry needs 64 hex digits")
        elif credential:
            digest = digest_key(credential)
        else:
            raise ConfigError(f"{name}: no key after '='")
        if bound.get(digest, device_id) != device_id:
            raise ConfigError(f"{name}: the same key is bound to two devices "
                              f"({bound[digest]!r} and {device_id!r})")
        bound[digest] = device_id
    return bound


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
    keys = {digest: (device_id, revoked_at is not None) for digest, device_id, revoked_at in
            database.execute_sql("SELECT digest, device_id, revoked_at FROM device_key")}
    jtis: set[str] = set()
    subjects: dict[str, float] = {}
    everyone: float | None = None
    for kind, value, created_at in database.execute_sql(
            "SELECT kind, value, created_at FROM token_revocation"):
        cutoff = created_at / 1_000_000
        if kind == "jti":
            jtis.add(value)
        elif kind == "subject":
            subjects[value] = max(cutoff, subjects.get(value, cutoff))
        elif kind == "all":
            everyone = max(cutoff, everyone if everyone is not None else cutoff)
    return AuthSnapshot(keys, frozenset(jtis), subjects, everyone,
                        empty=not (jtis or subjects or everyone is not None))


class LiveAuthState:
    """The database's device keys and revocations, as of at most ``AUTH_POLL_SECONDS`` ago.

    ``current()`` costs a clock read per call; once per interval one caller (the others go on
    with the copy they have) reads ``auth_epoch``, one row bumped by triggers whenever either
    table changes, and reloads both tables only when it moved. It reads only the catalog of
    its own settings (``db_path``): an Authenticator used without that database open (the
    ``token`` command, a unit test) has no database state. A failed read keeps the last copy.
    """

    def __init__(self, db_path: Path, interval: float = AUTH_POLL_SECONDS) -> None:
        self._db_path = str(db_path)
        self._interval = interval
        self._next_poll = 0.0
        self._epoch: int | None = None
        self._snapshot = AuthSnapshot()
        self._lock = threading.Lock()

    def current(self) -> AuthSnapshot:
        # The first load waits for whoever is loading; later ones never make a request wait.
        if time.monotonic() >= self._next_poll and self._lock.acquire(
                blocking=self._epoch is None):
            try:
                if time.monotonic() >= self._next_poll:
                    self._poll()
                    self._next_poll = time.monotonic() + self._interval
            finally:
                self._lock.release()
        return self._snapshot

    def _poll(self) -> None:
        if database.deferred or database.database != self._db_path:
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
            f"([auth] device_requests_per_minute); retry in {wait} s", "X-Device-Key",
            headers={"Retry-After": str(wait)})


class Authenticator:
    """Verifies credentials with the key material of one configuration."""

    def __init__(self, settings: Settings) -> None:
        self.algorithms = list(settings["auth.jwt_algorithms"])
        self.audience = settings["auth.audience"] or None
        self.issuer = settings["auth.issuer"] or None
        self.url_ttl = int(settings["auth.url_signing_ttl"])
        self.max_ttl = int(settings["auth.max_token_ttl"])
        hmac_tokens = self.algorithms[0].startswith("HS")
        # Everything that can fail on a bad file is read before the secret file is generated.
        public_key = None if hmac_tokens else load_verify_key(settings)
        self.device_keys = configured_device_keys(settings)
        secret = local_secret(settings)
        assert secret is not None  # generate=True always gives one
        self._signing_secret = secret if hmac_tokens else None
        self._verify_key: object = secret if hmac_tokens else public_key
        # A separate key for URL signatures, so a leaked image URL says nothing about tokens.
        self._url_key = hmac.new(secret.encode(), b"edgecatalog url signing", "sha256").digest()
        self._verified = VerifiedTokens()
        self.live = LiveAuthState(settings.db_path)
        self.device_limiter = DeviceRateLimiter(int(settings["auth.device_requests_per_minute"]))

    # -- bearer tokens -------------------------------------------------------------------
    def verify_token(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("token is too large", "Authorization", code="TOKEN_MALFORMED")
        cached = self._verified.get(token)
        if cached is not None and time.time() < cached[1]:
            principal = cached[0]
        else:
            principal, exp = self._decode(token)
            self._verified.put(token, principal, min(exp, time.time() + VERIFIED_TTL_SECONDS))
        # Checked on every request, cache hit or not: a revocation must not wait for the cache.
        reason = self.live.current().token_revoked(principal)
        if reason is not None:
            raise AuthError(reason, "Authorization", code="TOKEN_REVOKED")
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt_exc.PyJWTError as exc:
            raise _token_error(exc) from None
        except (ValueError, TypeError):  # defensive: odd payloads must never become a 500
            raise AuthError("token is malformed", "Authorization", code="TOKEN_MALFORMED") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError("token 'sub' must be a non-empty string", "Authorization",
                            code="TOKEN_CLAIMS_INVALID")
        exp = float(claims["exp"])
        iat = claims.get("iat")  # PyJWT has checked it is a number when present
        issued = float(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) \
            else None
        lifetime = exp - (time.time() if issued is None else issued)
        if lifetime > self.max_ttl:
            since = "now" if issued is None else "iat"
            raise AuthError(
                f"token lives {int(lifetime)} s ('exp' minus {since}); at most "
                f"{self.max_ttl} s ([auth] max_token_ttl) is accepted", "Authorization",
                code="TOKEN_TTL_TOO_LONG")
        jti = claims.get("jti")
        principal = Principal(subject, _scopes_of(claims),
                              credential_id=jti if isinstance(jti, str) else "",
                              issued_at=issued)
        return principal, exp

    def issue_token(self, subject: str, scope: str = "read", ttl: int = 3600) -> str:
        if self._signing_secret is None:
            raise ConfigError(
                "auth.jwt_algorithms: tokens for RS*/ES* are issued upstream; this service only "
                "signs HS* tokens"
            )
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        if not 1 <= ttl <= self.max_ttl:
            raise ValueError(f"ttl must be 1..{self.max_ttl} seconds ([auth] max_token_ttl)")
        now = int(time.time())
        claims = {"sub": subject, "scope": "read write" if scope == "write" else "read",
                  "iat": now, "exp": now + ttl,
                  # Random, so one token can be revoked on its own (token revoke --jti).
                  "jti": secrets.token_hex(16)}
        if self.audience:
            claims["aud"] = self.audience
        if self.issuer:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self._signing_secret, algorithm=self.algorithms[0])

    # -- device keys ---------------------------------------------------------------------
    def verify_device_key(self, key: str) -> Principal:
        """The device the key is bound to, or AuthError. Looked up by the key's SHA-256
        digest: the lookup's timing can only tell a caller about the digest of what it sent,
        and learning anything about a stored digest from that needs a SHA-256 preimage."""
        if not key.startswith(DEVICE_KEY_PREFIX) or len(key) > MAX_TOKEN_CHARS:
            raise AuthError("device key is not recognised", "X-Device-Key",
                            code="INVALID_DEVICE_KEY")
        digest = digest_key(key)
        device_id = self.device_keys.get(digest)
        if device_id is None:
            entry = self.live.current().device_keys.get(digest)
            if entry is None:
                raise AuthError("device key is not recognised", "X-Device-Key",
                                code="INVALID_DEVICE_KEY")
            device_id, revoked = entry
            if revoked:
                raise AuthError("device key has been revoked", "X-Device-Key",
                                code="DEVICE_KEY_REVOKED")
        return Principal(f"device:{device_id}", frozenset({"read", "write"}), kind="device",
                         device_id=device_id, credential_id=digest[:FINGERPRINT_CHARS])

    def limit_device(self, principal: Principal, spend: bool = True) -> None:
        """Spend one request of the device's rate budget (429 beyond it); ``spend`` False
        only asks (see ``DeviceRateLimiter.take``). Bearer tokens are not limited here."""
        if principal.kind == "device":
            self.device_limiter.take(principal.device_id, spend)

    # -- signed file URLs ----------------------------------------------------------------
    def sign_file(self, image_id: int, now: float | None = None) -> tuple[int, str]:
        """(expires, signature) for /files/<image_id>.

        The expiry is rounded up to a 5-minute step so the same image keeps the same URL for a
        while and browsers can cache it.
        """
        now = time.time() if now is None else now
        step = min(300, self.url_ttl)
        expires = int(-(-(now + self.url_ttl) // step) * step)
        return expires, self._signature(f"files/{image_id}", expires)

    def verify_file_signature(self, resource: str, expires: str, signature: str,
                              now: float | None = None) -> Principal:
        # ASCII digits only: str.isdigit() also takes '²' or Arabic-Indic digits, which int()
        # then refuses (a 500) or reads differently from what was signed.
        if not _ASCII_DIGITS.match(expires):
            raise Forbidden("signed URL has an invalid expiry", "expires")
        expected = self._signature(resource, int(expires))
        # Bytes, not str: compare_digest raises TypeError on non-ASCII text (found by fuzzing).
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise Forbidden("signed URL signature does not match", "signature")
        if int(expires) < (time.time() if now is None else now):
            raise Forbidden("signed URL has expired", "expires")
        return Principal("signed-url", frozenset({"read"}), kind="signed-url")

    def _signature(self, resource: str, expires: int) -> str:
        message = f"{resource}:{expires}".encode()
        return hmac.new(self._url_key, message, "sha256").hexdigest()


# PyJWT failure -> (code, message). Subclasses come before their bases (InvalidSignatureError
# is a DecodeError; the claim errors are InvalidTokenErrors), so the first match is the most
# precise one.
_TOKEN_ERRORS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt_exc.ImmatureSignatureError, "TOKEN_NOT_YET_VALID", "token is not valid yet"),
    (jwt_exc.InvalidAlgorithmError, "TOKEN_ALGORITHM_NOT_ALLOWED",
     "token algorithm is not allowed"),
    (jwt_exc.InvalidSignatureError, "TOKEN_SIGNATURE_INVALID", "token signature is invalid"),
    (jwt_exc.MissingRequiredClaimError, "TOKEN_CLAIMS_INVALID", "token lacks a required claim"),
    (jwt_exc.InvalidAudienceError, "TOKEN_CLAIMS_INVALID", "token audience is not accepted"),
    (jwt_exc.InvalidIssuerError, "TOKEN_CLAIMS_INVALID", "token issuer is not accepted"),
    (jwt_exc.InvalidSubjectError, "TOKEN_CLAIMS_INVALID", "token 'sub' is not accepted"),
    (jwt_exc.InvalidIssuedAtError, "TOKEN_CLAIMS_INVALID", "token 'iat' is not accepted"),
)


VERIFIED_TTL_SECONDS = 60.0
VERIFIED_MAX = 256


class VerifiedTokens:
    """Tokens verified recently, so a client's every request does not pay the signature check
    again (~40 us for HS256, far more for RS*/ES*). Keyed by the exact token string; an entry
    lives until min(exp, verified + 60 s), so an expired token is refused on time. Bounded: the
    oldest entry goes first. Only successful verifications are kept. Revocation is checked
    apart from it, on every request (``Authenticator.verify_token``)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[Principal, float] | None:
        return self._entries.get(token)

    def put(self, token: str, principal: Principal, until: float) -> None:
        with self._lock:
            if len(self._entries) >= VERIFIED_MAX:
                now = time.time()
                for key in [k for k, (_, t) in self._entries.items() if t <= now] or \
                        [next(iter(self._entries))]:
                    self._entries.pop(key, None)
            self._entries[token] = (principal, until)


def _token_error(exc: Exception) -> AuthError:
    if isinstance(exc, jwt_exc.ExpiredSignatureError):
        return TokenExpired("token has expired", "Authorization")
    for cls, code, message in _TOKEN_ERRORS:
        if isinstance(exc, cls):
            if isinstance(exc, jwt_exc.MissingRequiredClaimError):
                message = f"token lacks the required '{exc.claim}' claim"
            return AuthError(message, "Authorization", code=code)
    return AuthError("token is malformed", "Authorization", code="TOKEN_MALFORMED")


def load_verify_key(settings: Settings) -> object:
    """The public key for RS*/ES* tokens, parsed now so a bad file stops start-up."""
    path = Path(settings["auth.jwt_public_key_file"])
    pem = read_secret_file(path, "auth.jwt_public_key_file")
    algorithms = get_default_algorithms()
    for name in settings["auth.jwt_algorithms"]:
        try:
            key = algorithms[name].prepare_key(pem)
        except (jwt_exc.InvalidKeyError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"auth.jwt_public_key_file: {path} is not a {name} public key ({exc})"
            ) from None
        if hasattr(key, "private_bytes"):
            raise ConfigError(
                f"auth.jwt_public_key_file: {path} holds a private key; give the public key"
            )
    return pem


def check_key_files(settings: Settings) -> None:
    """Read every key file start-up would read, writing nothing (for ``check-config``)."""
    if not settings["auth.jwt_algorithms"][0].startswith("HS"):
        load_verify_key(settings)
    local_secret(settings, generate=False)
    configured_device_keys(settings)


def _scopes_of(claims: dict) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scopes", "read"))
    if isinstance(raw, str):
        items = raw.split()
    elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        items = raw
    else:
        raise AuthError("token 'scope' must be a string or list of strings", "Authorization",
                        code="TOKEN_CLAIMS_INVALID")
    scopes = {s for s in items if s in SCOPES}
    if "write" in scopes:
        scopes.add("read")
    return frozenset(scopes)


# -- the database side of keys and revocations (the CLI's commands) ---------------------------

def fingerprint(digest: str) -> str:
    return digest[:FINGERPRINT_CHARS]


def add_device_key(device_id: str, label: str = "") -> tuple[str, DeviceKey]:
    """A new key for ``device_id`` (validated as an upload's device_id): the key, to be shown
    once, and its stored row (digest only)."""
    from .db import write_tx

    device_id = check_device_id(device_id, "DEVICE_ID")
    key = new_device_key()
    with write_tx():
        row = DeviceKey.create(device_id=device_id, digest=digest_key(key), label=label,
                               created_at=now_us(), revoked_at=None)
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
        raise ValueError(f"{selector!r} is both a key's fingerprint and a device id: give more "
                         "hex digits of the key's digest to revoke that key alone")
    rows = by_print or by_device
    if not rows:
        from_settings = [d for d, dev in configured.items()
                         if dev == selector or (is_print and d.startswith(wanted))]
        if from_settings:
            raise ValueError(f"{selector!r} names a key from [auth] device_keys or "
                             "device_keys_file: remove it there and restart the service")
        raise ValueError(f"no stored device key has the device id or fingerprint {selector!r} "
                         "(see 'edgecatalog device-key list')")
    if len({r.device_id for r in rows}) > 1:
        raise ValueError(f"{selector!r} matches keys of several devices; give more of the "
                         "fingerprint")
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


REVOCATION_KINDS = ("jti", "subject", "all")


def revoke_tokens(kind: str, value: str = "") -> TokenRevocation:
    """Record a revocation; running services see it within ``AUTH_POLL_SECONDS``."""
    from .db import write_tx

    if kind not in REVOCATION_KINDS:
        raise ValueError(f"kind must be one of {', '.join(REVOCATION_KINDS)}")
    if kind != "all" and not value.strip():
        raise ValueError(f"a {kind} revocation needs a non-empty value")
    with write_tx():
        return TokenRevocation.create(kind=kind, value=value if kind != "all" else "",
                                      created_at=now_us())


def token_revocations() -> list[TokenRevocation]:
    return list(TokenRevocation.select().order_by(TokenRevocation.id))
