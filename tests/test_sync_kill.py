"""``edgecatalog sync`` killed with SIGKILL at random points, then restarted: nothing is lost
and nothing is duplicated upstream. The worker runs as a real separate process against the
emulator, with random transient faults and dropped answers, while local changes keep coming."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import jpeg_bytes, seed_image
from sync_helpers import box, open_db, sync_settings
from upstream_emulator import UpstreamEmulator

from edgecatalog import catalog
from edgecatalog.db import write_tx
from edgecatalog.models import Annotation, Image, Outbox, database
from edgecatalog.timeutil import now_us


def _config(tmp_path, settings) -> str:
    text = (
        f'[storage]\ndata_dir = "{settings.data_dir}"\n[auth]\njwt_secret = "{"t" * 40}"\n'
        f"[upstream]\nbase_url = {json.dumps(settings['upstream.base_url'])}\n"
        f'device_key = "adk_test"\napi_token = "tok_test"\nbatch_size = 4\n'
        "interval_seconds = 0.1\nmax_backoff_seconds = 1.0\ntimeout_seconds = 2.0\n"
        "max_attempts = 1000\n"
        '[logging]\nlevel = "WARNING"\n'
    )
    path = tmp_path / "sync.toml"
    path.write_text(text)
    return str(path)


def _local_change(rng: random.Random, expected: dict[int, dict], annotated: dict[int, str]):
    synced = list(Image.select().where(Image.sync_state == "synced"))
    if not synced:
        return
    image = rng.choice(synced)
    split = rng.choice(["train", "val", "test"])
    catalog.update_image(image.id, {"split": split})
    expected[image.id] = {"split": split}
    if image.id not in annotated and rng.random() < 0.5:
        now = now_us()
        label = f"late{image.id}"
        with write_tx():
            ann = Annotation.create(
                image=image.id,
                class_value=label,
                type="bbox",
                geometry="[1,1,5,5]",
                x_center=0.3,
                y_center=0.3,
                width=0.1,
                height=0.1,
                created_at=now,
                updated_at=now,
            )
            catalog.queue_change(image, "create_annotation", {"annotation_id": ann.id}, now)
        annotated[image.id] = label


def kill_runs(tmp_path, runs: int, images: int, seed: int) -> None:
    rng = random.Random(seed)
    emu = UpstreamEmulator(latency=0.03)
    emu.random_faults(0.1, ("500", "drop"), seed=seed)
    try:
        settings = sync_settings(tmp_path, emu)
        open_db(settings)
        # The index makes every file distinct (JPEG may encode two seeds alike).
        local = [
            seed_image(
                settings,
                filename=f"k{i}.jpg",
                data=jpeg_bytes(seed=i) + b"%d" % i,
                annotations=(box("a", 0.5, 0.5, 0.1, 0.1), box("b", 0.2, 0.2, 0.1, 0.1)),
            )
            for i in range(images)
        ]
        config = _config(tmp_path, settings)
        expected: dict[int, dict] = {}
        annotated: dict[int, str] = {}
        killed_with_work_left = 0
        for _ in range(runs):
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgecatalog", "sync", "--config", config],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(rng.uniform(0.3, 1.2))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
            proc.stderr.close()
            if Outbox.select().where(Outbox.state == "pending").exists():
                killed_with_work_left += 1
            _local_change(rng, expected, annotated)
        synced_by_killed = Image.select().where(Image.sync_state == "synced").count()
        assert synced_by_killed >= images // 2, synced_by_killed  # the killed runs did work
        emu.random_faults(0, (), seed=0)
        done = subprocess.run(
            [sys.executable, "-m", "edgecatalog", "sync", "--once", "--config", config],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        print(
            f"kills with work left: {killed_with_work_left}/{runs}, synced by the killed runs:"
            f" {synced_by_killed}/{images}, answers replayed for a known key: {emu.replays}"
        )
        assert killed_with_work_left >= runs // 2  # most kills landed while work was in flight
        # Nothing lost: every image upstream, with its ids, inline annotations and changes.
        left = [(r.kind, r.state, r.last_error) for r in Outbox.select()]
        assert not left, left
        assert sorted(emu.images) == sorted(i.sha256 for i in local)
        for image in Image.select():
            stored = emu.images[image.sha256]
            assert image.sync_state == "synced"
            assert image.remote_id == str(stored.image_id)
            assert [a["class_value"] for a in stored.metadata["annotations"]] == ["a", "b"]
            assert stored.fields == expected.get(image.id, {})
            late = [a["class_value"] for a in emu.annotations_of(stored.image_id)]
            # Nothing duplicated: each late annotation exactly once.
            assert late == ([annotated[image.id]] if image.id in annotated else [])
        assert len(emu.by_id) == images
    finally:
        emu.close()
        if not database.is_closed():
            database.close()


def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path):
    kill_runs(tmp_path, runs=22, images=50, seed=11)


@pytest.mark.slow
def test_sigkill_soak(tmp_path):
    kill_runs(tmp_path, runs=60, images=150, seed=23)
