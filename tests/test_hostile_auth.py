"""Forged credentials the attack matrix of test_auth.py does not already hold, and signed file
URLs attacked on both file routes (the image and its thumbnail), over a real waitress server.

What test_auth.py covers (alg none, wrong key, expired, nbf, missing claims, aud/iss, RS
key confusion with RS configured) is not repeated; added here: a validly signed but oversized
token, garbage base64 inside a well-formed token, iat in the future, HS256 signed with the RS
public key while both families are configured, and the read scope refused on *every* write
route of the app (found from its URL map, so a route added later is covered too).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time

import jwt
import pytest
import requests
from conftest import LiveServer, jpeg_bytes, make_settings, seed_image
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from reliability import record

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.config import ConfigError
from edgecatalog.models import database

SECRET = "t" * 40
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**extra) -> dict:
    now = int(time.time())
    base = {"sub": "mallory", "exp": now + 600, "iat": now, "scope": "read"}
    base.update(extra)
    return base


def hs256_with(key: bytes, payload: dict) -> str:
    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
        f"{b64(json.dumps(payload).encode())}"
    )
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.fixture
def fresh_app(tmp_path):
    made = []

    def build(**overrides):
        app = create_app(make_settings(tmp_path, **overrides))
        made.append(app)
        return app

    yield build
    database.close()


def _refused(client, forged: dict[str, str]) -> list[tuple[str, int]]:
    accepted = []
    for name, token in forged.items():
        resp = client.get("/data/images", headers={"Authorization": f"Bearer {token}"})
        if resp.status_code != 401:
            accepted.append((name, resp.status_code))
            continue
        err = resp.get_json()["error"]
        assert re.fullmatch(r"TOKEN_[A-Z_]+", err["code"]) and err["details"] == "Authorization"
    return accepted


def test_forged_tokens_are_all_refused(fresh_app, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "rs.pem").write_bytes(pem)
    # Mixing HMAC and public-key families (the key-confusion setup) is refused at start.
    with pytest.raises(ConfigError, match="jwt_algorithms"):
        make_settings(
            tmp_path,
            auth__jwt_algorithms=["HS256", "RS256"],
            auth__jwt_public_key_file=str(tmp_path / "rs.pem"),
        )
    hs_client = fresh_app().test_client()
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    head, body, sig = good.split(".")
    hs_forged = {
        "oversized but validly signed": jwt.encode(
            claims(pad="x" * 30_000), SECRET, algorithm="HS256"
        ),
        "garbage base64 header": f"{head[:-4]}!!!!.{body}.{sig}",
        "garbage base64 body": f"{head}.%%%%{body[4:]}.{sig}",
        "garbage base64 signature": f"{head}.{body}.****",
        "binary junk body": f"{head}.{b64(bytes(range(256)))}.{sig}",
        "iat in the future": jwt.encode(
            claims(iat=int(time.time()) + 7200), SECRET, algorithm="HS256"
        ),
        "nbf in the future": jwt.encode(
            claims(nbf=int(time.time()) + 7200), SECRET, algorithm="HS256"
        ),
        "HS256 signed with an RS public key": hs256_with(pem, claims()),
    }
    assert (
        hs_client.get("/data/images", headers={"Authorization": f"Bearer {good}"}).status_code
        == 200
    )  # sanity: the genuine token is accepted
    accepted = _refused(hs_client, hs_forged)
    rs_client = fresh_app(
        auth__jwt_algorithms=["RS256"], auth__jwt_public_key_file=str(tmp_path / "rs.pem")
    ).test_client()
    rs_good = jwt.encode(claims(), key, algorithm="RS256")
    assert (
        rs_client.get("/data/images", headers={"Authorization": f"Bearer {rs_good}"}).status_code
        == 200
    )
    rs_forged = {
        "HS256 with the RS public key, stripped": hs256_with(pem.strip(), claims()),
        "HS256 with the RS public key as DER": hs256_with(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            claims(),
        ),
        "RS256 by another key": jwt.encode(
            claims(),
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
        ),
        "expired RS256": jwt.encode(claims(exp=int(time.time()) - 5), key, algorithm="RS256"),
        "RS256 not yet valid": jwt.encode(
            claims(nbf=int(time.time()) + 3600), key, algorithm="RS256"
        ),
        "RS256 oversized": jwt.encode(claims(pad="y" * 30_000, exp=1), key, algorithm="RS256"),
    }
    accepted += _refused(rs_client, rs_forged)
    assert not accepted, accepted
    total = len(hs_forged) + len(rs_forged)
    record("hostile_jwt", runs=1, faults=total, requests=total + 2, errors=len(accepted), lost=0)


def write_routes(app) -> list[tuple[str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods & WRITE_METHODS):
            routes.append((method, re.sub(r"<(?:int:)?\w+>", "1", rule.rule)))
    return routes


def test_read_scope_is_refused_on_every_write_route(fresh_app, tmp_path):
    app = fresh_app()
    client = app.test_client()
    read = Authenticator(make_settings(tmp_path)).issue_token("reader", "read")
    routes = write_routes(app)
    # Every write route the API documents must be among them (a silently unregistered one
    # would make this test vacuous).
    names = {r for _, r in routes}
    assert {"/data/images/1", "/device/images/upload", "/data/annotations"} <= names, names
    let_in = []
    for method, url in routes:
        for body in ({"split": "train"}, None):
            resp = client.open(
                url, method=method, json=body, headers={"Authorization": f"Bearer {read}"}
            )
            if resp.status_code != 403:
                let_in.append((method, url, resp.status_code))
            else:
                assert resp.get_json()["error"]["code"] == "FORBIDDEN"
    assert not let_in, let_in
    record(
        "hostile_read_scope_on_writes",
        runs=1,
        faults=len(routes) * 2,
        requests=len(routes) * 2,
        errors=len(let_in),
        lost=0,
    )


def _signed(auth: Authenticator, image_id: int, now: float | None = None) -> tuple[int, str]:
    return auth.sign_file(image_id, now=now)


def test_signed_url_attacks_on_both_file_routes(tmp_path):
    settings = make_settings(tmp_path)
    app = create_app(settings)
    auth = Authenticator(settings)
    # Same secret, a 2 s lifetime: for the replay-after-expiry case only.
    short = Authenticator(make_settings(tmp_path, auth__url_signing_ttl=2))
    one = seed_image(settings, filename="one.jpg", data=jpeg_bytes(64, 48, seed=1))
    two = seed_image(settings, filename="two.jpg", data=jpeg_bytes(64, 48, seed=2))
    server = LiveServer(app)
    try:
        expires, sig = _signed(auth, one.id)
        flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
        other_exp, other_sig = _signed(auth, two.id)
        attacks = []
        for suffix, extra in (("", ""), ("/thumbnail", "&size=128")):
            ok = requests.get(
                f"{server.url}/files/{one.id}{suffix}?expires={expires}&signature={sig}{extra}",
                timeout=10,
            )
            assert ok.status_code == 200, ok.text  # the genuine URL works on both routes
            attacks += [
                f"/files/{one.id}{suffix}?expires={expires}&signature={flipped}{extra}",
                f"/files/{one.id}{suffix}?expires={expires + 1}&signature={sig}{extra}",
                f"/files/{one.id}{suffix}?expires={expires - 1}&signature={sig}{extra}",
                f"/files/{one.id}{suffix}?expires=+{expires}&signature={sig}{extra}",
                f"/files/{two.id}{suffix}?expires={expires}&signature={sig}{extra}",
                f"/files/{one.id}{suffix}?expires={other_exp}&signature={other_sig}{extra}",
                f"/files/{one.id + 1000}{suffix}?expires={expires}&signature={sig}{extra}",
                f"/files/{one.id}{suffix}?expires={expires}&signature={sig}{sig}{extra}",
                f"/files/{one.id}{suffix}?expires={expires}&signature={sig[:32]}{extra}",
                f"/files/{one.id}{suffix}?expires={expires}&signature=%00{sig[1:]}{extra}",
                (
                    f"/files/{one.id}{suffix}?expires={expires + 600}&expires={expires}"
                    f"&signature={sig}{extra}"
                ),
            ]
        served = []
        # Replay after expiry: a URL that worked, once its expiry has passed.
        s_exp, s_sig = _signed(short, one.id)
        replays = [
            f"/files/{one.id}{suffix}?expires={s_exp}&signature={s_sig}{extra}"
            for suffix, extra in (("", ""), ("/thumbnail", "&size=128"))
        ]
        for path in replays:
            assert requests.get(server.url + path, timeout=10).status_code == 200
        deadline = time.monotonic() + 10
        while time.time() <= s_exp + 0.2 and time.monotonic() < deadline:
            time.sleep(0.1)
        for path in attacks + replays:
            resp = requests.get(server.url + path, timeout=10)
            # 403 (or 404 for an id that does not exist: nothing is served either way).
            if resp.status_code not in (403, 404) or (
                resp.status_code == 404 and f"/files/{one.id + 1000}" not in path
            ):
                served.append((path, resp.status_code))
        assert not served, served
        record(
            "hostile_signed_urls",
            runs=1,
            faults=len(attacks) + len(replays),
            requests=len(attacks) + 2 * len(replays) + 2,
            errors=len(served),
            lost=0,
        )
    finally:
        server.close()
        database.close()
