"""Configuration: the one table, the TOML file, the environment, and every way they can be
wrong (each stops start-up with the key and its source named). Also the generated JWT secret.
"""

from __future__ import annotations

import re
import stat
import sys
from pathlib import Path

import jwt
import pytest

from edgecatalog.auth import Authenticator
from edgecatalog.config import SETTINGS, ConfigError, defaults, load_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def write(tmp_path: Path, text: str, name: str = "edge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def fails(tmp_path, text: str, *must_name: str, environ=None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={} if environ is None else environ)
    message = str(info.value)
    for part in must_name:
        assert part in message, message
    assert "\n" not in message
    return message


FILE_ERRORS = [
    ("[server]\nprot = 80\n", "server.prot"),
    ("[servr]\nport = 80\n", "servr"),
    ("port = 80\n", "[server] port"),  # a key outside any section
    ('[server]\nport = "8080"\n', "server.port"),
    ("[server]\nport = 80.0\n", "server.port"),
    ("[server]\nport = true\n", "server.port"),
    ("[server]\nport = 0\n", "server.port"),
    ("[server]\nport = 70000\n", "server.port"),
    ("[server]\nthreads = 1.5\n", "server.threads"),
    ('[server]\ncors_origins = "*"\n', "server.cors_origins"),
    ("[server]\ncors_origins = [1, 2]\n", "server.cors_origins"),
    ('[upstream]\nenabled = "yes"\n', "upstream.enabled"),
    ('[logging]\nlevel = "TRACE"\n', "logging.level"),
    ('[auth]\njwt_algorithms = ["HS256", "none"]\n', "auth.jwt_algorithms"),
    ("[auth]\njwt_algorithms = []\n", "auth.jwt_algorithms"),
    ('[capture]\nmode = "copy"\n', "capture.mode"),
    ("[auth]\nurl_signing_ttl = 0\n", "auth.url_signing_ttl"),
    ('[storage]\ndata_dir = ["a"]\n', "storage.data_dir"),
    ('[server]\npublic_url = "edge.local:8080"\n', "server.public_url"),
    # Contradictions.
    (
        '[auth]\njwt_algorithms = ["HS256", "RS256"]\njwt_public_key_file = "k.pem"\n',
        "auth.jwt_algorithms",
    ),
    ('[auth]\njwt_algorithms = ["RS256"]\n', "auth.jwt_public_key_file"),
    ('[auth]\njwt_secret = "s"\njwt_secret_file = "f"\n', "auth.jwt_secret"),
    ("[upstream]\nenabled = true\n", "upstream.base_url"),
    ("[server\nport = 1\n", "not valid TOML"),
    ("server = 5\n", "server"),
]


@pytest.mark.parametrize("text,key", FILE_ERRORS, ids=[k for _, k in FILE_ERRORS])
def test_bad_file_names_key_and_file(tmp_path, text, key):
    fails(tmp_path, text, key, "edge.toml")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_precedence_defaults_file_env(tmp_path):
    assert load_settings(environ={})["server.port"] == 8080
    path = write(tmp_path, '[server]\nport = 9000\nhost = "0.0.0.0"\n')
    from_file = load_settings(path, environ={})
    assert (from_file["server.port"], from_file["server.host"]) == (9000, "0.0.0.0")
    env = {"EDGECATALOG_SERVER_PORT": "9100"}
    both = load_settings(path, environ=env)
    assert (both["server.port"], both["server.host"]) == (9100, "0.0.0.0")
    # The file can also come from EDGECATALOG_CONFIG.
    via_env = load_settings(environ={"EDGECATALOG_CONFIG": str(path)})
    assert via_env["server.port"] == 9000 and via_env.source == str(path)
    # Untouched settings keep the table's defaults.
    assert both["server.threads"] == defaults()["server.threads"]


def test_env_value_types(tmp_path):
    env = {
        "EDGECATALOG_UPSTREAM_ENABLED": "TRUE",
        "EDGECATALOG_UPSTREAM_BASE_URL": "http://127.0.0.1:9",
        "EDGECATALOG_SERVER_CORS_ORIGINS": " http://a , ,http://b ",
        "EDGECATALOG_CAPTURE_SETTLE_SECONDS": "0.5",
        "EDGECATALOG_AUTH_JWT_ALGORITHMS": "RS256,RS384",
        "EDGECATALOG_AUTH_JWT_PUBLIC_KEY_FILE": "k.pem",
    }
    s = load_settings(environ=env)
    assert s["upstream.enabled"] is True
    assert s["server.cors_origins"] == ["http://a", "http://b"]
    assert s["capture.settle_seconds"] == 0.5
    assert s["auth.jwt_algorithms"] == ["RS256", "RS384"]


@pytest.mark.parametrize(
    "var,value",
    [
        ("EDGECATALOG_SERVER_PORT", "abc"),
        ("EDGECATALOG_SERVER_PORT", "80.5"),
        ("EDGECATALOG_SERVER_PORT", "0"),
        ("EDGECATALOG_UPSTREAM_ENABLED", "maybe"),
        ("EDGECATALOG_LOGGING_LEVEL", "loud"),
        ("EDGECATALOG_CAPTURE_SETTLE_SECONDS", "soon"),
        ("EDGECATALOG_AUTH_JWT_ALGORITHMS", "HS256,RS256"),
    ],
)
def test_bad_env_values_name_the_variable(var, value):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={var: value})
    message = str(info.value)
    key = "auth.jwt_algorithms" if "ALGORITHMS" in var else var
    assert key in message


def test_unknown_env_variable():
    with pytest.raises(ConfigError, match="EDGECATALOG_SERVER_PROT"):
        load_settings(environ={"EDGECATALOG_SERVER_PROT": "1"})


def test_env_cannot_create_contradiction_silently(tmp_path):
    path = write(tmp_path, '[auth]\njwt_secret = "s"\n')
    with pytest.raises(ConfigError, match="jwt_secret"):
        load_settings(path, environ={"EDGECATALOG_AUTH_JWT_SECRET_FILE": "x"})


def test_example_agrees_with_table():
    with open(EXAMPLE, "rb") as fh:
        doc = tomllib.load(fh)
    flat = {
        f"{section}.{key}": value for section, body in doc.items() for key, value in body.items()
    }
    table = {s.name: s.default for s in SETTINGS}
    assert set(flat) == set(table)
    for name, default in table.items():
        assert flat[name] == default and type(flat[name]) is type(default), name
    # Each key has its help text on a comment line right above it.
    lines = EXAMPLE.read_text().splitlines()
    section = None
    for i, line in enumerate(lines):
        head = re.match(r"^\[(\w+)\]$", line)
        if head:
            section = head.group(1)
            continue
        assign = re.match(r"^(\w+)\s*=", line)
        if assign:
            setting = next(s for s in SETTINGS if s.name == f"{section}.{assign.group(1)}")
            assert lines[i - 1].startswith("# "), setting.name
            assert setting.help.split(";")[0].split(",")[0] in lines[i - 1], setting.name
    # The example is itself a valid configuration.
    assert load_settings(EXAMPLE, environ={})["server.port"] == 8080


def test_secret_generated_once_with_mode_0600(tmp_path):
    settings = load_settings(environ={}, overrides={"storage.data_dir": str(tmp_path / "d")})
    assert settings["auth.jwt_secret"] == ""
    first = Authenticator(settings)
    path = tmp_path / "d" / "jwt.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)  # 32 random bytes
    token = first.issue_token("alice", "write")
    second = Authenticator(settings)  # a restart
    assert path.read_text().strip() == secret
    assert second.verify_token(token).subject == "alice"
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "alice"


def test_secret_file_setting(tmp_path):
    secret_file = tmp_path / "s"
    secret_file.write_text("from-a-file-" + "x" * 30 + "\n")
    settings = load_settings(
        environ={},
        overrides={
            "storage.data_dir": str(tmp_path / "d"),
            "auth.jwt_secret_file": str(secret_file),
        },
    )
    token = Authenticator(settings).issue_token("bob")
    assert jwt.decode(token, "from-a-file-" + "x" * 30, algorithms=["HS256"])["sub"] == "bob"
    assert not (tmp_path / "d" / "jwt.secret").exists()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="jwt_secret_file"):
        Authenticator(settings.replace(auth__jwt_secret_file=str(empty)))
