"""The systemd unit and the sd_notify protocol.

* The unit passes ``systemd-analyze verify`` with no message at all (warnings fail too) and
  ``systemd-analyze security`` rates it <= 3.0; skipped, with the reason, where systemd-analyze
  is missing.
* Resource limits: ``MemoryMax=`` and ``TasksMax=`` are set, valid (verify parses them: a bad
  value is reported) and above what the real service uses; the ``IPAddressAllow=`` /
  ``IPAddressDeny=`` example drop-in verifies too and allows only loopback, link-local and a
  private subnet.
* sd_notify against the real ``edgecatalog serve``: the test binds a unix datagram socket and
  plays systemd (READY=1 only once the port answers and migrations are applied, WATCHDOG=1
  pings, STOPPING=1 on SIGTERM); abstract ('@') sockets too.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serve_process import ServeProcess, free_port, write_config

from edgecatalog import sdnotify
from edgecatalog.config import defaults
from edgecatalog.db import migrations_dir

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edgecatalog.service"
DROPINS = REPO / "systemd" / "edgecatalog.service.d"
LAN_EXAMPLE = DROPINS / "lan-only.conf.example"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (apt-get install systemd); .ci/run installs it",
)
MAX_EXPOSURE = 3.0


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The unit and its drop-ins, with ExecStart pointing at this venv's real entry point
    (verify checks that the binary exists)."""
    exe = Path(sys.prefix) / "bin" / "edgecatalog"
    text = UNIT.read_text().replace("/opt/edgecatalog/venv/bin/edgecatalog", str(exe))
    (tmp_path / "edgecatalog.service").write_text(text)
    shutil.copytree(DROPINS, tmp_path / "edgecatalog.service.d")
    return tmp_path


def test_unit_declares_what_the_device_needs():
    text = UNIT.read_text()
    service = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert service["ExecStart"].endswith("edgecatalog serve --config /etc/edgecatalog/config.toml")
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert service["DynamicUser"] == "yes" and service["StateDirectory"] == "edgecatalog"
    assert int(service["WatchdogSec"].rstrip("s")) >= 10
    assert "LoadCredential=jwt.secret:" in text
    # No secret value in the unit: only *_FILE settings pointing into the credentials dir.
    units = [text] + [p.read_text() for p in DROPINS.glob("*.conf")]
    for line in "\n".join(units).splitlines():
        if line.startswith("Environment="):
            name, _, value = line[len("Environment=") :].partition("=")
            if any(word in name for word in ("SECRET", "KEY", "TOKEN")):
                assert name.endswith("_FILE") and value.startswith("%d/"), line
    assert not re.search(r"adk_[0-9a-f]{8}", "".join(units))  # no real key pasted in


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _bytes(size: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def test_unit_limits_memory_and_tasks_and_has_an_ip_allow_list_example():
    service = _directives(UNIT.read_text())
    [memory], [tasks] = service["MemoryMax"], service["TasksMax"]
    # Sized for a Raspberry Pi: a real ceiling, not a number no device reaches.
    assert 256 * 1024**2 <= _bytes(memory) <= 1024**3
    # Room for the default waitress threads and the service's own threads and processes.
    assert defaults()["server.threads"] + 20 <= int(tasks) <= 256
    example = _directives(LAN_EXAMPLE.read_text())
    assert example["IPAddressDeny"] == ["any"]
    allowed = example["IPAddressAllow"]
    assert "localhost" in allowed
    networks = [
        ipaddress.ip_network(a, strict=True)
        for a in allowed
        if a not in ("localhost", "link-local")
    ]
    assert networks and all(n.is_private and n.num_addresses > 1 for n in networks)
    assert "lan-only.conf" in LAN_EXAMPLE.read_text()  # says how to install it


def test_the_real_service_runs_well_inside_the_limits(tmp_path: Path):
    """Threads and memory of ``edgecatalog serve`` (one watched folder, default threads) at
    rest: at most half the unit's TasksMax (a scan's workers come on top) and a quarter of
    its MemoryMax."""
    service = _directives(UNIT.read_text())
    port = free_port()
    captures = tmp_path / "captures"
    captures.mkdir()
    config = write_config(
        tmp_path / "c.toml", tmp_path / "data", port, capture={"watch_dirs": [str(captures)]}
    )
    proc = ServeProcess(config, port)
    try:
        proc.wait_ready()
        pid = proc.proc.pid
        tasks = len(os.listdir(f"/proc/{pid}/task"))
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
    finally:
        proc.close()
    assert tasks * 2 <= int(service["TasksMax"][0]), tasks
    assert rss_kib * 1024 * 4 <= _bytes(service["MemoryMax"][0]), rss_kib


def _verify(unit_dir: Path) -> list[str]:
    result = subprocess.run(
        [ANALYZE, "verify", str(unit_dir / "edgecatalog.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys and bad values too: any message about our files counts.
    return [line for line in (result.stdout + result.stderr).splitlines() if "edgecatalog" in line]


@needs_analyze
def test_systemd_analyze_verify_is_clean(unit_dir: Path):
    assert _verify(unit_dir) == []


@needs_analyze
def test_verify_accepts_the_limits_and_the_ip_allow_list_example(unit_dir: Path):
    dropins = unit_dir / "edgecatalog.service.d"
    # Installed as the example says: under the .conf name.
    shutil.copy(LAN_EXAMPLE, dropins / "lan-only.conf")
    assert _verify(unit_dir) == []
    # verify does parse these directives: the same ones with bad values are reported, so the
    # clean result above says they are valid, not that they were skipped.
    (dropins / "zz-bad.conf").write_text(
        "[Service]\nMemoryMax=lots\nTasksMax=many\nIPAddressAllow=not-an-address\n"
    )
    reported = "\n".join(_verify(unit_dir))
    assert "zz-bad.conf:2" in reported and "zz-bad.conf:3" in reported
    assert "zz-bad.conf:4" in reported


@needs_analyze
def test_systemd_analyze_security_rates_ok(unit_dir: Path):
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit_dir / "edgecatalog.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(
        r"Overall exposure level for edgecatalog\.service: ([0-9.]+) (\w+)", result.stdout
    )
    assert found, result.stdout[-2000:] + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, found.group(0)
    assert found.group(2) in ("OK", "SAFE")


# -- sd_notify ---------------------------------------------------------------------------------


def _listen(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
    sock.settimeout(0.2)
    return sock


def _receive(sock: socket.socket, until: float) -> list[str]:
    got = []
    while time.monotonic() < until:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return got


def test_notify_reaches_path_and_abstract_sockets(tmp_path: Path):
    path = str(tmp_path / "notify.sock")
    abstract = f"@edgecatalog-test-{os.getpid()}"
    for address in (path, abstract):
        with _listen(address) as sock:
            assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": address})
            assert sock.recv(4096) == b"READY=1"
    assert sdnotify.notify("READY=1", {}) is False  # not under systemd: a no-op


def test_watchdog_pings_only_while_healthy(tmp_path: Path):
    address = str(tmp_path / "wd.sock")
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"}
    assert sdnotify.watchdog_interval(env) == pytest.approx(0.05)
    assert sdnotify.watchdog_interval({**env, "WATCHDOG_PID": "1"}) is None  # not our pid
    health = {"ok": True}
    with _listen(address) as sock:
        dog = sdnotify.Watchdog(lambda: health["ok"], environ=env)
        dog.start()
        try:
            healthy = _receive(sock, time.monotonic() + 0.5)
            health["ok"] = False
            _receive(sock, time.monotonic() + 0.15)  # drain pings already in flight
            sick = _receive(sock, time.monotonic() + 0.5)
        finally:
            dog.stop(2)
    assert healthy.count("WATCHDOG=1") >= 3
    assert sick == []


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_serve_speaks_sd_notify(tmp_path: Path, abstract: bool):
    address = f"@edgecatalog-serve-{os.getpid()}" if abstract else str(tmp_path / "n.sock")
    port = free_port()
    data_dir = tmp_path / "data"
    config = write_config(tmp_path / "c.toml", data_dir, port)
    with _listen(address) as sock:
        proc = ServeProcess(config, port, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
        try:
            ready = None
            deadline = time.monotonic() + 20
            while ready is None and time.monotonic() < deadline:
                try:
                    message = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                if "READY=1" in message.split("\n"):
                    ready = message
            assert ready is not None, "no READY=1"
            # At READY the port accepts and every migration is recorded.
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            with sqlite3.connect(data_dir / "catalog.db") as conn:
                applied = {r[0] for r in conn.execute("SELECT name FROM schema_migration")}
            files = {p.stem for p in migrations_dir().glob("[0-9]*.py")}
            assert files <= applied
            pings = _receive(sock, time.monotonic() + 1.2)
            assert pings.count("WATCHDOG=1") >= 3
            proc.terminate(signal.SIGTERM)
            code, err = proc.wait(timeout=20)
            after = _receive(sock, time.monotonic() + 0.5)
        finally:
            proc.close()
    assert code == 0, err
    assert any(m.startswith("STOPPING=1") for m in pings + after)
