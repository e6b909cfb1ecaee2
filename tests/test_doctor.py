"""``edgecatalog doctor`` and the CLI's behaviour on bad input, run as real subprocesses."""

from __future__ import annotations

import http.server
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import make_settings, seed_image
from serve_process import write_config

from edgecatalog.cli import COMMANDS
from edgecatalog.db import migrate, open_for
from edgecatalog.doctor import check_sqlite_library
from edgecatalog.models import Image, database
from edgecatalog.timeutil import now_us


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        check=False,
    )


@pytest.fixture
def healthy(tmp_path: Path) -> Path:
    settings = make_settings(tmp_path)
    open_for(settings)
    migrate()
    database.close()
    return write_config(tmp_path / "config.toml", settings.data_dir, 8080)


def lines_of(result: subprocess.CompletedProcess) -> dict[str, str]:
    """'LABEL name: message' lines -> {name: LABEL}."""
    out = {}
    for line in result.stdout.splitlines():
        label, _, rest = line.partition(" ")
        if label in ("OK", "WARN", "FAIL"):
            out[rest.strip().split(":")[0]] = label
    return out


def test_doctor_passes_on_a_healthy_install(healthy: Path):
    result = run_cli("doctor", "--config", str(healthy))
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines_of(result)
    for name in ("configuration", "database", "migrations", "clock", "data_dir", "disk"):
        assert found[name] == "OK"
    assert "0 failed" in result.stdout


@pytest.mark.parametrize(
    "version, label",
    [
        ((3, 40, 1), "WARN"),  # Debian 12
        ((3, 44, 5), "WARN"),
        ((3, 44, 6), "OK"),  # the backport
        ((3, 45, 0), "WARN"),
        ((3, 50, 6), "WARN"),
        ((3, 50, 7), "OK"),  # the backport
        ((3, 51, 2), "WARN"),
        ((3, 51, 3), "OK"),  # the fix
        ((3, 53, 0), "OK"),
    ],
)
def test_doctor_names_a_sqlite_with_the_wal_reset_race(version, label):
    check = check_sqlite_library(version)
    assert ("OK" if check.ok else "WARN" if check.warning else "FAIL") == label
    assert ".".join(map(str, version)) in check.message


def test_doctor_reports_the_linked_sqlite_without_failing(healthy: Path):
    result = run_cli("doctor", "--config", str(healthy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines_of(result)["sqlite"] in ("OK", "WARN")
    assert f"SQLite {sqlite3.sqlite_version}" in result.stdout


def test_doctor_honours_the_environment_variable(healthy: Path):
    result = run_cli("doctor", env={"EDGECATALOG_CONFIG": str(healthy)})
    assert result.returncode == 0, result.stdout
    assert str(healthy) in result.stdout


def test_doctor_reports_a_readable_secret_file(healthy: Path, tmp_path: Path):
    secret = tmp_path / "jwt.key"
    secret.write_text("s" * 40)
    secret.chmod(0o644)
    text = healthy.read_text().replace(
        'jwt_secret = "' + "t" * 40 + '"', f'jwt_secret_file = "{secret}"'
    )
    healthy.write_text(text)
    result = run_cli("doctor", "--config", str(healthy))
    assert result.returncode == 1
    assert lines_of(result)["secret jwt.key"] == "FAIL"
    assert "chmod 600" in result.stdout
    secret.chmod(0o600)
    assert run_cli("doctor", "--config", str(healthy)).returncode == 0


def test_doctor_reports_inline_secrets_in_a_world_readable_config(healthy: Path):
    healthy.chmod(0o644)  # it holds jwt_secret inline
    result = run_cli("doctor", "--config", str(healthy))
    assert result.returncode == 1
    assert lines_of(result)["secret config.toml"] == "FAIL"


def test_doctor_reports_a_clock_behind_the_newest_image(healthy: Path, tmp_path: Path):
    settings = make_settings(tmp_path)
    open_for(settings)
    with database.connection_context():
        image = seed_image(settings)
        future = now_us() + 3 * 24 * 3600 * 1_000_000
        Image.update(created_at=future).where(Image.id == image.id).execute()
    database.close()
    result = run_cli("doctor", "--config", str(healthy))
    assert result.returncode == 1
    assert lines_of(result)["clock"] == "FAIL"


def test_doctor_reports_a_corrupt_database(healthy: Path, tmp_path: Path):
    db_path = tmp_path / "data" / "catalog.db"
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(db_path, "r+b") as fh:  # overwrite page 2 (a table's root page) with noise
        fh.seek(page_size)
        fh.write(os.urandom(page_size))
    result = run_cli("doctor", "--config", str(healthy))
    assert result.returncode == 1
    assert lines_of(result)["database"] == "FAIL"
    assert "Traceback" not in result.stdout + result.stderr


def test_doctor_reports_a_missing_database(tmp_path: Path):
    config = write_config(tmp_path / "c.toml", tmp_path / "nothing-here", 8080)
    result = run_cli("doctor", "--config", str(config))
    assert result.returncode == 1
    assert "edgecatalog migrate" in result.stdout
    assert not (tmp_path / "nothing-here" / "catalog.db").exists()  # doctor writes nothing


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "enabled, expected_label, expected_rc", [(False, "WARN", 0), (True, "FAIL", 1)]
)
def test_doctor_upstream_unreachable(healthy: Path, enabled, expected_label, expected_rc):
    with open(healthy, "a") as fh:  # a loopback port nothing listens on
        fh.write(
            f'[upstream]\nbase_url = "http://127.0.0.1:9/api"\n'
            f"enabled = {'true' if enabled else 'false'}\n"
        )
    result = run_cli("doctor", "--config", str(healthy))
    assert lines_of(result)["upstream"] == expected_label
    assert result.returncode == expected_rc


def test_doctor_upstream_reachable(healthy: Path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with open(healthy, "a") as fh:
            fh.write(f'[upstream]\nbase_url = "http://127.0.0.1:{server.server_port}/api"\n')
        result = run_cli("doctor", "--config", str(healthy))
    finally:
        server.shutdown()
    assert lines_of(result)["upstream"] == "OK" and result.returncode == 0


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "--config" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["doctor", "--config", "/nonexistent/edgecatalog.toml"],
        ["serve", "--config", "/nonexistent/edgecatalog.toml"],
        ["doctor", "--no-such-flag"],
        ["no-such-command"],
    ],
)
def test_bad_input_is_one_line_and_non_zero(args):
    result = run_cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_config_value_names_key_and_file(tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nport = "eighty"\n')
    result = run_cli("doctor", "--config", str(config))
    assert result.returncode == 2
    assert "server.port" in result.stderr and str(config) in result.stderr
