"""The bearer-token attack matrix, with tokens built here with PyJWT (and by hand where PyJWT
refuses to build the attack). Every 401 carries ``WWW-Authenticate: Bearer`` and a code that
says which check failed.
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
from conftest import make_settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edgecatalog import create_app
from edgecatalog.access import route_access
from edgecatalog.config import ConfigError
from edgecatalog.models import database

SECRET = "t" * 40  # the secret conftest.make_settings configures


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, claims: dict, key: bytes | None) -> str:
    """A JWT assembled by hand: PyJWT will not sign HS256 with a PEM key or emit alg none."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def claims(**extra) -> dict:
    now = int(time.time())
    base = {"sub": "alice", "exp": now + 600, "iat": now, "scope": "read"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture(scope="module")
def rsa_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem_public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem_public


@pytest.fixture
def make_client(tmp_path):
    made = []

    def build(**overrides):
        app = create_app(make_settings(tmp_path, **overrides))
        made.append(app)
        return app.test_client()

    yield build
    database.close()


def call(client, token: str | None, header: str | None = None, method: str = "get"):
    headers = {}
    if header is not None:
        headers["Authorization"] = header
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if method == "patch":
        return client.patch("/data/images/1", json={"split": "train"}, headers=headers)
    return client.get("/data/images", headers=headers)


def assert_401(resp, code: str) -> None:
    assert resp.status_code == 401, resp.get_json()
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = resp.get_json()
    assert body["success"] is False and body["error"]["code"] == code
    assert body["error"]["details"] == "Authorization"


HS_CASES = [
    ("missing header", None, None, "UNAUTHORIZED"),
    ("empty header", None, "", "UNAUTHORIZED"),
    ("wrong scheme", None, "Basic YWxpY2U6cHc=", "TOKEN_MALFORMED"),
    ("scheme only", None, "Bearer", "TOKEN_MALFORMED"),
    ("scheme and blanks", None, "Bearer    ", "TOKEN_MALFORMED"),
    ("not a jwt", "not-a-jwt", None, "TOKEN_MALFORMED"),
    ("two parts", "abc.def", None, "TOKEN_MALFORMED"),
    ("garbage base64", "@@@.###.$$$", None, "TOKEN_MALFORMED"),
    ("json garbage", b64(b"{oops") + "." + b64(b"{}") + ".", None, "TOKEN_MALFORMED"),
    ("oversized", "a" * 9000, None, "TOKEN_MALFORMED"),
]


@pytest.mark.parametrize("name,token,header,code", HS_CASES, ids=[c[0] for c in HS_CASES])
def test_malformed_credentials(make_client, name, token, header, code):
    assert_401(call(make_client(), token, header), code)


def test_claim_failures(make_client):
    client = make_client()
    now = int(time.time())
    cases = [
        (claims(exp=now - 120), "TOKEN_EXPIRED"),
        (claims(nbf=now + 600), "TOKEN_NOT_YET_VALID"),
        (claims(iat=None, exp=None), "TOKEN_CLAIMS_INVALID"),  # no exp
        (claims(sub=None), "TOKEN_CLAIMS_INVALID"),
        (claims(sub=""), "TOKEN_CLAIMS_INVALID"),
        (claims(sub=123), "TOKEN_CLAIMS_INVALID"),
        (claims(scope=5), "TOKEN_CLAIMS_INVALID"),
        (claims(exp="tomorrow"), "TOKEN_MALFORMED"),
    ]
    for payload, code in cases:
        token = jwt.encode(payload, SECRET, algorithm="HS256")
        assert_401(call(client, token), code)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_signature_and_algorithm_failures(make_client, rsa_pair):
    client = make_client()
    private, _ = rsa_pair
    assert_401(
        call(client, jwt.encode(claims(), "x" * 40, algorithm="HS256")), "TOKEN_SIGNATURE_INVALID"
    )
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    head, _, sig = good.split(".")
    tampered_body = b64(json.dumps(claims(sub="mallory", scope="read write")).encode())
    assert_401(call(client, f"{head}.{tampered_body}.{sig}"), "TOKEN_SIGNATURE_INVALID")
    assert_401(
        call(client, hand_made({"alg": "none", "typ": "JWT"}, claims(), None)),
        "TOKEN_ALGORITHM_NOT_ALLOWED",
    )
    assert_401(
        call(client, hand_made({"alg": "None", "typ": "JWT"}, claims(), None)),
        "TOKEN_ALGORITHM_NOT_ALLOWED",
    )
    # Right secret, algorithm not configured: the token does not choose the algorithm.
    assert_401(
        call(client, jwt.encode(claims(), SECRET, algorithm="HS512")), "TOKEN_ALGORITHM_NOT_ALLOWED"
    )
    # An RS token while HS is configured.
    assert_401(
        call(client, jwt.encode(claims(), private, algorithm="RS256")),
        "TOKEN_ALGORITHM_NOT_ALLOWED",
    )


def test_valid_tokens(make_client):
    client = make_client()
    assert call(client, jwt.encode(claims(), SECRET, algorithm="HS256")).status_code == 200
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert call(client, None, header=f"bearer {token}").status_code == 200  # scheme any case
    list_scope = jwt.encode(claims(scope=["read"]), SECRET, algorithm="HS256")
    assert call(client, list_scope).status_code == 200
    # A token is never taken from the query string.
    assert client.get(f"/data/images?access_token={token}").status_code == 401


def test_rs256_configured(make_client, tmp_path, rsa_pair):
    private, pem_public = rsa_pair
    key_file = tmp_path / "upstream.pem"
    key_file.write_bytes(pem_public)
    client = make_client(auth__jwt_algorithms=["RS256"], auth__jwt_public_key_file=str(key_file))
    assert call(client, jwt.encode(claims(), private, algorithm="RS256")).status_code == 200
    # Key confusion: HS256 signed with the public key's PEM bytes as the HMAC secret.
    confused = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), pem_public)
    assert_401(call(client, confused), "TOKEN_ALGORITHM_NOT_ALLOWED")
    assert_401(
        call(client, jwt.encode(claims(), SECRET, algorithm="HS256")), "TOKEN_ALGORITHM_NOT_ALLOWED"
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_401(
        call(client, jwt.encode(claims(), other, algorithm="RS256")), "TOKEN_SIGNATURE_INVALID"
    )
    es = ec.generate_private_key(ec.SECP256R1())
    assert_401(
        call(client, jwt.encode(claims(), es, algorithm="ES256")), "TOKEN_ALGORITHM_NOT_ALLOWED"
    )
    assert_401(
        call(client, jwt.encode(claims(exp=int(time.time()) - 60), private, algorithm="RS256")),
        "TOKEN_EXPIRED",
    )


def test_public_key_file_is_checked_at_start(tmp_path, rsa_pair):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        create_app(
            make_settings(
                tmp_path, auth__jwt_algorithms=["RS256"], auth__jwt_public_key_file=str(bad)
            )
        )
    rsa_file = tmp_path / "rsa.pem"
    rsa_file.write_bytes(rsa_pair[1])
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        create_app(
            make_settings(
                tmp_path, auth__jwt_algorithms=["ES256"], auth__jwt_public_key_file=str(rsa_file)
            )
        )
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        create_app(
            make_settings(
                tmp_path,
                auth__jwt_algorithms=["RS256"],
                auth__jwt_public_key_file=str(tmp_path / "missing.pem"),
            )
        )


def test_audience_and_issuer(make_client):
    client = make_client(auth__audience="edgecatalog", auth__issuer="acusight")
    good = claims(aud="edgecatalog", iss="acusight")
    assert call(client, jwt.encode(good, SECRET, algorithm="HS256")).status_code == 200
    for bad in (
        claims(aud="other", iss="acusight"),
        claims(iss="acusight"),
        claims(aud="edgecatalog", iss="evil"),
        claims(aud="edgecatalog"),
    ):
        assert_401(call(client, jwt.encode(bad, SECRET, algorithm="HS256")), "TOKEN_CLAIMS_INVALID")


def test_scopes(make_client, settings):
    client = make_client()
    read = jwt.encode(claims(scope="read"), SECRET, algorithm="HS256")
    resp = call(client, read, method="patch")
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == "FORBIDDEN"
    assert resp.get_json()["error"]["details"] == "scope"
    no_scope = jwt.encode(claims(scope=None), SECRET, algorithm="HS256")
    assert call(client, no_scope, method="patch").status_code == 403
    write = jwt.encode(claims(scope="read write"), SECRET, algorithm="HS256")
    # Past auth: image 1 does not exist, so the write token reaches the 404.
    assert call(client, write, method="patch").status_code == 404
    only_write = jwt.encode(claims(scope="write"), SECRET, algorithm="HS256")
    assert call(client, only_write).status_code == 200  # write implies read


# The only routes that answer without a credential; each declares it with access.public.
PUBLIC_ROUTES = {"/healthz", "/readyz", "/openapi.json", "/", "/static/<path:name>"}
# Of those, the ones that must answer without opening a database connection.
NO_DATABASE_ROUTES = {"/healthz", "/openapi.json"}


def test_every_route_declares_its_access(make_client):
    # Through the one registry: a route added without a declaration, or declared public
    # without being on the list above, fails here.
    client = make_client()
    app = client.application
    declared = route_access(app)
    assert sorted(set(app.view_functions) - set(declared)) == [], "routes declaring no access"
    rules = list(app.url_map.iter_rules())
    public = {rule.rule for rule in rules if declared[rule.endpoint].public}
    assert public == PUBLIC_ROUTES
    no_database = {rule.rule for rule in rules if not declared[rule.endpoint].database}
    assert no_database == NO_DATABASE_ROUTES
    checked = 0
    for rule in rules:
        if rule.rule in PUBLIC_ROUTES:
            continue
        url = re.sub(r"<(?:int:)?\w+>", "1", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            resp = client.open(url, method=method)
            assert resp.status_code == 401, (method, url)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            checked += 1
    assert checked >= 10


def test_every_data_route_requires_auth(make_client):
    client = make_client()
    app = client.application
    declared = route_access(app)
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/data/"):
            continue
        access = declared[rule.endpoint]
        assert not access.public and access.scope in ("read", "write"), rule.rule
        url = re.sub(r"<(?:int:)?\w+>", "1", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            resp = client.open(url, method=method)
            assert resp.status_code == 401, (method, url)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            checked += 1
    assert checked >= 3


def test_secret_never_in_responses_or_logs(make_client, caplog):
    client = make_client()
    with caplog.at_level("DEBUG"):
        call(client, jwt.encode(claims(), "x" * 40, algorithm="HS256"))
        call(client, "garbage")
    assert SECRET not in caplog.text
