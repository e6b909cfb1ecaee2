"""The nginx front (deploy/nginx/edgecatalog.conf), started for real and attacked.

A throwaway nginx runs the repository's site file, with only its listen ports, upstream port
and certificate paths rewritten, in front of a real ``edgecatalog serve`` on a loopback port;
the certificate is made by the command docs/reverse-proxy.md gives. Attackers bind 127.0.0.2
(the limit checks use .3 to .5), so the per-client limits they meet are theirs and the normal
client on 127.0.0.1 is another client. The two attacks are also run straight at waitress: they
must succeed there, which shows the checks can fail.

Temp files are found by what the processes hold open (/proc/<pid>/fd): nginx and waitress both
unlink a temp file as they create it, so a directory listing would always look empty.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reliability import record
from serve_process import ServeProcess, free_port, write_config
from upload_helpers import (
    CONTENT_TYPE,
    DEVICE_KEY,
    PLAIN_DEVICE_KEY,
    image_bytes,
    unique_jpeg,
    upload_body,
)

NGINX = Path("/usr/sbin/nginx")
REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "deploy" / "nginx" / "edgecatalog.conf"
DOC = REPO / "docs" / "reverse-proxy.md"
MiB = 1024 * 1024
ATTACK_BODY = 49 * MiB
ATTACKER = "127.0.0.2"
DEADLINE = 1.0  # every answer to the normal client, during an attack, within this many seconds
HEADER_TIMEOUT = 10.0  # client_header_timeout in the site file

pytestmark = pytest.mark.skipif(
    not NGINX.is_file() or shutil.which("openssl") is None,
    reason="needs Debian's nginx at /usr/sbin/nginx and openssl (apt-get install nginx openssl)",
)


# -- the certificate, the service and the front --------------------------------------------------


def cert_command(cert_dir: Path) -> list[str]:
    """The documented ``openssl req -x509`` command, for localhost/127.0.0.1 into cert_dir."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "openssl req -x509" in line)
    parts = []
    for line in lines[start:]:
        parts.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    command = " ".join(parts).replace("/etc/ssl/edgecatalog/", f"{cert_dir}/")
    command = command.replace("$NAME", "localhost").replace("$IP", "127.0.0.1")
    argv = shlex.split(command)
    argv = argv[1:] if argv[0] == "sudo" else argv
    assert argv[:3] == ["openssl", "req", "-x509"], argv
    return argv


def site_for_test(tls_port: int, http_port: int, service_port: int, cert: Path, key: Path) -> str:
    """The site file with only its listen ports, upstream address and certificate paths
    changed; each rewrite must match exactly once, so a changed site file fails loudly here."""
    text = SITE.read_text()
    rewrites = [
        (r"^(\s*)listen 443 ssl;$", rf"\g<1>listen 127.0.0.1:{tls_port} ssl;"),
        (r"^\s*listen \[::\]:443 ssl;\n", ""),
        (r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{http_port};"),
        (r"^\s*listen \[::\]:80;\n", ""),
        (r"\bserver 127\.0\.0\.1:8080\b", f"server 127.0.0.1:{service_port}"),
        (r"/etc/ssl/edgecatalog/cert\.pem", str(cert)),
        (r"/etc/ssl/edgecatalog/key\.pem", str(key)),
    ]
    for pattern, replacement in rewrites:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"site file: {pattern!r} matched {count} times"
    listens = re.findall(r"^\s*listen\s+(\S+)", text, flags=re.MULTILINE)
    assert listens and all(a.startswith("127.0.0.1:") for a in listens), listens
    return text


def main_config(root: Path, site: Path) -> str:
    """The throwaway nginx's main file: everything it writes stays under ``root``."""
    # As root, nginx runs its workers as 'nobody', who cannot enter pytest's private (0700)
    # tmp folder to write request-body temp files; so this test's workers stay root. The real
    # deployment keeps Debian's nginx.conf (workers as www-data, temp files in /var/lib/nginx).
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {name}_temp_path {root / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\n{user}worker_processes auto;\npid {root / 'nginx.pid'};\n"
        f"error_log {root / 'error.log'} info;\n"
        # Debian's nginx.conf value, so the attack meets the same connection budget.
        "events { worker_connections 768; }\n"
        f"http {{\n    access_log {root / 'access.log'};\n{temp}\n"
        f"    include {site};\n}}\n"
    )


def child_pids(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            pids.append(int(entry.name))
    return pids


@dataclass
class Front:
    root: Path
    tls_port: int
    http_port: int
    cert: Path
    proc: subprocess.Popen
    service: ServeProcess
    service_config: Path
    service_tmp: Path
    context: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context(cafile=str(self.cert))

    def connect(self, source: str = "127.0.0.1", timeout: float = 5.0) -> ssl.SSLSocket:
        raw = socket.create_connection(
            ("127.0.0.1", self.tls_port), timeout=timeout, source_address=(source, 0)
        )
        return self.context.wrap_socket(raw, server_hostname="127.0.0.1")

    def https(self, source: str = "127.0.0.1", timeout: float = 5.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1",
            self.tls_port,
            timeout=timeout,
            context=self.context,
            source_address=(source, 0),
        )

    def temp_holders(self) -> list[tuple[int, str]]:
        """(pid, folder) pairs whose open files under the folder are request bodies spooled
        to disk: nginx's workers (body and proxy temp) and the service (its TMPDIR)."""
        holders = [(self.service.proc.pid, str(self.service_tmp))]
        for pid in child_pids(self.proc.pid):
            holders += [(pid, str(self.root / "client_body")), (pid, str(self.root / "proxy"))]
        return holders


@pytest.fixture(scope="module")
def front(tmp_path_factory) -> Iterator[Front]:
    root = tmp_path_factory.mktemp("front")
    certs = root / "certs"
    certs.mkdir()
    minted = subprocess.run(
        cert_command(certs), capture_output=True, text=True, timeout=60, check=False
    )
    assert minted.returncode == 0, minted.stderr
    service_port, tls_port, http_port = free_port(), free_port(), free_port()
    service_tmp = root / "service-tmp"
    service_tmp.mkdir()
    # 60 a minute: a burst of 10, so the device rate test reaches the 429 in a few requests.
    config = write_config(
        root / "service.toml",
        root / "data",
        service_port,
        auth={
            "device_keys": [DEVICE_KEY, f"ratecam={PLAIN_DEVICE_KEY}"],
            "device_requests_per_minute": 60,
        },
        server={"trusted_proxies": ["127.0.0.1"]},
    )
    # TMPDIR: waitress spools request bodies with tempfile, so they land (unlinked) here.
    service = ServeProcess(config, service_port, env={"TMPDIR": str(service_tmp)})
    proc: subprocess.Popen | None = None
    built: Front | None = None
    try:
        service.wait_ready()
        site = root / "edgecatalog.conf"
        site.write_text(
            site_for_test(tls_port, http_port, service_port, certs / "cert.pem", certs / "key.pem")
        )
        conf = root / "nginx.conf"
        conf.write_text(main_config(root, site))
        base = [str(NGINX), "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
        checked = subprocess.run(
            base + ["-t"], capture_output=True, text=True, timeout=30, check=False
        )
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (root / "error.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)
        built = Front(
            root, tls_port, http_port, certs / "cert.pem", proc, service, config, service_tmp
        )
        yield built
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown; QUIT would wait for keep-alives
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                for pid in child_pids(proc.pid):  # workers outlive a killed master
                    os.kill(pid, signal.SIGKILL)
                proc.kill()
                proc.wait()
        (built.service if built is not None else service).close()  # a test may replace it


# -- clients -------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def error(self) -> dict[str, Any]:
        """The envelope's error object, checked to have the service's shape."""
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        payload = json.loads(self.body)
        assert payload["success"] is False and payload["data"] is None, payload
        error = payload["error"]
        assert set(error) == {"code", "message", "details"}, error
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", error["code"]), error
        return error


def call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    start = time.monotonic()
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return Answer(
        response.status,
        {k.lower(): v for k, v in response.getheaders()},
        data,
        time.monotonic() - start,
    )


def fresh(
    make: Callable[[], http.client.HTTPConnection], method: str, path: str, **kw: Any
) -> Answer:
    """One request on a new connection (so accepting connections is part of what is timed)."""
    conn = make()  # http.client connects in request(), so call() times the connection too
    try:
        return call(conn, method, path, **kw)
    finally:
        conn.close()


def poll_recv(sock: socket.socket) -> bytes | None:
    """What the socket holds right now: data, b"" at EOF, or None for nothing. A TLS socket can
    be readable with no data for us (TLS 1.3 session tickets arrive after the handshake), so
    select() alone cannot say that an answer came."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    finally:
        sock.settimeout(timeout)


def read_answer(sock: socket.socket, timeout: float = 5.0, data: bytes = b"") -> Answer:
    """Read one HTTP/1.1 answer (Content-Length framed) from a raw socket; ``data`` is what
    was already read of it."""
    start = time.monotonic()
    sock.settimeout(timeout)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(lines[0].split()[1]), headers, body, time.monotonic() - start)


class Prober(threading.Thread):
    """Asks ``probe`` every ``interval`` seconds until stopped; keeps (seconds, status)."""

    def __init__(self, probe: Callable[[], Answer], interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.probe, self.interval = probe, interval
        self.samples: list[tuple[float, int | str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            start = time.monotonic()
            try:
                status: int | str = self.probe().status
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
            self.samples.append((time.monotonic() - start, status))

    def stop(self) -> list[tuple[float, int | str]]:
        self.halt.set()
        self.join(timeout=10)
        return self.samples


def assert_prompt(samples: list[tuple[float, int | str]], minimum: int, what: str) -> float:
    """Every sample a 200 within DEADLINE; returns the slowest, in seconds."""
    assert len(samples) >= minimum, f"{what}: only {len(samples)} answers"
    late = [(round(s, 3), status) for s, status in samples if status != 200 or s >= DEADLINE]
    assert not late, f"{what}: late or failed answers {late} of {len(samples)}"
    return max(s for s, _ in samples)


class TempSpool(threading.Thread):
    """Peak bytes of the files the given processes hold open under the given folders."""

    def __init__(self, holders: list[tuple[int, str]]) -> None:
        super().__init__(daemon=True)
        self.holders = holders
        self.peak = 0
        self.seen: set[str] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            total = 0
            for pid, folder in self.holders:
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if target.startswith(folder + "/"):
                            total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
                            self.seen.add(target)
                    except OSError:
                        continue  # closed while we looked
            self.peak = max(self.peak, total)
            self.halt.wait(0.01)

    def stop(self) -> int:
        self.halt.set()
        self.join(timeout=10)
        return self.peak


def healthz_probers(front: Front) -> tuple[Prober, Prober]:
    """The normal client (127.0.0.1): /healthz through the front, and straight at waitress."""
    via_front = Prober(lambda: fresh(lambda: front.https(timeout=DEADLINE), "GET", "/healthz"))
    direct = Prober(
        lambda: fresh(
            lambda: http.client.HTTPConnection("127.0.0.1", front.service.port, timeout=DEADLINE),
            "GET",
            "/healthz",
        )
    )
    via_front.start()
    direct.start()
    return via_front, direct


# -- attack 4: slow headers ----------------------------------------------------------------------


class SlowHeaders:
    """``count`` connections made by ``connect``, each sending a request line and then one
    header line every ``period`` seconds; notes when the server drops each one."""

    def __init__(self, connect: Callable[[], socket.socket], count: int) -> None:
        self.sockets: dict[int, socket.socket] = {}
        self.opened: dict[int, float] = {}
        self.dropped_after: dict[int, float] = {}
        for i in range(count):
            sock = connect()
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            self.sockets[i], self.opened[i] = sock, time.monotonic()

    def _drop(self, i: int) -> None:
        self.dropped_after[i] = time.monotonic() - self.opened[i]
        self.sockets.pop(i).close()

    def run(self, duration: float, period: float = 5.0) -> None:
        end = time.monotonic() + duration
        next_line = time.monotonic() + period
        while time.monotonic() < end and self.sockets:
            wait = max(0.0, min(next_line, end) - time.monotonic())
            readable, _, _ = select.select(list(self.sockets.values()), [], [], wait)
            for sock in readable:
                i = next(k for k, s in self.sockets.items() if s is sock)
                try:
                    if poll_recv(sock) == b"":
                        self._drop(i)
                except OSError:  # reset (nginx's reset_timedout_connection), TLS EOF
                    self._drop(i)
            if time.monotonic() >= next_line:
                next_line += period
                for i, sock in list(self.sockets.items()):
                    try:
                        sock.sendall(b"X-Trickle: %d\r\n" % i)
                    except OSError:
                        self._drop(i)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


def test_slow_headers_do_not_starve_other_clients(front):
    attack = SlowHeaders(lambda: front.connect(ATTACKER), 110)
    via_front, direct = healthz_probers(front)
    try:
        attack.run(duration=16.0)
    finally:
        attack.close()
        front_samples, direct_samples = via_front.stop(), direct.stop()
    slowest = assert_prompt(front_samples, 20, "healthz through nginx")
    slowest_direct = assert_prompt(direct_samples, 20, "healthz straight at waitress")
    # The header deadline, not the end of the attack, ended every attacking connection.
    assert len(attack.dropped_after) == 110, f"{110 - len(attack.dropped_after)} still open"
    assert max(attack.dropped_after.values()) <= HEADER_TIMEOUT + 3, attack.dropped_after
    record(
        "front_slow_headers",
        runs=1,
        faults=110,
        requests=len(front_samples) + len(direct_samples),
        errors=0,
        lost=0,
        max_healthz_ms=round(slowest * 1000),
        max_direct_ms=round(slowest_direct * 1000),
        median_healthz_ms=round(statistics.median(s for s, _ in front_samples) * 1000),
        attackers_dropped_after_s=round(max(attack.dropped_after.values()), 1),
    )


# -- attack 5: unauthenticated upload bodies -----------------------------------------------------


def upload_head(length: int, extra: str = "") -> bytes:
    return (
        f"POST /device/images/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def push_body(sock: socket.socket, total: int) -> tuple[int | None, Answer]:
    """Send ``total`` bytes as fast as the socket takes them, watching for an early answer.
    Returns (bytes sent when the answer was there, or None if only after all), the answer."""
    chunk = bytes(64 * 1024)
    sent = 0
    while sent < total:
        sent += sock.send(chunk[: min(len(chunk), total - sent)])
        if select.select([sock], [], [], 0)[0]:
            data = poll_recv(sock)
            if data:
                return sent, read_answer(sock, data=data)
    return None, read_answer(sock, timeout=30)


def test_unauthenticated_upload_bodies_are_refused_unread(front):
    log_before = front.service.log_text()
    spool = TempSpool(front.temp_holders())
    spool.start()
    rounds: list[tuple[int | None, Answer]] = []
    broken: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 4.0

    def attacker() -> None:
        while time.monotonic() < stop_at:
            try:
                with front.connect(ATTACKER) as sock:
                    sock.sendall(upload_head(ATTACK_BODY))
                    result = push_body(sock, ATTACK_BODY)
            except (OSError, AssertionError) as exc:  # no answer at all is a failure too
                with lock:
                    broken.append(repr(exc))
                return
            with lock:
                rounds.append(result)
            time.sleep(0.25)  # 6 x ~4/s: under the per-client rate, so every answer is a 401

    via_front, direct = healthz_probers(front)
    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        time.sleep(0.3)  # a last probe after the attack
    finally:
        front_samples, direct_samples = via_front.stop(), direct.stop()
        spooled = spool.stop()
    assert not broken, broken
    assert len(rounds) >= 6
    for sent_before_answer, answer in rounds:
        assert answer.status == 401, (answer.status, answer.body[:300])
        assert answer.error()["code"] == "UNAUTHORIZED"
        assert answer.headers["www-authenticate"].startswith("Bearer")
        # Answered from the headers while the body was still going out: what had been sent
        # is what the sockets' buffers hold, nowhere near the 49 MiB.
        assert sent_before_answer is not None and sent_before_answer < 8 * MiB
    assert spooled < 64 * 1024, (spooled, spool.seen)
    new_log = front.service.log_text()[len(log_before) :]
    assert "POST /device/images/upload" not in new_log  # the service never saw the upload
    assert new_log.count("GET /auth/upload") >= len(rounds)  # only the front's question
    slowest = assert_prompt(front_samples, 8, "healthz through nginx")
    assert_prompt(direct_samples, 8, "healthz straight at waitress")
    sent = [s for s, _ in rounds if s is not None]
    record(
        "front_unauthenticated_bodies",
        runs=len(rounds),
        faults=len(rounds),
        requests=len(rounds) + len(front_samples) + len(direct_samples),
        errors=0,
        lost=0,
        max_healthz_ms=round(slowest * 1000),
        bytes_spooled=spooled,
        max_sent_before_401_mib=round(max(sent) / MiB, 2),
        median_sent_before_401_mib=round(statistics.median(sent) / MiB, 2),
    )


# -- uploads that should work, and the other refusals of the upload route ----------------------


def test_authenticated_uploads_pass_through_the_front(front, tokens):
    headers = {"Content-Type": CONTENT_TYPE}
    conn = front.https()
    try:
        by_key = call(
            conn,
            "POST",
            "/device/images/upload",
            body=upload_body(image_bytes(seed=401)),
            headers={**headers, "X-Device-Key": DEVICE_KEY},
        )
        assert by_key.status == 201, by_key.body
        assert json.loads(by_key.body)["success"] is True
        # ~1 MB, far over client_body_buffer_size: with request buffering on, nginx would
        # spool it to its temp folder; streamed, nothing is written there.
        spool = TempSpool([h for h in front.temp_holders() if h[0] != front.service.proc.pid])
        spool.start()
        try:
            by_token = call(
                conn,
                "POST",
                "/device/images/upload",
                body=upload_body(unique_jpeg(402, 1_000_000)),
                headers={**headers, "Authorization": f"Bearer {tokens['write']}"},
            )
        finally:
            nginx_spooled = spool.stop()
        assert by_token.status == 201, by_token.body
        assert nginx_spooled == 0, spool.seen
        # A body of unknown length (chunked), as a device streaming from a generator sends it.
        data = upload_body(image_bytes(seed=404))
        conn.request(
            "POST",
            "/device/images/upload",
            body=iter([data[:1000], data[1000:]]),
            encode_chunked=True,
            headers={**headers, "Authorization": f"Bearer {tokens['write']}"},
        )
        chunked = conn.getresponse()
        assert chunked.status == 201, chunked.read()
        chunked.read()
        read_only = call(
            conn,
            "POST",
            "/device/images/upload",
            body=upload_body(image_bytes(seed=403)),
            headers={**headers, "Authorization": f"Bearer {tokens['read']}"},
        )
        assert read_only.status == 403
        assert read_only.error()["code"] == "FORBIDDEN"
        # A CORS pre-flight carries no credentials and reaches the service (which answers it:
        # nosniff is the service's header, not nginx's).
        preflight = call(
            conn,
            "OPTIONS",
            "/device/images/upload",
            headers={"Origin": "https://review.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status == 204, preflight.body
        assert preflight.headers.get("x-content-type-options") == "nosniff"
        # An OPTIONS with a body is no pre-flight: it must authenticate like the upload.
        with_body = call(
            conn,
            "OPTIONS",
            "/device/images/upload",
            body=b"hello",
            headers={"Access-Control-Request-Method": "POST"},
        )
        assert with_body.status == 401
    finally:
        conn.close()
    # Expect: 100-continue without credentials: refused before the body is asked for.
    with front.connect() as sock:
        sock.sendall(upload_head(ATTACK_BODY, "Expect: 100-continue\r\n"))
        early = read_answer(sock, timeout=2)
    assert early.status == 401 and early.error()["code"] == "UNAUTHORIZED"
    # Over 51 MiB, refused from Content-Length alone, even with a good key.
    with front.connect() as sock:
        sock.sendall(upload_head(60 * MiB, f"X-Device-Key: {DEVICE_KEY}\r\n"))
        too_big = read_answer(sock, timeout=2)
    assert too_big.status == 413 and too_big.error()["code"] == "PAYLOAD_TOO_LARGE"


def test_urls_behind_the_front_are_https_on_the_name_the_client_used(front, tokens):
    """[server] trusted_proxies = ["127.0.0.1"]: the service believes the front's
    X-Forwarded-Proto/-Host, so image_url is the https URL the browser used, and a client
    cannot smuggle its own forwarded headers through the front."""
    conn = front.https()
    try:
        stored = call(
            conn,
            "POST",
            "/device/images/upload",
            body=upload_body(image_bytes(seed=450)),
            headers={"Content-Type": CONTENT_TYPE, "X-Device-Key": DEVICE_KEY},
        )
        assert stored.status in (200, 201), stored.body
        auth = {
            "Authorization": f"Bearer {tokens['read']}",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "http",
        }
        listed = call(conn, "GET", "/data/images?include_image_url=true&limit=1", headers=auth)
        assert listed.status == 200, listed.body
        items = json.loads(listed.body)["data"]
        assert items[0]["image_url"].startswith(f"https://127.0.0.1:{front.tls_port}/files/")
    finally:
        conn.close()


def test_a_device_over_its_rate_gets_the_services_429_not_a_500(front):
    # auth_request turns any answer but 2xx/401/403 into a 500; the front's 500 page gives the
    # service's 429 (with its Retry-After) back instead.
    headers = {"Content-Type": CONTENT_TYPE, "X-Device-Key": PLAIN_DEVICE_KEY}
    conn = front.https()
    answers: list[Answer] = []
    try:
        while len(answers) < 20 and not (answers and answers[-1].status == 429):
            # Past the credential check, each spends one of the device's requests and is then
            # refused by the service for its empty body.
            answers.append(call(conn, "POST", "/device/images/upload", body=b"", headers=headers))
    finally:
        conn.close()
    statuses = [a.status for a in answers]
    assert statuses[-1] == 429, statuses
    assert 500 not in statuses and len(answers) >= 10, statuses  # the burst of 10 got through
    assert answers[-1].error()["code"] == "RATE_LIMITED"
    assert int(answers[-1].headers["retry-after"]) >= 1


# -- per-client limits ---------------------------------------------------------------------------


def test_limits_spare_a_browser_and_answer_429(front):
    # A reviewer's browser: 6 keep-alive connections, a grid of 100 requests, a second grid a
    # second later. /healthz is the cheapest route, so the fastest a browser could go.
    browser = "127.0.0.5"
    statuses: list[int] = []
    lock = threading.Lock()

    def tab(count: int) -> None:
        conn = front.https(browser)
        try:
            for _ in range(count):
                status = call(conn, "GET", "/healthz").status
                with lock:
                    statuses.append(status)
        finally:
            conn.close()

    for burst in range(2):
        if burst:
            time.sleep(1.0)
        threads = [threading.Thread(target=tab, args=(n,)) for n in (17, 17, 17, 17, 16, 16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert statuses == [200] * 200, {s: statuses.count(s) for s in set(statuses)}

    # A flood from one address: the burst of 200 passes, then limit_req answers 429.
    conn = front.https("127.0.0.3")
    answers: list[Answer] = []
    end = time.monotonic() + 15
    try:
        while len(answers) < 800 and time.monotonic() < end:
            answers.append(call(conn, "GET", "/healthz"))
            if sum(a.status == 429 for a in answers) >= 20:
                break
    finally:
        conn.close()
    refused = [i for i, a in enumerate(answers) if a.status == 429]
    assert refused, f"no 429 in {len(answers)} requests"
    assert refused[0] >= 200, f"refused after only {refused[0]} requests"
    assert answers[refused[0]].error()["code"] == "TOO_MANY_REQUESTS"
    assert answers[refused[0]].headers.get("retry-after") == "1"

    # 40 requests held in flight from one address (bodies promised, never sent): limit_conn
    # lets 32 wait for their bodies and answers the rest 429 at once.
    held: list[ssl.SSLSocket] = []
    answered: dict[int, Answer] = {}
    try:
        for _ in range(40):
            sock = front.connect("127.0.0.4")
            sock.sendall(
                b"POST /data/annotations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
            )
            held.append(sock)
        deadline = time.monotonic() + 5
        while len(answered) < 8 and time.monotonic() < deadline:
            for i, sock in enumerate(held):
                if i not in answered and (data := poll_recv(sock)):
                    answered[i] = read_answer(sock, data=data)
            time.sleep(0.05)
        time.sleep(0.3)  # and no more than those 8
        late = [i for i, sock in enumerate(held) if i not in answered and poll_recv(sock)]
    finally:
        for sock in held:
            sock.close()
    statuses = [a.status for a in answered.values()]
    assert statuses == [429] * 8 and not late, (statuses, late)
    assert next(iter(answered.values())).error()["code"] == "TOO_MANY_REQUESTS"

    # A JSON body over 1 MiB is refused from its Content-Length, before it is read.
    with front.connect() as sock:
        sock.sendall(
            b"PATCH /data/images/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n"
        )
        too_big = read_answer(sock, timeout=2)
    assert too_big.status == 413 and too_big.error()["code"] == "PAYLOAD_TOO_LARGE"
    record(
        "front_limits",
        runs=1,
        faults=len(answers) + 40,
        requests=200 + len(answers) + 41,
        errors=0,
        lost=0,
        first_429_after=refused[0],
    )


# -- TLS -----------------------------------------------------------------------------------------


def test_tls_is_on_and_port_80_only_redirects(front):
    with front.connect() as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
    conn = front.https()
    try:
        ok = call(conn, "GET", "/healthz", headers={"X-Request-ID": "front-test-1"})
        assert ok.status == 200 and json.loads(ok.body)["data"]["status"] == "ok"
        assert ok.headers["server"] == "nginx"  # server_tokens off: no version
        assert ok.headers["x-request-id"] == "front-test-1"  # passed through both ways
        replaced = call(conn, "GET", "/healthz", headers={"X-Request-ID": "not valid!"})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
    finally:
        conn.close()
    # Plain HTTP to the TLS port: refused, in the envelope, never served.
    with socket.create_connection(("127.0.0.1", front.tls_port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        plain = read_answer(sock)
    assert plain.status == 400 and plain.error()["details"] == "scheme"
    # Port 80 says where to go and serves nothing.
    conn80 = http.client.HTTPConnection("127.0.0.1", front.http_port, timeout=5)
    try:
        moved = call(conn80, "GET", "/healthz?x=1")
    finally:
        conn80.close()
    assert moved.status == 301
    assert moved.headers["location"] == "https://127.0.0.1/healthz?x=1"
    assert b'"success"' not in moved.body


# -- the baselines: the same attacks straight at waitress ---------------------------------------


def test_without_the_front_an_unauthenticated_body_is_spooled(front):
    spool = TempSpool([(front.service.proc.pid, str(front.service_tmp))])
    spool.start()
    try:
        with socket.create_connection(
            ("127.0.0.1", front.service.port), timeout=10, source_address=(ATTACKER, 0)
        ) as sock:
            sock.sendall(upload_head(ATTACK_BODY))
            sent_before_answer, answer = push_body(sock, ATTACK_BODY)
    finally:
        spooled = spool.stop()
    assert answer.status == 401
    assert sent_before_answer is None  # waitress answered only after reading all 49 MiB
    assert spooled > 40 * MiB, spooled  # ...which it wrote to its temp folder first
    record(
        "front_baseline_body_spooled",
        runs=1,
        faults=1,
        requests=1,
        errors=0,
        lost=0,
        bytes_spooled=spooled,
    )


def test_without_the_front_slow_headers_stall_waitress(front):
    port = front.service.port
    attack = SlowHeaders(
        lambda: socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=(ATTACKER, 0)
        ),
        110,
    )
    try:
        time.sleep(0.5)  # waitress accepts up to its connection_limit, then stops accepting
        stalls = []
        for _ in range(2):
            try:
                answer = fresh(
                    lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE),
                    "GET",
                    "/healthz",
                )
                stalls.append(answer.seconds >= DEADLINE)
            except OSError:  # the timeout: no answer within the deadline
                stalls.append(True)
    finally:
        attack.close()
    assert stalls == [True, True], "waitress answered while at its connection limit"
    # And it recovers once the attackers are gone (so the module's service is left usable).
    deadline = time.monotonic() + 15
    while True:
        try:
            if (
                fresh(
                    lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=1),
                    "GET",
                    "/healthz",
                ).status
                == 200
            ):
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "waitress did not recover"
        time.sleep(0.2)
    record("front_baseline_slow_headers", runs=1, faults=110, requests=2, errors=0, lost=0)


# -- the service down ----------------------------------------------------------------------------


def test_service_down_is_a_502_in_the_envelope(front):
    front.service.kill()
    try:
        conn = front.https()
        try:
            page = call(conn, "GET", "/healthz")
            # The upload's credential check finds no service either: 502, not auth_request's 500.
            upload = call(
                conn,
                "POST",
                "/device/images/upload",
                body=b"",
                headers={"Content-Type": CONTENT_TYPE, "X-Device-Key": DEVICE_KEY},
            )
        finally:
            conn.close()
        for answer in (page, upload):
            assert answer.status == 502, (answer.status, answer.body)
            assert answer.error()["code"] == "BAD_GATEWAY"
    finally:
        # A new service on the same port, so the module's front works for any test after this.
        old = front.service
        front.service = ServeProcess(
            front.service_config, old.port, env={"TMPDIR": str(front.service_tmp)}
        )
        old.close()
        front.service.wait_ready()
    assert fresh(front.https, "GET", "/healthz").status == 200
