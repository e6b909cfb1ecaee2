"""The real ``edgecatalog`` command, run as ``python -m edgecatalog`` in a subprocess: exit
codes, one-line errors on stderr (never a traceback), tokens that verify, idempotent migrate.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

SECRET = "cli-secret-" + "k" * 32


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *must_name: str) -> str:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert err and "\n" not in err, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for part in must_name:
        assert part in err, err
    return err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(
        f'[storage]\ndata_dir = "{(tmp_path / "d").as_posix()}"\n[auth]\njwt_secret = "{SECRET}"\n'
    )
    return path


def test_help(tmp_path):
    proc = run(tmp_path, "--help")
    assert proc.returncode == 0
    for command in ("serve", "migrate", "check-config", "token"):
        assert command in proc.stdout
    assert run(tmp_path, "token", "--help").returncode == 0


def test_no_command_is_one_line(tmp_path):
    assert_one_line_error(run(tmp_path), "COMMAND")


def test_check_config_ok(tmp_path, config):
    proc = run(tmp_path, "check-config", "--config", str(config))
    assert proc.returncode == 0 and "configuration OK" in proc.stdout
    assert not (tmp_path / "d").exists()  # validation writes nothing
    shown = run(tmp_path, "check-config", "--config", str(config), "--show")
    assert "server.port = 8080" in shown.stdout
    assert SECRET not in shown.stdout + shown.stderr


def test_check_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nprot = 80\n")
    proc = run(tmp_path, "check-config", "--config", str(bad))
    assert proc.returncode == 2
    assert_one_line_error(proc, "server.prot", "bad.toml")
    proc = run(tmp_path, "check-config", env={"EDGECATALOG_SERVER_PORT": "eighty"})
    assert_one_line_error(proc, "EDGECATALOG_SERVER_PORT")
    proc = run(tmp_path, "check-config", env={"EDGECATALOG_CONFIG": str(bad)})
    assert_one_line_error(proc, "server.prot")
    proc = run(tmp_path, "check-config", "--config", str(tmp_path / "missing.toml"))
    assert_one_line_error(proc, "missing.toml")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem\n")
    env = {
        "EDGECATALOG_AUTH_JWT_ALGORITHMS": "ES256",
        "EDGECATALOG_AUTH_JWT_PUBLIC_KEY_FILE": str(junk),
    }
    assert_one_line_error(run(tmp_path, "check-config", env=env), "jwt_public_key_file")
    env = {"EDGECATALOG_AUTH_JWT_SECRET_FILE": str(tmp_path / "absent.secret")}
    assert_one_line_error(run(tmp_path, "check-config", env=env), "jwt_secret_file")
    assert not (tmp_path / "data").exists()


def test_serve_with_bad_config_binds_and_writes_nothing(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[server]\nport = {port}\n[auth]\njwt_algorithms = ["RS256"]\n')
    proc = run(tmp_path, "serve", "--config", str(bad))
    assert_one_line_error(proc, "auth.jwt_public_key_file", "bad.toml")
    assert not (tmp_path / "data").exists()
    # Valid settings, but the key file holds no key: found before anything is created.
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem\n")
    bad.write_text(
        f'[server]\nport = {port}\n[storage]\ndata_dir = "{(tmp_path / "d2").as_posix()}"'
        f'\n[auth]\njwt_algorithms = ["RS256"]\njwt_public_key_file = "{junk.as_posix()}"\n'
    )
    proc = run(tmp_path, "serve", "--config", str(bad))
    assert_one_line_error(proc, "jwt_public_key_file")
    assert not (tmp_path / "d2").exists()


def test_token_verifies_with_configured_secret(tmp_path, config):
    before = int(time.time())
    proc = run(
        tmp_path,
        "token",
        "--config",
        str(config),
        "--sub",
        "alice",
        "--scope",
        "write",
        "--ttl",
        "120",
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and set(claims["scope"].split()) == {"read", "write"}
    assert before + 120 <= claims["exp"] <= int(time.time()) + 120
    read = run(tmp_path, "token", "--config", str(config), "--sub", "bob").stdout.strip()
    assert jwt.decode(read, SECRET, algorithms=["HS256"])["scope"] == "read"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-" + "x" * 30, algorithms=["HS256"])


def test_token_uses_generated_secret(tmp_path):
    proc = run(tmp_path, "token", "--sub", "carol")
    assert proc.returncode == 0, proc.stderr
    secret = (tmp_path / "data" / "jwt.secret").read_text().strip()
    assert jwt.decode(proc.stdout.strip(), secret, algorithms=["HS256"])["sub"] == "carol"


@pytest.mark.parametrize(
    "args,names",
    [
        (("--ttl", "0"), "--ttl"),
        (("--ttl", "-5"), "--ttl"),
        (("--ttl", "soon"), "--ttl"),
        (("--sub", ""), "--sub"),
        (("--sub", "   "), "--sub"),
        (("--scope", "admin"), "--scope"),
        ((), "--sub"),
    ],
)
def test_token_usage_errors(tmp_path, config, args, names):
    argv = ["token", "--config", str(config)]
    if "--sub" not in args and args != ():
        argv += ["--sub", "dave"]
    proc = run(tmp_path, *argv, *args)
    assert_one_line_error(proc, names)
    assert proc.stdout == ""


def test_token_refused_when_tokens_come_from_upstream(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "up.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env = {
        "EDGECATALOG_AUTH_JWT_ALGORITHMS": "RS256",
        "EDGECATALOG_AUTH_JWT_PUBLIC_KEY_FILE": str(pem),
    }
    assert_one_line_error(run(tmp_path, "token", "--sub", "x", env=env), "jwt_algorithms")


def test_migrate_is_idempotent(tmp_path, config):
    first = run(tmp_path, "migrate", "--config", str(config))
    assert first.returncode == 0, first.stderr
    migrations = sorted(
        p.stem for p in (Path(__file__).resolve().parent.parent / "migrations").glob("0*.py")
    )
    assert f"applied {len(migrations)} migration(s)" in first.stdout
    for name in migrations:
        assert name in first.stdout
    second = run(tmp_path, "migrate", "--config", str(config))
    assert second.returncode == 0 and "applied 0 migration(s)" in second.stdout
    assert (tmp_path / "d" / "catalog.db").exists()
