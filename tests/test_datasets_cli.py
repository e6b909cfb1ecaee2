"""``edgecatalog export`` and ``edgecatalog import`` as a terminal user runs them: the real
command in a subprocess, the same archive as the API, one line and a non-zero exit for what
it refuses (a malformed dataset names its file and line, and imports nothing)."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import jpeg_bytes
from export_helpers import seed_catalog
from test_device_keys import cli
from test_device_keys import one_line_error as check_one_line

from edgecatalog.models import Image

pytestmark = pytest.mark.both_engines


def config_for(settings, tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    text = f'[storage]\ndata_dir = "{settings.data_dir}"\n[auth]\njwt_secret = "{"t" * 40}"\n'
    if settings["database.url"]:
        text += f'[database]\nurl = "{settings["database.url"]}"\n'
    path.write_text(text)
    return path


def run(config: Path, *args: str) -> subprocess.CompletedProcess:
    return cli(config.parent, config, *args)


def one_line_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    assert proc.returncode == 2, proc.stderr
    check_one_line(proc, *names)
    return proc.stderr.strip()


def test_export_writes_the_archive_the_api_serves(settings, client, auth_headers, tmp_path):
    seed_catalog(settings)
    config = config_for(settings, tmp_path)
    out = tmp_path / "out.zip"
    proc = run(
        config,
        "export",
        "coco",
        "--out",
        str(out),
        "--device-id",
        "cam01",
        "--assign-unsplit",
        "train:0.5,val:0.5",
    )
    assert proc.returncode == 0, proc.stderr
    api = client.get(
        "/data/exports/coco",
        headers=auth_headers(),
        query_string={"device_id": "cam01", "assign_unsplit": "train:0.5,val:0.5"},
    )
    assert out.read_bytes() == api.data
    assert not list(tmp_path.glob("*.part"))
    one_line_error(run(config, "export", "yolo", "--out", str(out), "--split", "x"), "split")
    one_line_error(
        run(config, "export", "yolo", "--out", str(out), "--device-id", "nope"), "device_id"
    )


def test_import_and_its_refusals(settings, app, tmp_path):
    config = config_for(settings, tmp_path)
    dataset = tmp_path / "set.zip"
    with zipfile.ZipFile(dataset, "w") as z:
        z.writestr("data.yaml", "train: images/train\nnames:\n  0: crack\n")
        z.writestr("images/train/a.jpg", jpeg_bytes(64, 48, seed=1))
        z.writestr("labels/train/a.txt", "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 nope\n")
        z.writestr("images/train/b.jpg", jpeg_bytes(64, 48, seed=2))
    err = one_line_error(
        run(config, "import", str(dataset), "--format", "yolo"),
        "labels/train/a.txt line 2",
        "nothing imported",
    )
    assert "set.zip" in err
    assert Image.select().count() == 0
    one_line_error(
        run(config, "import", str(dataset), "--format", "yolo", "--device-id", " "), "--device-id"
    )
    one_line_error(
        run(config, "import", str(tmp_path / "none.zip"), "--format", "coco"), "none.zip"
    )
    fixed = tmp_path / "fixed.zip"
    with zipfile.ZipFile(dataset) as src, zipfile.ZipFile(fixed, "w") as z:
        for name in src.namelist():
            data = src.read(name)
            z.writestr(name, b"0 0.5 0.5 0.2 0.2\n" if name.endswith("a.txt") else data)
    proc = run(
        config, "import", str(fixed), "--format", "yolo", "--device-id", "lab", "--project", "bench"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("imported 2 images (train 2), 1 annotations, 0 duplicates")
    assert {i.device.device_id for i in Image.select()} == {"lab"}
