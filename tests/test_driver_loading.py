"""A catalog on SQLite never loads the PostgreSQL driver (~12 MB of a device's 80 MB), and one
on PostgreSQL gets it; with no upstream, neither loads the HTTP client (requests, ~5 MB); with
HMAC tokens, PyJWT runs without cryptography (~11 MB), with RS256 it has it: each in a fresh
interpreter, as the service starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import engine_database

CHECK = """
import json, sys
from pathlib import Path
from edgecatalog import create_app
from edgecatalog.config import load_settings
import peewee
path = Path(sys.argv[1])
app = create_app(load_settings(path))
token = app.extensions["edgecatalog.auth"].issue_token("check", "read", 60)
with app.test_client() as client:
    status = client.get("/readyz", headers={"Host": "localhost"}).status_code
    listed = client.get(
        "/data/images", headers={"Host": "localhost", "Authorization": f"Bearer {token}"}
    ).status_code
print(json.dumps({"psycopg": "psycopg" in sys.modules, "peewee_driver": peewee.psycopg is not None,
                  "requests": "requests" in sys.modules, "ready": status, "listed": listed,
                  "cryptography": "cryptography" in sys.modules}))
"""


def _run(tmp_path, config: str) -> dict:
    path = tmp_path / "c.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_sqlite_catalog_never_imports_psycopg(tmp_path):
    got = _run(tmp_path, f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    assert got == {
        "psycopg": False,
        "peewee_driver": False,
        "requests": False,
        "ready": 200,
        "listed": 200,  # an HMAC token verified by PyJWT without cryptography (jwtload)
        "cryptography": False,
    }


def test_a_postgres_catalog_hands_peewee_its_driver(tmp_path, request):
    pytest.importorskip("psycopg")
    url = engine_database(request, "postgres")
    got = _run(
        tmp_path,
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[database]\nurl = "{url}"\n',
    )
    assert got == {
        "psycopg": True,
        "peewee_driver": True,
        "requests": False,
        "ready": 200,
        "listed": 200,
        "cryptography": False,
    }


RSA_CHECK = """
import json, sys, time
from pathlib import Path
from edgecatalog import create_app
from edgecatalog.config import load_settings
app = create_app(load_settings(Path(sys.argv[1])))
import jwt
now = int(time.time())
claims = {"sub": "check", "scope": "read", "iat": now, "exp": now + 60}
token = jwt.encode(claims, Path(sys.argv[2]).read_bytes(), algorithm="RS256")
with app.test_client() as client:
    listed = client.get(
        "/data/images", headers={"Host": "localhost", "Authorization": f"Bearer {token}"}
    ).status_code
print(json.dumps({"cryptography": "cryptography" in sys.modules, "listed": listed}))
"""


def test_rs256_tokens_get_pyjwt_with_cryptography(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_file, public_file = tmp_path / "private.pem", tmp_path / "public.pem"
    private_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    public_file.chmod(0o600)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[auth]\njwt_algorithms = ["RS256"]\njwt_public_key_file = "{public_file}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    out = subprocess.run(
        [sys.executable, "-c", RSA_CHECK, str(config), str(private_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"cryptography": True, "listed": 200}
