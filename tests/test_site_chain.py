"""Devices -> site gateway -> cloud, all real: three devices (``edgecatalog serve`` on SQLite,
each with its own device key) sync to one gateway (``edgecatalog serve`` with ``[site]
enabled``, on PostgreSQL where a cluster is available, else SQLite), which syncs to the
upstream emulator. Hops are SIGKILLed at random points and the cloud drops answers; at the
end the catalogs are compared with each other: every image a device acknowledged is at the
gateway and in the cloud exactly once, with its device, fields and annotations (edits and
deletions mirrored), and the gateway keeps no file without its row."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import make_settings
from serve_process import ServeProcess, free_port, write_config
from upload_helpers import CONTENT_TYPE, image_bytes, upload_body
from upstream_emulator import UpstreamEmulator

from edgecatalog.auth import Authenticator

DEVICES = ("cam-a", "cam-b", "cam-c")
KEYS = {name: "adk_" + f"{i + 1}" * 40 for i, name in enumerate(DEVICES)}
FAST = {"interval_seconds": 0.2, "max_backoff_seconds": 1.0, "timeout_seconds": 5.0}


@dataclass
class Hop:
    """One ``serve`` process that can be killed and started again on the same port."""

    name: str
    config: Path
    port: int
    proc: ServeProcess | None = None
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = ServeProcess(self.config, self.port)
        self.proc.wait_ready(30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill(signal.SIGKILL)
        self.proc.close()
        self.kills += 1

    def close(self) -> None:
        if self.proc is not None:
            self.proc.close()


@dataclass
class Site:
    tmp: Path
    db_url: str  # the gateway's database; "" = SQLite
    emulator: UpstreamEmulator
    gateway: Hop = None  # type: ignore[assignment]
    devices: dict[str, Hop] = field(default_factory=dict)
    token: str = ""
    acknowledged: dict[str, set[str]] = field(default_factory=dict)  # device -> sha256

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def build_site(tmp: Path, db_url: str, emulator: UpstreamEmulator) -> Site:
    site = Site(tmp, db_url, emulator)
    # Every process shares the test's JWT secret, so one write token works on each.
    site.token = Authenticator(make_settings(tmp)).issue_token("chain", "write")
    port = free_port()
    gateway_sections: dict[str, Any] = {
        "site": {"enabled": True},
        "device": {"id": "gateway"},
        "auth": {"device_keys": [f"{name}={key}" for name, key in KEYS.items()]},
        "upstream": {
            "enabled": True,
            "base_url": emulator.base_url,
            "device_key": emulator.device_key,
            "api_token": emulator.api_token,
            "allow_insecure_http": True,
            **FAST,
        },
    }
    if db_url:
        gateway_sections["database"] = {"url": db_url}
    site.gateway = Hop(
        "gateway",
        write_config(tmp / "gateway.toml", tmp / "gateway", port, **gateway_sections),
        port,
    )
    site.gateway.start()
    for name in DEVICES:
        port = free_port()
        config = write_config(
            tmp / f"{name}.toml",
            tmp / name,
            port,
            device={"id": name},
            upstream={
                "enabled": True,
                "base_url": site.gateway.url + "/api",
                "device_key": KEYS[name],
                "allow_insecure_http": True,
                **FAST,
            },
        )
        site.devices[name] = Hop(name, config, port)
        site.devices[name].start()
        site.acknowledged[name] = set()
    return site


def capture(site: Site, name: str, seed: int, rng: random.Random) -> None:
    """One image into a device, as its camera's uploader would; remembered once acknowledged."""
    import hashlib

    data = image_bytes(seed=seed) + seed.to_bytes(4, "big")
    annotations = [
        {
            "class_value": rng.choice(["crack", "dent", "scratch"]),
            "type": "bbox",
            "geometry": [rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), 0.1, 0.1],
            "confidence": round(rng.uniform(0.1, 1.0), 3),
        }
        for _ in range(rng.randint(0, 3))
    ]
    if rng.random() < 0.3:  # a person at the line drew one on the device
        annotations.append(
            {
                "class_value": "hole",
                "type": "bbox",
                "geometry": [0.5, 0.5, 0.2, 0.2],
                "source": "manual",
            }
        )
    meta = {"timestamp": "2026-12-01T08:00:00Z", "model_version": "3.0", "annotations": annotations}
    resp = requests.post(
        site.devices[name].url + "/device/images/upload",
        data=upload_body(data, meta, filename=f"{name}_{seed}.jpg"),
        headers={"Content-Type": CONTENT_TYPE, **site.headers()},
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    site.acknowledged[name].add(hashlib.sha256(data).hexdigest())


def edit_on_device(site: Site, name: str, rng: random.Random) -> None:
    """A reviewer on the device: a field change, an annotation renamed, one deleted."""
    base, headers = site.devices[name].url, site.headers()
    page = requests.get(
        base + "/data/images?include_annotations=true&limit=20", headers=headers, timeout=30
    ).json()["data"]
    for image in rng.sample(page, min(3, len(page))):
        requests.patch(
            f"{base}/data/images/{image['id']}",
            json={"split": rng.choice(["train", "val", "test"]), "annotation_status": "completed"},
            headers=headers,
            timeout=30,
        ).raise_for_status()
        anns = image["annotations"]
        if anns:
            requests.patch(
                f"{base}/data/annotations/{anns[0]['id']}",
                json={"class_value": "reviewed"},
                headers=headers,
                timeout=30,
            ).raise_for_status()
        if len(anns) > 1:
            requests.delete(
                f"{base}/data/annotations/{anns[-1]['id']}", headers=headers, timeout=30
            ).raise_for_status()


def queue_empty(hop: Hop, headers: dict[str, str]) -> bool:
    try:
        status = requests.get(hop.url + "/sync/status", headers=headers, timeout=5).json()["data"]
    except (requests.RequestException, ValueError, KeyError):
        return False
    stuck = status["quarantined_count"] + status["unsupported_count"]
    assert stuck == 0 or hop.name == "gateway", (hop.name, status)
    return status["pending_count"] == 0 and status["waiting_for_token_count"] == 0


def wait_drained(site: Site, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    hops = [*site.devices.values(), site.gateway]
    while time.monotonic() < deadline:
        if all(queue_empty(hop, site.headers()) for hop in hops):
            time.sleep(1.0)  # and still empty a moment later (a pass may have been between)
            if all(queue_empty(hop, site.headers()) for hop in hops):
                return
        time.sleep(0.3)
    logs = {hop.name: hop.proc.log_text()[-1500:] for hop in hops if hop.proc}
    raise AssertionError(f"queues did not drain in {timeout} s: {logs}")


# -- reading the catalogs ---------------------------------------------------------------------

ANNOTATION_SQL = (
    "SELECT i.sha256, a.class_value, a.type, a.geometry, a.source, a.confidence "
    "FROM annotation a JOIN image i ON i.id = a.image_id"
)
IMAGE_SQL = (
    "SELECT i.sha256, d.device_id, i.split, i.annotation_status, i.captured_at, "
    "i.model_version, i.remote_id, i.storage_key FROM image i JOIN device d ON d.id = i.device_id"
)


@dataclass
class Catalog:
    images: dict[str, tuple]  # sha256 -> (device_id, split, status, captured_at, model_version)
    annotations: dict[str, list[tuple]]  # sha256 -> sorted annotations
    remote_ids: dict[str, str]
    paths: set[str]


def _catalog(rows: list[tuple], anns: list[tuple]) -> Catalog:
    images = {r[0]: tuple(r[1:6]) for r in rows}
    by_image: dict[str, list[tuple]] = {sha: [] for sha in images}
    for sha, cls, typ, geometry, source, confidence in anns:
        score = None if confidence is None else round(confidence, 6)
        by_image[sha].append((cls, typ, geometry, source, score))
    return Catalog(
        images,
        {sha: sorted(v, key=repr) for sha, v in by_image.items()},
        {r[0]: r[6] for r in rows},
        {r[7] for r in rows},
    )


def read_sqlite(path: Path) -> Catalog:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _catalog(conn.execute(IMAGE_SQL).fetchall(), conn.execute(ANNOTATION_SQL).fetchall())
    finally:
        conn.close()


def read_gateway(site: Site) -> Catalog:
    if not site.db_url:
        return read_sqlite(site.tmp / "gateway" / "catalog.db")
    import psycopg

    with psycopg.connect(site.db_url) as conn:
        return _catalog(conn.execute(IMAGE_SQL).fetchall(), conn.execute(ANNOTATION_SQL).fetchall())


def files_under(folder: Path) -> set[str]:
    found = set()
    for root, _, names in os.walk(folder):
        for name in names:
            found.add(os.path.relpath(os.path.join(root, name), folder))
    return found


def check_site(site: Site) -> dict[str, int]:
    gateway = read_gateway(site)
    union: dict[str, tuple] = {}
    for name in DEVICES:
        device = read_sqlite(site.tmp / name / "catalog.db")
        assert site.acknowledged[name] <= set(device.images), f"{name} lost an acknowledged image"
        for sha, row in device.images.items():
            assert row[0] == name
            assert sha in gateway.images, f"{name}'s image {sha[:12]} never reached the gateway"
            # The same device, fields, capture time and model at the gateway ...
            assert gateway.images[sha] == row, (name, sha[:12])
            # ... and the same annotations, edits and deletions included.
            assert gateway.annotations[sha] == device.annotations[sha], (name, sha[:12])
        union.update(device.images)
    assert set(gateway.images) == set(union), "the gateway holds images no device has"
    # The cloud: each image exactly once, under its originating device, as the gateway's id.
    emulator = site.emulator
    assert set(emulator.images) == set(union)
    for sha, stored in emulator.images.items():
        assert stored.metadata["device_id"] == union[sha][0]
        assert str(stored.image_id) == gateway.remote_ids[sha]
        for name, value in stored.fields.items():  # changes forwarded: the gateway's values
            column = {"split": 1, "annotation_status": 2}.get(name)
            if column is not None:
                assert value == gateway.images[sha][column], (sha[:12], name)
    # No file at the gateway without its row (uploads live under images/).
    on_disk = files_under(site.tmp / "gateway" / "images" / "raw-data")
    rows = {p.removeprefix("raw-data/") for p in gateway.paths}
    assert on_disk == rows
    return {"images": len(union), "cloud_uploads": emulator.uploads_received}


@pytest.fixture
def gateway_db(request, pg_cluster):
    if isinstance(pg_cluster, str):
        yield ""  # no PostgreSQL here: the same chain with the gateway on SQLite
        return
    url = pg_cluster.new_database()
    yield url
    pg_cluster.drop_database(url)


def run_chain(tmp_path: Path, db_url: str, rounds: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    emulator = UpstreamEmulator(latency=0.01)
    emulator.random_faults(0.08, ("500", "drop"), seed=seed)
    site = build_site(tmp_path, db_url, emulator)
    hops = [site.gateway, *site.devices.values()]
    try:
        n = 0
        for round_no in range(rounds):
            for name in DEVICES:
                for _ in range(rng.randint(2, 5)):
                    n += 1
                    capture(site, name, n, rng)
            if round_no % 3 == 2:
                for name in DEVICES:
                    edit_on_device(site, name, rng)
            time.sleep(rng.uniform(0.0, 0.8))  # the syncs are mid-flight somewhere
            victim = rng.choice(hops)
            victim.kill()
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0.5, 2.0))  # down for a while: the others keep going
            victim.start()
        for name in DEVICES:
            edit_on_device(site, name, rng)  # edits after the last kill reach everyone too
        emulator.random_faults(0.0, ("500",), seed=seed)
        wait_drained(site, 180)
        figures = check_site(site)
        figures["kills"] = sum(hop.kills for hop in hops)
        return figures
    finally:
        for hop in hops:
            hop.close()
        emulator.close()


def test_three_devices_one_gateway_one_cloud_with_kills(tmp_path, gateway_db):
    figures = run_chain(tmp_path, gateway_db, rounds=8, seed=11)
    assert figures["kills"] == 8 and figures["images"] >= 8 * 3 * 2


@pytest.mark.slow
def test_three_devices_one_gateway_one_cloud_many_kills(tmp_path, gateway_db):
    figures = run_chain(tmp_path, gateway_db, rounds=40, seed=29)
    assert figures["kills"] == 40


def test_gateway_killed_ten_times_mid_ingest(tmp_path, gateway_db):
    gateway_killed_mid_ingest(tmp_path, gateway_db, kills=10, seed=5)


@pytest.mark.slow
def test_gateway_killed_thirty_times_mid_ingest(tmp_path, gateway_db):
    gateway_killed_mid_ingest(tmp_path, gateway_db, kills=30, seed=11)


def gateway_killed_mid_ingest(tmp_path, gateway_db, *, kills: int, seed: int) -> None:
    """The devices capture while the gateway is down, then drain their backlog into it while it
    is SIGKILLed ``kills`` times in a row at random points: nothing is duplicated, nothing
    acknowledged is missing, and no file is left without its row."""
    rng = random.Random(seed)
    emulator = UpstreamEmulator(latency=0.01)
    site = build_site(tmp_path, gateway_db, emulator)
    hops = [site.gateway, *site.devices.values()]
    try:
        site.gateway.kill()
        for n in range(90):  # the devices keep capturing while the gateway is away
            capture(site, DEVICES[n % 3], 1000 + n, rng)
        for _ in range(kills):
            site.gateway.start()
            time.sleep(rng.uniform(0.05, 0.8))  # the backlog is arriving
            site.gateway.kill()
        site.gateway.start()
        wait_drained(site, 180)
        figures = check_site(site)
        assert figures["images"] == 90 and site.gateway.kills == kills + 1
        assert figures["cloud_uploads"] >= 90
    finally:
        for hop in hops:
            hop.close()
        emulator.close()


def test_a_full_gateway_makes_devices_wait_not_give_up(tmp_path, gateway_db):
    """A gateway with no room answers 507: the device keeps its images queued however often it
    tries (no quarantine after [upstream] max_attempts), and sends them once there is room."""
    from conftest import seed_image
    from sync_helpers import open_db

    from edgecatalog.models import Image, Outbox, database
    from edgecatalog.sync.worker import SyncWorker

    port = free_port()
    sections: dict[str, Any] = {
        "site": {"enabled": True},
        "auth": {"device_keys": [f"cam-a={KEYS['cam-a']}"]},
        "retention": {"min_free_bytes": 10**15},  # never room
    }
    if gateway_db:
        sections["database"] = {"url": gateway_db}
    gateway = Hop(
        "gateway", write_config(tmp_path / "full.toml", tmp_path / "gw", port, **sections), port
    )
    gateway.start()
    try:
        settings = make_settings(
            tmp_path / "device",
            device__id="cam-a",
            upstream__base_url=gateway.url + "/api",
            upstream__device_key=KEYS["cam-a"],
            upstream__allow_insecure_http=True,
            upstream__max_attempts=3,
            upstream__max_backoff_seconds=1.0,
        )
        open_db(settings)
        for seed in range(3):
            seed_image(settings, filename=f"w{seed}.jpg", seed=seed, device_id="cam-a")
        # Captured under another id (before the device was renamed): refused by the gateway
        # as that one item, which is quarantined; the others are not held up.
        seed_image(settings, filename="old.jpg", seed=9, device_id="cam-old")
        worker = SyncWorker(settings)
        for _ in range(10):  # three times max_attempts
            report = worker.run_pass(manual=True)
            assert report.stopped == "backoff" and report.quarantined == 0
        with database.connection_context():
            assert Outbox.select().where(Outbox.state == "pending").count() == 4
        gateway.kill()
        sections["retention"] = {"min_free_bytes": 0}  # room again
        write_config(gateway.config, tmp_path / "gw", port, **sections)
        gateway.start()
        for _ in range(5):
            worker.run_pass(manual=True)
        with database.connection_context():
            states = sorted(i.sync_state for i in Image.select())
        assert states == ["quarantined", "synced", "synced", "synced"]
        worker.close()
    finally:
        gateway.close()
        if not database.is_closed():
            database.close()
