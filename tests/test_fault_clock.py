"""Clock jumps between restarts: the real service runs as a subprocess under libfaketime
(Debian's ``libfaketime``; skipped with the reason when it is missing), so every clock it reads
(time(), clock_gettime, datetime) is set back or forward by hours, as a device without RTC or
NTP would be, while the monotonic clock stays real. Tokens are minted with the same shifted
clock, as a token service on the device would.

Phases on one data folder: real clock, -3 h, +5 h, real again; uploads in each. After each
restart: every image is listed exactly once in every sort order (walking pages), batches
account for every image and at most one is collecting per device, and every freshly issued
signed URL serves its image. A URL signed before a jump is checked too: still valid after a
jump back, expired (403, while a fresh one works) after a jump forward past its expiry.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from reliability import LoggedServe, record
from serve_process import free_port, write_config
from upload_helpers import CONTENT_TYPE, unique_jpeg, upload_body

FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
)
HOUR = 3600
SECRET = "t" * 40  # serve_process.write_config's secret


def faketime_lib() -> str:
    for path in FAKETIME_LIBS:
        if os.path.exists(path):
            return path
    pytest.skip("libfaketime is not installed (apt-get install libfaketime)")


def token(offset: int) -> str:
    now = int(time.time()) + offset
    return jwt.encode(
        {"sub": "clock", "scope": "read write", "iat": now - 5, "exp": now + HOUR},
        SECRET,
        algorithm="HS256",
    )


def walk(url: str, headers: dict[str, str], **query: str) -> list[dict]:
    rows, offset = [], 0
    for _ in range(100):  # bounded
        page = requests.get(
            f"{url}/data/images",
            headers=headers,
            timeout=10,
            params={**query, "limit": "7", "offset": str(offset)},
        ).json()
        rows += page["data"]
        offset += 7
        if offset >= page["meta"]["total"]:
            return rows
    raise AssertionError("page walk did not end")


def check_phase(proc: LoggedServe, headers: dict[str, str], acked: dict[int, str]) -> int:
    """Everything listed once in every order, batches consistent, fresh URLs work."""
    requests_sent = 0
    for sort in ("created_at", "updated_at", "filename"):
        for order in ("asc", "desc"):
            rows = walk(proc.url, headers, sort=sort, order=order)
            requests_sent += len(rows) // 7 + 1
            ids = [r["id"] for r in rows]
            assert sorted(ids) == sorted(acked), (sort, order, len(ids), len(acked))
            keys = [(r[sort], r["id"]) for r in rows]
            assert keys == sorted(keys, reverse=(order == "desc")), (sort, order)
    batches = requests.get(
        f"{proc.url}/data/batches?limit=100", headers=headers, timeout=10
    ).json()["data"]
    rows = walk(proc.url, headers)
    per_batch: dict[int, int] = {}
    for row in rows:
        per_batch[row["batch_id"]] = per_batch.get(row["batch_id"], 0) + 1
    by_id = {b["id"]: b for b in batches}
    assert set(per_batch) <= set(by_id)  # no image in a batch that is not listed
    for batch_id, n in per_batch.items():
        assert by_id[batch_id]["image_count"] == n, (batch_id, by_id[batch_id], n)
    assert sum(1 for b in batches if b["stage"] == "collecting") <= 1
    # Fresh signed URLs serve every image.
    listed = requests.get(
        f"{proc.url}/data/images?limit=100&include_image_url=true", headers=headers, timeout=10
    ).json()["data"]
    for row in listed:
        url = urlsplit(row["image_url"])
        got = requests.get(f"{proc.url}{url.path}?{url.query}", timeout=10)
        assert got.status_code == 200, (row["id"], got.text[:200])
        assert hashlib.sha256(got.content).hexdigest() == acked[row["id"]]
    return requests_sent + 2 + len(listed)


def test_clock_jumps_between_restarts(tmp_path):
    lib = faketime_lib()
    data = tmp_path / "data"
    port = free_port()
    config = write_config(
        tmp_path / "serve.toml",
        data,
        port,
        device={"id": "clock-box"},
        batches={"window_minutes": 30.0},
        logging={"level": "WARNING"},
        retention={"min_free_bytes": 0, "max_disk_percent": 100.0},
    )
    acked: dict[int, str] = {}
    old_url = ""
    sent = 0
    phases = (("real", 0), ("back 3 h", -3 * HOUR), ("forward 5 h", 5 * HOUR), ("real", 0))
    outcomes = {}
    for n, (name, offset) in enumerate(phases):
        env = (
            {
                "LD_PRELOAD": lib,
                "FAKETIME": f"{offset:+d}s",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                "FAKETIME_NO_CACHE": "1",
            }
            if offset
            else {}
        )
        proc = LoggedServe(config, port, tmp_path / f"serve-{n}.log", env=env)
        try:
            proc.wait_ready(timeout=30)
            headers = {"Authorization": f"Bearer {token(offset)}"}
            if old_url:
                got = requests.get(old_url, timeout=10)
                outcomes[f"url from before, after '{name}'"] = got.status_code
            for i in range(8):
                body = unique_jpeg(n * 100 + i, 20_000)
                resp = requests.post(
                    f"{proc.url}/device/images/upload",
                    timeout=30,
                    data=upload_body(body, None, f"p{n}-{i}.jpg"),
                    headers={**headers, "Content-Type": CONTENT_TYPE},
                )
                assert resp.status_code == 201, (name, resp.text)
                acked[resp.json()["data"]["image_id"]] = hashlib.sha256(body).hexdigest()
                sent += 1
            # The service really ran on the shifted clock (else this test proves nothing).
            newest = requests.get(
                f"{proc.url}/data/images/{max(acked)}", headers=headers, timeout=10
            ).json()["data"]["created_at"]
            stamp = datetime.fromisoformat(newest.replace("Z", "+00:00")).timestamp()
            assert abs(stamp - (time.time() + offset)) < 120, (name, newest)
            sent += check_phase(proc, headers, acked)
            first = requests.get(
                f"{proc.url}/data/images/{min(acked)}?include_image_url=true",
                headers=headers,
                timeout=10,
            ).json()["data"]["image_url"]
            old_url = f"{proc.url}{urlsplit(first).path}?{urlsplit(first).query}"
        finally:
            proc.close()
    # Signed before the jump back (real clock): still valid 3 h earlier. Signed 3 h back,
    # used 5 h ahead: expired, and a fresh URL (checked in the phase) served the image.
    assert outcomes["url from before, after 'back 3 h'"] == 200
    assert outcomes["url from before, after 'forward 5 h'"] == 403
    record(
        "clock_jumps",
        runs=len(phases),
        faults=len(phases) - 2 + 1,
        requests=sent,
        errors=0,
        lost=0,
        images=len(acked),
        old_url_statuses=outcomes,
    )
