"""The verified-token cache: hits skip the signature check, expiry is still enforced on time,
a token that fails is never cached, and the cache stays bounded."""

from __future__ import annotations

import time

import jwt
import pytest

from edgecatalog import auth as auth_mod
from edgecatalog.auth import Authenticator
from edgecatalog.errors import AuthError


def test_cached_token_still_expires_on_time(settings):
    auth = Authenticator(settings)
    token = auth.issue_token("reader", "read", ttl=1)
    first = auth.verify_token(token)
    assert auth.verify_token(token) is first  # the second answer came from the cache
    deadline = time.time() + 5
    while time.time() < deadline:  # bounded: exp is at most ~1 s away
        try:
            auth.verify_token(token)
        except AuthError as exc:
            assert exc.code == "TOKEN_EXPIRED"
            break
        time.sleep(0.1)
    else:
        pytest.fail("an expired token kept being accepted from the cache")


def test_bad_tokens_are_not_cached_and_cache_is_bounded(settings):
    auth = Authenticator(settings)
    forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "w" * 40, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(AuthError):
            auth.verify_token(forged)
    for i in range(auth_mod.VERIFIED_MAX + 50):
        auth.verify_token(auth.issue_token(f"user{i}", "read"))
    assert len(auth._verified._entries) <= auth_mod.VERIFIED_MAX
