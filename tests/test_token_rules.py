"""Bearer-token rules of the trust boundary: a minimum HMAC secret, a maximum lifetime (issued
and presented), iat and a random jti on every issued token, revocation by jti, subject or all
that a running service sees within about a second (through the verified-token cache) while
signed file URLs keep working, and a signed URL's expiry that is ASCII digits or a 403.

Tokens for the attack cases are built here with PyJWT; revocations are made with the real
``edgecatalog token revoke`` against a real ``edgecatalog serve`` where timing matters.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests
from conftest import jpeg_bytes, make_settings, seed_image
from serve_process import ServeProcess, free_port, write_config

from edgecatalog.auth import Authenticator
from edgecatalog.config import ConfigError
from edgecatalog.models import database

SECRET = "t" * 40  # conftest.make_settings's secret
DAY = 24 * 3600
MAX_TTL = 30 * DAY  # [auth] max_token_ttl's default


def cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert err and "\n" not in err and "Traceback" not in proc.stderr, proc.stderr
    for name in names:
        assert name in err, err
    return err


def get_list(client, token: str):
    return client.get("/data/images", headers={"Authorization": f"Bearer {token}"})


def code_of(resp) -> str | None:
    body = resp.get_json() if hasattr(resp, "get_json") else resp.json()
    return body["error"]["code"] if body and body.get("error") else None


# -- the HMAC secret -------------------------------------------------------------------------


def test_jwt_secret_needs_32_bytes(tmp_path):
    for secret, ok in (("a", False), ("s" * 31, False), ("é" * 16, True), ("s" * 32, True)):
        settings = make_settings(tmp_path, auth__jwt_secret=secret)
        if ok:  # 'é' is 2 bytes in UTF-8: 16 of them are 32 bytes
            assert Authenticator(settings).verify_token(
                jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
            )
        else:
            with pytest.raises(ConfigError, match=r"auth\.jwt_secret.*at least 32 bytes"):
                Authenticator(settings)


def test_short_secret_file_and_generated_file_are_refused(tmp_path):
    short = tmp_path / "short.secret"
    short.write_text("x" * 31 + "\n")
    settings = make_settings(tmp_path, auth__jwt_secret="", auth__jwt_secret_file=str(short))
    with pytest.raises(ConfigError, match=r"auth\.jwt_secret_file .*short\.secret"):
        Authenticator(settings)
    # A generated secret is 64 hex characters and accepted; one edited down is not.
    generated = make_settings(tmp_path / "g", auth__jwt_secret="")
    Authenticator(generated)
    path = generated.data_dir / "jwt.secret"
    assert len(path.read_text().strip()) == 64
    path.write_text("tiny\n")
    with pytest.raises(ConfigError, match="jwt.secret"):
        Authenticator(generated)


def test_cli_refuses_a_short_secret_in_one_line(tmp_path):
    env = {"EDGECATALOG_AUTH_JWT_SECRET": "a", "EDGECATALOG_STORAGE_DATA_DIR": str(tmp_path / "d")}
    one_line_error(cli(tmp_path, "check-config", env=env), "auth.jwt_secret", "32 bytes")
    one_line_error(cli(tmp_path, "token", "--sub", "x", env=env), "auth.jwt_secret")
    assert not (tmp_path / "d").exists()


# -- lifetimes, iat and jti ------------------------------------------------------------------


def test_cli_ttl_beyond_max_is_a_usage_error(tmp_path):
    env = {
        "EDGECATALOG_AUTH_JWT_SECRET": SECRET,
        "EDGECATALOG_STORAGE_DATA_DIR": str(tmp_path / "d"),
    }
    proc = cli(tmp_path, "token", "--sub", "x", "--ttl", "3153600000", env=env)
    one_line_error(proc, "--ttl", "max_token_ttl")
    assert proc.stdout == ""
    env["EDGECATALOG_AUTH_MAX_TOKEN_TTL"] = "600"
    one_line_error(cli(tmp_path, "token", "--sub", "x", "--ttl", "601", env=env), "--ttl")
    ok = cli(tmp_path, "token", "--sub", "x", "--ttl", "600", env=env)
    assert ok.returncode == 0, ok.stderr
    claims = jwt.decode(ok.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 600
    assert claims["jti"] in ok.stderr  # the id 'token revoke --jti' takes, told once


def test_issued_tokens_carry_iat_and_a_random_jti(settings):
    auth = Authenticator(settings)
    before = int(time.time())
    seen = set()
    for _ in range(20):
        claims = jwt.decode(auth.issue_token("alice", "read", 60), SECRET, algorithms=["HS256"])
        assert before <= claims["iat"] <= int(time.time())
        assert claims["exp"] == claims["iat"] + 60
        assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 32
        seen.add(claims["jti"])
    assert len(seen) == 20
    with pytest.raises(ValueError, match="max_token_ttl"):
        auth.issue_token("alice", "read", MAX_TTL + 1)


def test_presented_token_longer_than_max_ttl_is_refused(client):
    now = int(time.time())
    cases = [
        ({"iat": now, "exp": now + MAX_TTL}, 200),
        ({"iat": now, "exp": now + MAX_TTL + 1}, "TOKEN_TTL_TOO_LONG"),
        ({"iat": now - 100 * DAY, "exp": now + 600}, "TOKEN_TTL_TOO_LONG"),  # old and long
        ({"iat": now, "exp": now + 100 * 365 * DAY}, "TOKEN_TTL_TOO_LONG"),
        ({"exp": now + 600}, 200),  # no iat: measured from now
        ({"exp": now + MAX_TTL + 3600}, "TOKEN_TTL_TOO_LONG"),
    ]
    for extra, expected in cases:
        token = jwt.encode({"sub": "alice", "scope": "read", **extra}, SECRET, algorithm="HS256")
        resp = get_list(client, token)
        if expected == 200:
            assert resp.status_code == 200, (extra, resp.get_json())
        else:
            assert resp.status_code == 401, extra
            assert code_of(resp) == expected, resp.get_json()
            assert resp.get_json()["error"]["details"] == "Authorization"
            assert "max_token_ttl" in resp.get_json()["error"]["message"]


# -- revocation --------------------------------------------------------------------------


def wait_for(check, limit: float) -> float:
    """Seconds until ``check()`` is true; fails after ``limit`` seconds."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            pytest.fail(f"not within {limit} s")
        time.sleep(0.05)
    return time.monotonic() - start


def jti_of(token: str) -> str:
    return jwt.decode(token, SECRET, algorithms=["HS256"])["jti"]


def next_second() -> None:
    """Sleep into the next whole second: a token's iat (whole seconds) is then after any
    revocation made before now."""
    now = time.time()
    time.sleep(int(now) + 1 - now + 0.01)


def test_revocation_reaches_cached_tokens_within_two_seconds(app, client, settings):
    from edgecatalog.revocation import revoke_tokens

    auth = Authenticator(settings)
    alice, alice2 = auth.issue_token("alice", "read"), auth.issue_token("alice", "read")
    bob = auth.issue_token("bob", "read")
    image = seed_image(settings, data=jpeg_bytes(seed=3))
    expires, signature = auth.sign_file(image.id)
    signed = f"/files/{image.id}?expires={expires}&signature={signature}"
    for token in (alice, alice2, bob):
        assert get_list(client, token).status_code == 200
        assert get_list(client, token).status_code == 200  # now in the verified-token cache

    with database.connection_context():
        revoke_tokens("jti", jti_of(alice))
    wait_for(lambda: get_list(client, alice).status_code == 401, 3.0)  # poll: 1 s
    resp = get_list(client, alice)
    assert code_of(resp) == "TOKEN_REVOKED" and resp.headers["WWW-Authenticate"]
    assert get_list(client, alice2).status_code == 200  # one token, not its subject
    assert get_list(client, bob).status_code == 200

    with database.connection_context():
        revoke_tokens("subject", "alice")
    wait_for(lambda: get_list(client, alice2).status_code == 401, 3.0)
    assert get_list(client, bob).status_code == 200
    next_second()
    assert get_list(client, auth.issue_token("alice", "read")).status_code == 200

    with database.connection_context():
        revoke_tokens("all")
    wait_for(lambda: get_list(client, bob).status_code == 401, 3.0)
    assert code_of(get_list(client, bob)) == "TOKEN_REVOKED"
    # Signed file URLs are not tokens: every revocation leaves them working.
    served = client.get(signed)
    assert served.status_code == 200 and served.data == jpeg_bytes(seed=3)
    next_second()
    assert get_list(client, auth.issue_token("carol", "read")).status_code == 200


def test_revocation_in_a_running_service(tmp_path):
    port = free_port()
    config = write_config(tmp_path / "edge.toml", tmp_path / "data", port)
    token_of = {}
    for sub, scope in (("alice", "write"), ("bob", "read")):
        proc = cli(tmp_path, "token", "--config", str(config), "--sub", sub, "--scope", scope)
        assert proc.returncode == 0, proc.stderr
        token_of[sub] = proc.stdout.strip()
    server = ServeProcess(config, port)
    try:
        server.wait_ready()
        session = requests.Session()

        def status(sub: str) -> int:
            return session.get(
                server.url + "/data/images",
                timeout=10,
                headers={"Authorization": f"Bearer {token_of[sub]}"},
            ).status_code

        up = session.post(
            server.url + "/device/images/upload",
            timeout=10,
            headers={"Authorization": f"Bearer {token_of['alice']}"},
            files={"image": ("a.jpg", jpeg_bytes(seed=9), "image/jpeg")},
        )
        assert up.status_code == 201, up.text
        listed = session.get(
            server.url + "/data/images?include_image_url=true",
            timeout=10,
            headers={"Authorization": f"Bearer {token_of['bob']}"},
        ).json()
        image_url = listed["data"][0]["image_url"]
        assert session.get(image_url, timeout=10).status_code == 200
        assert status("alice") == status("bob") == 200

        revoke = cli(
            tmp_path, "token", "revoke", "--config", str(config), "--jti", jti_of(token_of["alice"])
        )
        assert revoke.returncode == 0, revoke.stderr
        wait_for(lambda: status("alice") == 401, 3.0)
        assert status("bob") == 200

        assert cli(tmp_path, "token", "revoke", "--config", str(config), "--all").returncode == 0
        wait_for(lambda: status("bob") == 401, 3.0)
        served = session.get(image_url, timeout=10)
        assert served.status_code == 200 and served.content == jpeg_bytes(seed=9)
        listed = cli(tmp_path, "token", "list-revoked", "--config", str(config))
        assert listed.returncode == 0 and "jti" in listed.stdout and "all" in listed.stdout
        next_second()
        fresh = cli(tmp_path, "token", "--config", str(config), "--sub", "bob").stdout.strip()
        assert (
            session.get(
                server.url + "/data/images",
                timeout=10,
                headers={"Authorization": f"Bearer {fresh}"},
            ).status_code
            == 200
        )
    finally:
        server.terminate()
        server.wait()
        server.close()


def test_token_revoke_usage_errors(tmp_path):
    env = {
        "EDGECATALOG_AUTH_JWT_SECRET": SECRET,
        "EDGECATALOG_STORAGE_DATA_DIR": str(tmp_path / "d"),
    }
    one_line_error(cli(tmp_path, "token", "revoke", env=env), "--jti", "--subject", "--all")
    one_line_error(cli(tmp_path, "token", "revoke", "--jti", "a", "--all", env=env), "--all")
    one_line_error(cli(tmp_path, "token", "revoke", "--subject", " ", env=env), "--subject")


# -- signed URL expiry: ASCII digits only ------------------------------------------------


@pytest.mark.parametrize("expires", ["%C2%B2", "%D9%A1%D9%A2%D9%A3", "%EF%BC%91", "1%C2%B2"])
def test_non_ascii_digit_expiry_is_a_403_not_a_500(client, settings, caplog, expires):
    seed_image(settings, data=jpeg_bytes(seed=1))
    with caplog.at_level(logging.DEBUG):
        for suffix in ("", "/thumbnail"):
            resp = client.get(f"/files/1{suffix}?expires={expires}&signature=00")
            assert resp.status_code in (400, 403), resp.data[:300]
            body = resp.get_json()
            assert body["success"] is False and body["data"] is None
            assert body["error"]["details"] == "expires"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
