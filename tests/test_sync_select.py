"""``[upstream] select`` rules, quotas and windows with the real worker against the emulator:
what goes (recomputed here from each file's bytes and the documented rule, never by the code
under test), in which order, what is kept local as ``skipped`` or waits as ``deferred``, and
that deciding again never sends anything twice. Bad rules stop start-up naming the rule."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import time
from collections import Counter

import pytest
from conftest import jpeg_bytes, make_settings, seed_image
from sync_helpers import box, drain, open_db, sync_settings
from test_doctor import run_cli

from edgecatalog import create_app
from edgecatalog.catalog import NewAnnotation
from edgecatalog.config import ConfigError, load_settings
from edgecatalog.models import Image, database
from edgecatalog.sync.commands import run_sync
from edgecatalog.sync.state import format_report, status_report
from edgecatalog.sync.worker import SyncWorker
from edgecatalog.timeutil import format_ts

RULES = [
    {"match": "class:crack,dent"},
    {"match": "confidence:0.3-0.6"},
    {"match": "manual", "priority": 2},
    {"match": "pinned"},
    {"match": "device:cam09 unannotated"},
    {"match": "*", "share": 0.3, "priority": 9},
]


def in_sample(data: bytes, share: float) -> bool:
    """The documented sampling rule, from the file's own bytes."""
    return int(hashlib.sha256(data).hexdigest()[:16], 16) < int(share * 2**64)


def expected_priority(spec: dict) -> int | None:
    """Which priority RULES give an image described by ``spec`` (None: not sent)."""
    classes = {a[0] for a in spec["anns"]}
    confs = [a[1] for a in spec["anns"]]
    if classes & {"crack", "dent"}:
        return 1
    if any(0.3 <= c <= 0.6 for c in confs):
        return 2
    if any(a[2] == "manual" for a in spec["anns"]):
        return 2
    if spec["pinned"]:
        return 4
    if spec["device"] == "cam09" and not spec["anns"]:
        return 5
    return 9 if in_sample(spec["data"], 0.3) else None


def make_specs(n: int) -> list[dict]:
    specs = []
    for i in range(n):
        kind = i % 7
        anns = {
            0: [("crack", 0.9, "model")],
            1: [("scratch", 0.45, "model")],
            2: [("scratch", 0.95, "manual")],
            3: [("scratch", 0.95, "model")],
            4: [],
            5: [("dent", 0.2, "model"), ("scratch", 0.5, "model")],
            6: [("scratch", 0.99, "model")],
        }[kind]
        specs.append(
            {
                "seed": i,
                "data": jpeg_bytes(seed=i),
                "anns": anns,
                "pinned": kind == 3 and i % 2 == 0,
                "device": "cam09" if kind == 4 and i % 3 else "cam01",
            }
        )
    return specs


def seed_specs(settings, specs: list[dict]) -> dict[str, dict]:
    by_sha = {}
    for spec in specs:
        anns = tuple(
            NewAnnotation(cls, "bbox", (0.5, 0.5, 0.2, 0.2), confidence=conf, source=source)
            for cls, conf, source in spec["anns"]
        )
        image = seed_image(
            settings,
            filename=f"f{spec['seed']}.jpg",
            data=spec["data"],
            annotations=anns,
            device_id=spec["device"],
        )
        if spec["pinned"]:
            # Pinning has its own command elsewhere; here the column is what a rule reads.
            Image.update(pinned=True).where(Image.id == image.id).execute()
        spec["id"] = image.id
        by_sha[image.sha256] = spec
    return by_sha


def uploads_in_order(emulator) -> list[str]:
    """SHA-256 of every image the emulator stored, in the order it stored them."""
    stored = sorted(emulator.images.values(), key=lambda s: int(s.image_id))
    return [s.sha256 for s in stored]


def metrics_text(settings) -> str:
    from edgecatalog.auth import Authenticator

    token = Authenticator(settings).issue_token("t", "read")
    got = (
        create_app(settings)
        .test_client()
        .get("/metrics", headers={"Authorization": f"Bearer {token}"})
    )
    return got.get_data(as_text=True)


def plain_states() -> dict[int, str]:
    return dict(database.execute_sql("SELECT id, sync_state FROM image").fetchall())


@pytest.fixture
def env(tmp_path, emulator, database_url):
    made = []

    def make(clock=time.time, **overrides):
        settings = sync_settings(tmp_path, emulator, database__url=database_url, **overrides)
        open_db(settings)
        worker = SyncWorker(settings, clock=clock)
        made.append(worker)
        return settings, worker

    yield make
    for worker in made:
        worker.close()
    if not database.is_closed():
        database.close()


@pytest.mark.both_engines
def test_rules_decide_what_goes_and_priority_decides_the_order(env, emulator):
    settings, worker = env(upstream__select=RULES, upstream__batch_size=7)
    by_sha = seed_specs(settings, make_specs(70))
    drain(worker)
    expected = {sha for sha, spec in by_sha.items() if expected_priority(spec) is not None}
    sent = uploads_in_order(emulator)
    assert set(sent) == expected and len(sent) == len(expected)
    priorities = [expected_priority(by_sha[sha]) for sha in sent]
    assert priorities == sorted(priorities)  # all queued before the drain: priority first
    order = [by_sha[sha]["id"] for sha in sent]
    for p in set(priorities):  # oldest first within a priority
        ids = [i for i, q in zip(order, priorities) if q == p]
        assert ids == sorted(ids)
    states = plain_states()
    skipped = {spec["id"] for sha, spec in by_sha.items() if sha not in expected}
    assert skipped and {i for i, s in states.items() if s == "skipped"} == skipped
    assert {i for i, s in states.items() if s == "synced"} == {
        by_sha[sha]["id"] for sha in expected
    }
    report = status_report(settings)
    assert report["skipped_count"] == len(skipped) and report["pending_count"] == 0
    assert report["throughput_images_per_minute"] > 0
    # Skipped images are filterable on the list, and the metrics count them per rule.
    app = create_app(settings)
    client = app.test_client()
    from edgecatalog.auth import Authenticator

    token = Authenticator(settings).issue_token("t", "read")
    got = client.get(
        "/data/images?sync_state=skipped&limit=100", headers={"Authorization": f"Bearer {token}"}
    ).get_json()["data"]
    assert {img["id"] for img in got} == skipped
    metrics = metrics_text(settings)
    assert f'edgecatalog_sync_rule_skipped{{rule="*"}} {float(len(skipped))}' in metrics
    crack = sum(1 for sha in expected if expected_priority(by_sha[sha]) == 1)
    assert f'edgecatalog_sync_rule_sent_images_total{{rule="class:crack,dent"}} {float(crack)}' in (
        metrics
    )


@pytest.mark.both_engines
def test_changed_rules_decide_again_and_never_resend(env, emulator, tmp_path):
    settings, worker = env(
        upstream__select=[{"match": "class:crack"}, {"match": "*", "share": 0.2}]
    )
    specs = make_specs(40)
    by_sha = seed_specs(settings, specs)
    drain(worker)
    first = set(emulator.images)
    assert first and len(first) < len(by_sha)
    # Wider rules: a start-up with them decides again what was not sent, and sends it once.
    _, wider = env(upstream__select=[{"match": "*", "share": 1.0}])
    drain(wider)
    assert set(emulator.images) == set(by_sha)
    stores = Counter(
        e.idempotency_key for e in emulator.log if e.method == "POST" and e.status == 201
    )
    assert all(count == 1 for count in stores.values()) and len(stores) == len(by_sha)
    # Narrower rules and --reselect: nothing already sent comes back, nothing is skipped.
    narrow = sync_settings(
        tmp_path, emulator, database__url=settings["database.url"], upstream__select=[]
    )
    narrow = narrow.replace(upstream__select=[{"match": "class:nothing"}])
    out = io.StringIO()
    assert run_sync(narrow, once=False, retry=False, reselect=True, out=out) == 0
    assert out.getvalue().strip() == "reselected: 0 to send, 0 skipped"
    open_db(settings)
    assert set(plain_states().values()) == {"synced"}


@pytest.mark.both_engines
def test_quota_defers_to_the_next_period(env, emulator):
    start = time.time()
    rules = [{"match": "class:crack", "per_hour": 3}, {"match": "*", "per_hour_bytes": 1}]
    settings, worker = env(upstream__select=rules, clock=lambda: start)
    for i in range(6):
        seed_image(settings, filename=f"c{i}.jpg", seed=i, annotations=(box("crack", *[0.5] * 4),))
    for i in range(3):
        seed_image(settings, filename=f"p{i}.jpg", seed=100 + i)
    drain(worker)
    # Three cracks, and one plain image: larger than its byte quota, it goes alone.
    assert len(emulator.images) == 4
    states = Counter(plain_states().values())
    assert states == {"synced": 4, "deferred": 5}
    report = status_report(settings)
    assert report["deferred_count"] == 5 and report["pending_count"] == 0
    assert report["deferred_bytes"] == sum(
        size
        for (size,) in database.execute_sql(
            "SELECT byte_size FROM image WHERE sync_state = 'deferred'"
        ).fetchall()
    )
    metrics = metrics_text(settings)
    assert 'edgecatalog_sync_rule_deferred{rule="class:crack"} 3.0' in metrics
    assert 'edgecatalog_sync_rule_deferred{rule="*"} 2.0' in metrics
    # The next hour: three more cracks, one more plain image.
    _, later = env(upstream__select=rules, clock=lambda: start + 3600)
    drain(later)
    assert len(emulator.images) == 8
    assert Counter(plain_states().values()) == {"synced": 8, "deferred": 1}


@pytest.mark.both_engines
def test_a_daily_quota_waits_for_the_next_local_day(env, emulator):
    start = time.time()
    local = dt.datetime.fromtimestamp(start)
    rules = [{"match": "*", "per_day": 2}]
    settings, worker = env(upstream__select=rules, clock=lambda: start)
    for i in range(5):
        seed_image(settings, filename=f"d{i}.jpg", seed=i)
    drain(worker)
    assert len(emulator.images) == 2
    if (local + dt.timedelta(hours=1)).date() == local.date():
        _, later = env(upstream__select=rules, clock=lambda: start + 3600)
        drain(later)
        assert len(emulator.images) == 2  # the same day: still held
    tomorrow = (local + dt.timedelta(days=1)).replace(hour=12).timestamp()
    _, next_day = env(upstream__select=rules, clock=lambda: tomorrow)
    drain(next_day)
    assert len(emulator.images) == 4
    assert Counter(plain_states().values()) == {"synced": 4, "deferred": 1}


def local_window(start_ts: float, minutes_from_now: int, length: int) -> str:
    """A window in the device's local time, starting ``minutes_from_now`` after ``start_ts``."""
    base = dt.datetime.fromtimestamp(start_ts) + dt.timedelta(minutes=minutes_from_now)
    end = base + dt.timedelta(minutes=length)
    return f"{base:%H:%M}-{end:%H:%M}"


@pytest.mark.both_engines
def test_windows_hold_all_but_always_priority(env, emulator):
    now = [time.time()]
    window = local_window(now[0], 120, 60)
    rules = [{"match": "class:crack"}, {"match": "*"}]
    settings, worker = env(
        upstream__select=rules,
        upstream__windows=[window],
        upstream__always_priority=1,
        clock=lambda: now[0],
    )
    cracks = [
        seed_image(settings, filename=f"c{i}.jpg", seed=i, annotations=(box("crack", *[0.5] * 4),))
        for i in range(3)
    ]
    others = [seed_image(settings, filename=f"o{i}.jpg", seed=50 + i) for i in range(4)]
    drain(worker)
    assert set(emulator.images) == {img.sha256 for img in cracks}
    report = status_report(settings)  # on the real clock: the worker's, still outside
    opens = dt.datetime.fromtimestamp(now[0]).replace(second=0, microsecond=0)
    opens += dt.timedelta(minutes=120)
    assert not report["in_window"]
    assert report["next_window_at"] == format_ts(int(opens.timestamp()) * 1_000_000)
    pending = {p["priority"]: p["count"] for p in report["pending_by_priority"]}
    assert pending == {2: 4}
    # The time to drain: the pending bytes at the rate the cracks just went.
    (left,) = database.execute_sql(
        "SELECT sum(byte_size) FROM image WHERE sync_state = 'pending'"
    ).fetchone()
    assert report["drain_eta_seconds"] == pytest.approx(
        int(left) / report["throughput_bytes_per_second"], rel=0.01, abs=0.1
    )
    now[0] += 125 * 60  # inside the window
    drain(worker)
    assert set(emulator.images) == {img.sha256 for img in cracks + others}


def test_status_prints_the_queue_by_priority(env, emulator):
    settings, worker = env(upstream__select=RULES, upstream__windows=["00:00-00:01"])
    seed_specs(settings, make_specs(14))
    drain(worker)  # decides; the window lets nothing through
    text = format_report(status_report(settings))
    assert "skipped count" in text and "next window at" in text
    assert "pending by priority" in text


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('select = [{ match = "*", share = 1.5 }]', ["rule 1", "share must be between 0 and 1"]),
        ('select = [{ match = "class:a" }, { match = "" }]', ["rule 2", "match is empty"]),
        ('select = [{ match = "colour:red" }]', ["rule 1", "unknown term 'colour'"]),
        ('select = [{ match = "*", per_hour = -1 }]', ["rule 1", "per_hour must be >= 0"]),
        ('select = [{ match = "confidence:0.6-0.3" }]', ["rule 1", "LOW-HIGH"]),
        ('select = [{ match = "*", sharee = 1 }]', ["rule 1", "unknown key 'sharee'"]),
        ('select = [{ match = "* pinned" }]', ["rule 1", "stands alone"]),
        ('select = [{ match = "*", priority = 0 }]', ["rule 1", "priority must be >= 1"]),
        ('select = ["*"]', ["rule 1", "expected a table"]),
        ('windows = ["22:00-6"]', ["upstream.windows", "HH:MM-HH:MM"]),
        ('windows = ["25:00-06:00"]', ["upstream.windows", "'25:00-06:00'"]),
        ('windows = ["06:00-06:00"]', ["upstream.windows", "must not start where it ends"]),
        ("always_priority = -1", ["upstream.always_priority", ">= 0"]),
    ],
)
def test_bad_rules_stop_start_up_naming_the_rule(tmp_path, toml, words):
    path = tmp_path / "c.toml"
    path.write_text(f"[upstream]\n{toml}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    for word in ["upstream." if "upstream." not in words[0] else words[0], *words]:
        assert word in str(raised.value)
    if words[0] == "rule 1" and "share" in words[1]:
        # The command line says the same in one line, without a traceback.
        done = run_cli("check-config", "--config", str(path))
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert "upstream.select" in done.stderr and "rule 1" in done.stderr


def test_bad_rules_from_the_environment(tmp_path):
    env = {"EDGECATALOG_UPSTREAM_SELECT": '[{"match": "*", "share": 2}]'}
    with pytest.raises(ConfigError, match=r"EDGECATALOG_UPSTREAM_SELECT.*rule 1.*share"):
        load_settings(environ=env)
    env["EDGECATALOG_UPSTREAM_SELECT"] = "not json"
    with pytest.raises(ConfigError, match="JSON array"):
        load_settings(environ=env)
    env["EDGECATALOG_UPSTREAM_SELECT"] = '[{"match": "class:crack"}]'
    assert load_settings(environ=env)["upstream.select"] == [{"match": "class:crack"}]


def test_rules_after_a_catch_all_warn_in_check_config_and_doctor(tmp_path):
    settings = make_settings(tmp_path)
    path = tmp_path / "c.toml"
    path.write_text(
        f'[storage]\ndata_dir = "{settings.data_dir}"\n[auth]\njwt_secret = "{"s" * 40}"\n'
        '[upstream]\nselect = [{ match = "class:crack" }, { match = "*", share = 0.1 }, '
        '{ match = "pinned" }]\n'
    )
    done = run_cli("check-config", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert "rule 3 ('pinned') can never match" in done.stderr
    doctor = run_cli("doctor", "--config", str(path))
    assert "Traceback" not in doctor.stderr
    assert any(
        line.startswith("WARN") and "rule 3 ('pinned') can never match" in line
        for line in doctor.stdout.splitlines()
    ), doctor.stdout


def test_a_rules_report_is_json(env, emulator):
    settings, worker = env(upstream__select=[{"match": "*", "share": 0.5}])
    seed_specs(settings, make_specs(6))
    drain(worker)
    json.dumps(status_report(settings))  # every figure is plain JSON


def test_skipped_files_are_evicted_like_synced_ones_and_stay_skipped(env, emulator):
    from test_retention import MB, SimulatedDisk

    from edgecatalog import retention

    settings, worker = env(
        upstream__select=[{"match": "class:keep"}],
        retention__max_disk_percent=50.0,
        retention__min_free_bytes=0,
    )
    images = [
        seed_image(
            settings,
            filename=f"r{i}.jpg",
            data=jpeg_bytes(seed=i) + os.urandom(100_000),
            annotations=(box("keep" if i % 3 == 0 else "other", *[0.5] * 4),),
        )
        for i in range(9)
    ]
    drain(worker)
    kept = [img for i, img in enumerate(images) if i % 3 == 0]
    assert set(emulator.images) == {img.sha256 for img in kept}
    # One image is past a quota instead: its file must stay.
    Image.update(sync_state="deferred").where(Image.id == images[8].id).execute()
    disk = SimulatedDisk(settings.data_dir, total=10 * MB, other=0)
    retention.use_disk_usage(disk)
    try:
        disk.other = disk.total // 2 - disk.used() + 450_000  # ~5 files over the line
        report = retention.evict_if_needed(settings)
    finally:
        retention.use_disk_usage(None)
    assert report.image_ids == [img.id for img in images[:5]]  # oldest first, either state
    # Deciding again with wider rules cannot bring back a file that is gone.
    _, wider = env(upstream__select=[{"match": "*"}])
    drain(wider)
    evicted_skipped = {img.sha256 for img in images[:5]} - {img.sha256 for img in kept}
    assert not evicted_skipped & set(emulator.images)
    states = dict(database.execute_sql("SELECT id, sync_state FROM image").fetchall())
    assert all(states[img.id] == "skipped" for img in images[:5] if img.sha256 in evicted_skipped)
    assert all(states[img.id] == "synced" for img in images[5:8])


@pytest.mark.both_engines
def test_a_site_gateway_forwards_by_its_own_rules(tmp_path, emulator, database_url):
    from test_site_gateway import KEY_A, KEY_B, gateway_settings, upload
    from upload_helpers import image_bytes

    settings = gateway_settings(
        tmp_path,
        database_url,
        upstream__base_url=emulator.base_url,
        upstream__device_key=emulator.device_key,
        upstream__select=[{"match": "device:cam-a"}, {"match": "*", "share": 0.0}],
    )
    client = create_app(settings).test_client()
    sent = {}
    for i in range(8):
        data = image_bytes(seed=300 + i)
        key = KEY_A if i % 2 else KEY_B
        got = upload(client, key, data, {"device_id": "cam-a" if i % 2 else "cam-b"})
        assert got.status_code == 201, got.get_data(as_text=True)
        sent[hashlib.sha256(data).hexdigest()] = i % 2 == 1
    worker = SyncWorker(settings)
    try:
        drain(worker)
    finally:
        worker.close()
    assert set(emulator.images) == {sha for sha, from_a in sent.items() if from_a}
    states = Counter(s for (s,) in database.execute_sql("SELECT sync_state FROM image"))
    assert states == {"synced": 4, "skipped": 4}


@pytest.mark.both_engines
def test_changes_keep_their_order_and_priority_images_overtake_them(env, emulator):
    from edgecatalog import catalog

    rules = [{"match": "class:crack"}, {"match": "*"}]
    settings, worker = env(
        upstream__select=rules, upstream__batch_size=1, upstream__api_token=emulator.api_token
    )
    plain = seed_image(settings, filename="plain.jpg", seed=1)
    drain(worker)
    assert plain.sha256 in emulator.images
    for split in ("train", "val", "test"):  # three edits of one image upstream, in order
        catalog.update_image(plain.id, {"split": split})
    crack = seed_image(settings, filename="c.jpg", seed=2, annotations=(box("crack", *[0.5] * 4),))
    worker.run_pass(manual=True)  # one row a pass: the priority image first
    assert crack.sha256 in emulator.images
    assert not [e for e in emulator.log if e.method == "PATCH"]
    drain(worker)
    remote = emulator.images[plain.sha256].image_id
    assert emulator.by_id[str(remote)].fields.get("split") == "test"  # the last edit won
    assert [e for e in emulator.log if e.method == "PATCH" and e.status == 200]
