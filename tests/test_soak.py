"""Soak: the real service (``edgecatalog serve`` as a subprocess) under 16 concurrent readers
with random filters, 2 uploaders and 1 PATCH writer: zero 5xx, zero "database is locked"
(in any answer or in the server's log), p99 read latency and RSS growth reported, and every
acknowledged write found afterwards in the SQLite file (read with stdlib sqlite3). Then the
server is driven past its connection limit: it sheds load (refusals and timeouts, no crash)
and serves again once the flood stops.

~10 s in the normal run; 60 s under ``-m slow``.
"""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from conftest import make_settings
from reliability import LoggedServe, record, rss_kib
from serve_process import free_port, write_config
from upload_helpers import CONTENT_TYPE, unique_jpeg, upload_body

from edgecatalog.auth import Authenticator

READERS, UPLOADERS = 16, 2
LOCKED = "database is locked"


def random_query(rng: random.Random) -> dict[str, str]:
    pool = {
        "split": ["train", "val", "test", "none", "all"],
        "annotation_status": ["pending", "in_progress", "completed"],
        "search": ["frame", "soak", "1", "%", "_", "x"],
        "class_values": ["cat", "dog,cat", "person"],
        "sort": ["created_at", "updated_at", "filename"],
        "order": ["asc", "desc"],
        "limit": ["1", "10", "50", "100"],
        "offset": ["0", "5", "40"],
        "device_id": ["soak-box"],
        "include_annotations": ["true", "false"],
    }
    keys = rng.sample(sorted(pool), rng.randint(0, 4))
    return {k: rng.choice(pool[k]) for k in keys}


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.locked = 0
        self.failures: list[str] = []
        self.read_latencies: list[float] = []
        self.uploaded: set[int] = set()
        self.patched: dict[int, str] = {}

    def answer(self, resp: requests.Response, started: float | None = None) -> None:
        with self.lock:
            self.statuses[resp.status_code] += 1
            if LOCKED in resp.text:
                self.locked += 1
            if resp.status_code >= 500:
                self.failures.append(
                    f"{resp.status_code} {resp.request.method} "
                    f"{resp.request.url}: {resp.text[:200]}"
                )
            if started is not None:
                self.read_latencies.append(time.monotonic() - started)


def upload_one(
    session: requests.Session, url: str, headers: dict[str, str], seed: int, label: str
) -> requests.Response:
    data = upload_body(
        unique_jpeg(seed, 20_000),
        {"annotations": [{"class_value": label, "type": "bbox", "geometry": [0.5, 0.5, 0.2, 0.2]}]},
        f"soak-{seed}.jpg",
    )
    return session.post(
        f"{url}/device/images/upload",
        data=data,
        timeout=30,
        headers={**headers, "Content-Type": CONTENT_TYPE},
    )


class Clients:
    """16 readers, 2 uploaders and 1 PATCH writer on threads, until ``stop`` is set."""

    def __init__(self, url: str, headers: dict[str, str], tally: Tally) -> None:
        self.url, self.headers, self.tally = url, headers, tally
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._guard, args=(self.read, s)) for s in range(READERS)
        ]
        self.threads += [
            threading.Thread(target=self._guard, args=(self.upload, s + 1))
            for s in range(UPLOADERS)
        ]
        self.threads.append(threading.Thread(target=self._guard, args=(self.patch, 7)))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads)

    def _guard(self, step, seed: int) -> None:
        rng, session, n = random.Random(seed), requests.Session(), 0
        while not self.stop.is_set():
            n += 1
            try:
                step(rng, session, seed, n)
            except requests.RequestException as exc:  # a timeout is a failure here
                with self.tally.lock:
                    self.tally.failures.append(f"{step.__name__}: {exc}")

    def read(self, rng: random.Random, session: requests.Session, seed: int, n: int) -> None:
        started = time.monotonic()
        resp = session.get(
            f"{self.url}/data/images", params=random_query(rng), headers=self.headers, timeout=30
        )
        self.tally.answer(resp, started)

    def upload(self, rng: random.Random, session: requests.Session, seed: int, n: int) -> None:
        resp = upload_one(session, self.url, self.headers, seed * 1_000_000 + n, "dog")
        self.tally.answer(resp)
        if resp.status_code == 201:
            with self.tally.lock:
                self.tally.uploaded.add(resp.json()["data"]["image_id"])

    def patch(self, rng: random.Random, session: requests.Session, seed: int, n: int) -> None:
        with self.tally.lock:
            image_id = rng.choice(sorted(self.tally.uploaded))
        split = rng.choice(["train", "val", "test"])
        resp = session.patch(
            f"{self.url}/data/images/{image_id}",
            json={"split": split},
            headers=self.headers,
            timeout=30,
        )
        self.tally.answer(resp)
        if resp.status_code == 200:
            with self.tally.lock:
                self.tally.patched[image_id] = split


def start_server(tmp_path: Path) -> LoggedServe:
    port = free_port()
    config = write_config(
        tmp_path / "serve.toml",
        tmp_path / "data",
        port,
        server={"threads": 8},
        device={"id": "soak-box"},
        logging={"level": "WARNING"},
        retention={"min_free_bytes": 0, "max_disk_percent": 100.0},
    )
    proc = LoggedServe(config, port, tmp_path / "serve.log")
    proc.wait_ready()
    return proc


def drive(proc: LoggedServe, headers: dict[str, str], tally: Tally, seconds: float) -> list[int]:
    """Seed, run the clients for ``seconds``, and return RSS samples (KiB), one a second."""
    session = requests.Session()
    for i in range(20):  # something to read and patch from the start
        resp = upload_one(session, proc.url, headers, 10_000_000 + i, "cat")
        assert resp.status_code == 201, resp.text
        tally.uploaded.add(resp.json()["data"]["image_id"])
    samples = [rss_kib(proc.proc.pid)]
    clients = Clients(proc.url, headers, tally)
    clients.start()
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            samples.append(rss_kib(proc.proc.pid))
    finally:
        clients.join()
    return samples


def run_soak(tmp_path: Path, seconds: float, name: str) -> None:
    tally = Tally()
    headers = {
        "Authorization": "Bearer "
        + Authenticator(make_settings(tmp_path)).issue_token("soak", "write")
    }
    proc = start_server(tmp_path)
    try:
        samples = drive(proc, headers, tally, seconds)
        with sqlite3.connect(tmp_path / "data" / "catalog.db", timeout=30) as conn:
            splits = dict(conn.execute("SELECT id, split FROM image"))
    finally:
        proc.kill(15)
        log_text = proc.log_text()
        proc.close()
    lost = len(tally.uploaded - set(splits)) + sum(
        splits.get(i) != s for i, s in tally.patched.items()
    )
    growth = (max(samples[len(samples) // 2 :]) - samples[0]) / 1024
    first_half = (max(samples[: len(samples) // 2 + 1]) - samples[0]) / 1024
    report(
        name,
        tally,
        seconds,
        lost,
        samples[0],
        growth,
        errors=len(tally.failures) + tally.locked + (LOCKED in log_text),
    )
    assert not tally.failures, tally.failures[:5]
    assert tally.locked == 0 and LOCKED not in log_text, log_text[-2000:]
    assert lost == 0
    assert len(tally.read_latencies) > READERS * seconds  # the readers really ran
    assert len(tally.uploaded) > 20 and tally.patched
    # Bounded: well under what the run uploaded, and no steep climb after the first half.
    assert growth < 80, samples
    assert growth - first_half < 40, samples


def report(
    name: str, tally: Tally, seconds: float, lost: int, base_rss: int, growth: float, errors: int
) -> None:
    lat = sorted(tally.read_latencies)
    p99 = lat[max(int(len(lat) * 0.99) - 1, 0)] if lat else float("nan")
    record(
        name,
        runs=1,
        faults=0,
        requests=sum(tally.statuses.values()),
        errors=errors,
        lost=lost,
        seconds=seconds,
        reads=len(lat),
        uploads=len(tally.uploaded),
        patches=len(tally.patched),
        p99_read_ms=round(p99 * 1000, 1),
        p50_read_ms=round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        rss_base_mib=round(base_rss / 1024, 1),
        rss_growth_mib=round(growth, 1),
        statuses={str(k): v for k, v in tally.statuses.items()},
    )


def test_soak_short(tmp_path):
    run_soak(tmp_path, 10.0, "soak_10s")


@pytest.mark.slow
def test_soak_long(tmp_path):
    run_soak(tmp_path, 60.0, "soak_60s")


def test_sheds_load_past_the_connection_limit_and_recovers(tmp_path):
    port = free_port()
    config = write_config(
        tmp_path / "serve.toml",
        tmp_path / "data",
        port,
        server={"connection_limit": 8, "threads": 2, "channel_timeout": 5},
        logging={"level": "WARNING"},
    )
    proc = LoggedServe(config, port, tmp_path / "serve.log")
    token = Authenticator(make_settings(tmp_path)).issue_token("r", "read")
    headers = {"Authorization": f"Bearer {token}"}
    held: list[socket.socket] = []
    outcomes: Counter[str] = Counter()
    try:
        proc.wait_ready()
        # Fill every slot with connections that send half a request and wait.
        for _ in range(40):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(b"GET /data/images HTTP/1.1\r\nHost: localhost\r\n")
                held.append(sock)
            except OSError:
                outcomes["refused while flooding"] += 1

        def one(_: int) -> None:
            try:
                resp = requests.get(f"{proc.url}/data/images", headers=headers, timeout=1.5)
                outcomes[f"status {resp.status_code}"] += 1
            except requests.RequestException:
                outcomes["refused or timed out"] += 1

        callers = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(timeout=30)
        assert proc.proc.poll() is None, "the server died under the flood"
        shed = outcomes["refused or timed out"] + outcomes["refused while flooding"]
        assert shed > 0, outcomes  # it did not simply take everything
        assert not [k for k in outcomes if k.startswith("status 5") and k != "status 503"]
    finally:
        for sock in held:
            sock.close()
    try:
        deadline, recovered_after = time.monotonic() + 15, None
        start = time.monotonic()
        while time.monotonic() < deadline:
            try:
                if (
                    requests.get(f"{proc.url}/data/images", headers=headers, timeout=2).status_code
                    == 200
                ):
                    recovered_after = time.monotonic() - start
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        assert recovered_after is not None, "no recovery within 15 s after the flood"
        ok = sum(
            requests.get(f"{proc.url}/data/images", headers=headers, timeout=5).status_code == 200
            for _ in range(20)
        )
        assert ok == 20
        record(
            "connection_limit_flood",
            runs=1,
            faults=len(held) + 40,
            requests=len(held) + 40 + 20,
            errors=0,
            lost=0,
            shed=outcomes["refused or timed out"] + outcomes["refused while flooding"],
            recovered_after_s=round(recovered_after, 2),
            outcomes=dict(outcomes),
        )
    finally:
        proc.close()
