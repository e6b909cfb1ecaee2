"""Who may call the service: bearer JWTs, device keys and signed file URLs. No Flask.

* Algorithms come from the configuration, never from the token header; ``exp`` and ``sub``
  are required; ``aud``/``iss`` are checked when configured. Each way a token can be bad has
  its own error code, so a client (and an operator reading logs) can tell which. A token may
  live at most ``[auth] max_token_ttl`` (``exp`` minus ``iat``, or minus now without ``iat``),
  whoever issued it. The HMAC secret must have at least ``MIN_SECRET_BYTES``.
* A device key is one device (``device_keys``): the principal of a key carries the device id
  it is bound to, looked up by the key's SHA-256 digest, and the device's request rate is
  checked here (``limit_device``).
* Every request, cached token or not, is checked against the database's revocations and
  stored keys as of at most a second ago (``revocation.LiveAuthState``).
* File URLs carry ``expires`` and an HMAC over ``image id + expiry`` with a key derived from the
  local secret, so an ``<img src>`` works without a bearer header and cannot be moved to
  another image or extended. Revoking tokens leaves them alone: they are not tokens.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import threading
import time
from pathlib import Path

import jwt
from jwt import exceptions as jwt_exc
from jwt.algorithms import get_default_algorithms

from .config import ConfigError, Settings, read_secret_file
from .device_keys import (
    DEVICE_KEY_PREFIX,
    FINGERPRINT_CHARS,
    DeviceRateLimiter,
    configured_device_keys,
    digest_key,
)
from .errors import AuthError, Forbidden, TokenExpired
from .principal import Principal
from .revocation import LiveAuthState

SCOPES = ("read", "write")
MAX_TOKEN_CHARS = 8192
SECRET_FILE = "jwt.secret"
# HS256 is only as strong as its key: RFC 7518 asks for a key at least as long as the hash
# output (32 bytes for SHA-256). The generated secret has 64 hex characters.
MIN_SECRET_BYTES = 32
_ASCII_DIGITS = re.compile(r"^[0-9]{1,12}$")


def ensure_local_secret(data_dir: Path) -> str:
    """The generated secret at <data_dir>/jwt.secret, created once with mode 0600."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once must not overwrite each other's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return checked_secret(
            read_secret_file(path, "auth.jwt_secret"), f"auth.jwt_secret (generated file {path})"
        )
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
            "(make one with: python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return secret


def local_secret(settings: Settings, *, generate: bool = True) -> str | None:
    """The HMAC secret of tokens and URL signatures: ``jwt_secret``, the file of
    ``jwt_secret_file``, or the generated one (None when ``generate`` is False and it is
    not there yet). Too short a secret is a ConfigError whichever way it came."""
    if settings["auth.jwt_secret"]:
        return checked_secret(
            settings["auth.jwt_secret"], "auth.jwt_secret (EDGECATALOG_AUTH_JWT_SECRET)"
        )
    if settings["auth.jwt_secret_file"]:
        path = Path(settings["auth.jwt_secret_file"])
        return checked_secret(
            read_secret_file(path, "auth.jwt_secret_file"), f"auth.jwt_secret_file ({path})"
        )
    if generate:
        return ensure_local_secret(settings.data_dir)
    path = settings.data_dir / SECRET_FILE
    if path.exists():
        return checked_secret(
            read_secret_file(path, "auth.jwt_secret"), f"auth.jwt_secret (generated file {path})"
        )
    return None


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
        self.live = LiveAuthState(settings.db_location)
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
            raise AuthError(
                "token 'sub' must be a non-empty string",
                "Authorization",
                code="TOKEN_CLAIMS_INVALID",
            )
        exp = float(claims["exp"])
        iat = claims.get("iat")  # PyJWT has checked it is a number when present
        issued = float(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None
        lifetime = exp - (time.time() if issued is None else issued)
        if lifetime > self.max_ttl:
            since = "now" if issued is None else "iat"
            raise AuthError(
                f"token lives {int(lifetime)} s ('exp' minus {since}); at most "
                f"{self.max_ttl} s ([auth] max_token_ttl) is accepted",
                "Authorization",
                code="TOKEN_TTL_TOO_LONG",
            )
        jti = claims.get("jti")
        principal = Principal(
            subject,
            _scopes_of(claims),
            credential_id=jti if isinstance(jti, str) else "",
            issued_at=issued,
        )
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
        claims = {
            "sub": subject,
            "scope": "read write" if scope == "write" else "read",
            "iat": now,
            "exp": now + ttl,
            # Random, so one token can be revoked on its own (token revoke --jti).
            "jti": secrets.token_hex(16),
        }
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
            raise AuthError(
                "device key is not recognised", "X-Device-Key", code="INVALID_DEVICE_KEY"
            )
        digest = digest_key(key)
        device_id = self.device_keys.get(digest)
        if device_id is None:
            entry = self.live.current().device_keys.get(digest)
            if entry is None:
                raise AuthError(
                    "device key is not recognised", "X-Device-Key", code="INVALID_DEVICE_KEY"
                )
            device_id, revoked = entry
            if revoked:
                raise AuthError(
                    "device key has been revoked", "X-Device-Key", code="DEVICE_KEY_REVOKED"
                )
        return Principal(
            f"device:{device_id}",
            frozenset({"read", "write"}),
            kind="device",
            device_id=device_id,
            credential_id=digest[:FINGERPRINT_CHARS],
        )

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

    def verify_file_signature(
        self, resource: str, expires: str, signature: str, now: float | None = None
    ) -> Principal:
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
    (
        jwt_exc.InvalidAlgorithmError,
        "TOKEN_ALGORITHM_NOT_ALLOWED",
        "token algorithm is not allowed",
    ),
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
                for key in [k for k, (_, t) in self._entries.items() if t <= now] or [
                    next(iter(self._entries))
                ]:
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
        if name not in algorithms:  # PyJWT without cryptography (jwtload)
            raise ConfigError(
                f"auth.jwt_algorithms: {name} needs the cryptography package, which this "
                "process has not loaded; install it (pip install cryptography) and restart"
            )
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
        raise AuthError(
            "token 'scope' must be a string or list of strings",
            "Authorization",
            code="TOKEN_CLAIMS_INVALID",
        )
    scopes = {s for s in items if s in SCOPES}
    if "write" in scopes:
        scopes.add("read")
    return frozenset(scopes)
