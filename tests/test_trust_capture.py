"""A process that can write into a capture folder must not make the catalog read, store, serve
or send upstream any file outside it: links planted as ``classes.txt``, as a sidecar or as an
image (index and move mode, watched and scanned), and a capture swapped for a link (or for
another file) between the moment it was read and the moment move mode stores it.

Each test plants the real thing on a real filesystem and looks at every place the outside
bytes could surface: the catalog's rows, the list answer, ``/files``, the images folder and
the bytes the upstream emulator received.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from capture_helpers import image_by_sha, rejected_paths, sha, unique_jpeg, wait_for
from conftest import make_settings
from reliability import SECRET_BYTES, plant_secret
from test_capture import watch  # noqa: F401 - the capture-service fixture

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.ingest import durable
from edgecatalog.ingest.commands import run_scan
from edgecatalog.ingest.indexer import FolderIndexer
from edgecatalog.ingest.probe import CaptureOptions, FileStat, probe_image
from edgecatalog.ingest.sidecars import ClassNames
from edgecatalog.models import Annotation, Image, database


def list_everything(settings) -> bytes:
    """The list answer with annotations, as a client gets it."""
    app = create_app(settings)
    token = Authenticator(settings).issue_token("reviewer", "read")
    resp = app.test_client().get(
        "/data/images?include_annotations=true&limit=100",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200, resp.data
    return resp.data


def every_stored_byte(settings) -> bytes:
    """Everything under the data folder's images/ (what /files and sync read from)."""
    found = b""
    for path in settings.images_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            found += path.read_bytes()
    return found


def test_classes_txt_linked_to_the_signing_secret_is_rejected(watch, tmp_path):  # noqa: F811
    # The generated secret in the data folder, as a service without [auth] jwt_secret has.
    folder, settings, _ = watch(auth__jwt_secret="")
    secret = (settings.data_dir / "jwt.secret").read_text().strip()
    assert len(secret) == 64
    (folder / "classes.txt").symlink_to(settings.data_dir / "jwt.secret")
    data = unique_jpeg(1, side=64)
    (folder / "frame.jpg").write_bytes(data)
    (folder / "frame.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    image = wait_for(lambda: image_by_sha(sha(data)))
    reasons = wait_for(lambda: rejected_paths().get(str(folder / "frame.txt")))
    assert "classes.txt" in reasons and "symbolic link" in reasons
    assert Annotation.select().where(Annotation.image == image.id).count() == 0
    assert [a.class_value for a in Annotation.select()] == []
    assert secret.encode() not in list_everything(settings)


@pytest.mark.parametrize("mode", ["index", "move"])
def test_an_image_linked_to_an_outside_file_is_rejected(watch, tmp_path, mode):  # noqa: F811
    folder, settings, _ = watch(mode=mode)
    outside = tmp_path / "outside"
    outside.mkdir()
    # A real JPEG outside (it would be indexed if the link were followed), and a secret.
    target = outside / "elsewhere.jpg"
    target.write_bytes(unique_jpeg(7, side=64) + SECRET_BYTES)
    (folder / "linked.jpg").symlink_to(target)
    secret = plant_secret(outside)
    (folder / "secret.jpg").symlink_to(secret)
    real = unique_jpeg(8, side=64)
    (folder / "real.jpg").write_bytes(real)
    wait_for(lambda: image_by_sha(sha(real)))
    reasons = wait_for(lambda: len(rejected_paths()) == 2 and rejected_paths())
    for name in ("linked.jpg", "secret.jpg"):
        assert "symbolic link" in reasons[str(folder / name)], reasons
    assert Image.select().count() == 1
    assert image_by_sha(sha(target.read_bytes())) is None
    assert SECRET_BYTES not in every_stored_byte(settings)
    assert SECRET_BYTES not in list_everything(settings)
    assert target.read_bytes().endswith(SECRET_BYTES)  # the outside file was left alone


def test_a_scan_rejects_links_with_their_reason(tmp_path):
    settings = make_settings(tmp_path, capture__settle_seconds=0.0)
    create_app(settings)
    folder = tmp_path / "old"
    (folder / "sub").mkdir(parents=True)
    secret = plant_secret(tmp_path / "outside")
    (folder / "a.jpg").symlink_to(secret)
    (folder / "linked-dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    real = unique_jpeg(3, side=48)
    (folder / "sub" / "b.jpg").write_bytes(real)
    (folder / "sub" / "b.json").symlink_to(secret)
    report = run_scan(
        settings, folder, recursive=True, mode="move", out=io.StringIO(), err=io.StringIO()
    )
    assert (report.indexed, report.rejected) == (1, 2)
    reasons = rejected_paths()
    assert "symbolic link" in reasons[str(folder / "a.jpg")]
    assert "symbolic link" in reasons[str(folder / "sub" / "b.json")]
    assert SECRET_BYTES not in every_stored_byte(settings)
    assert secret.read_bytes() == SECRET_BYTES
    database.close()


# -- the rename race: a capture swapped after it was read, before move mode stores it ---------


@pytest.fixture
def move_indexer(tmp_path):
    settings = make_settings(tmp_path, capture__settle_seconds=0.0, capture__mode="move")
    create_app(settings)
    folder = tmp_path / "captures"
    folder.mkdir()
    options = CaptureOptions.from_settings(settings)
    with database.connection_context():
        yield settings, folder, FolderIndexer(options, folder), options
    database.close()


def probe_then(folder: Path, options: CaptureOptions, name: str, data: bytes, swap):
    """Read a capture as the probe workers do, let ``swap`` replace it, then return the probe
    (the moment the attack won 5 of 5 times before)."""
    path = folder / name
    path.write_bytes(data)
    probe = probe_image(FileStat.of(path, folder), options, ClassNames())
    assert probe.sha256 == sha(data) and not probe.error
    swap(path)
    return probe


def test_a_capture_swapped_for_a_link_after_it_was_read_is_not_stored(move_indexer, tmp_path):
    settings, folder, indexer, options = move_indexer
    secret = settings.data_dir / "jwt.secret"
    secret.write_text("s" * 64)  # stands in for the generated secret, in the data folder
    secret_bytes = secret.read_bytes()

    def to_link(path: Path) -> None:
        tmp = path.with_name(".swap")
        tmp.symlink_to(secret)
        os.replace(tmp, path)  # atomic: the name now is a link to the secret

    probe = probe_then(folder, options, "frame.jpg", unique_jpeg(11, side=64), to_link)
    outcomes = indexer.commit([probe], set())
    assert outcomes == ["rejected"]
    assert "replaced after it was read" in probe.error
    assert Image.select().count() == 0
    assert secret_bytes not in every_stored_byte(settings)
    assert secret.read_bytes() == secret_bytes and (folder / "frame.jpg").is_symlink()


def test_a_capture_swapped_for_another_file_is_taken_later_not_stored_wrong(move_indexer):
    settings, folder, indexer, options = move_indexer
    first, second = unique_jpeg(21, side=64), unique_jpeg(22, side=64)

    def to_other(path: Path) -> None:
        tmp = path.with_name(".swap")
        tmp.write_bytes(second)
        os.replace(tmp, path)

    probe = probe_then(folder, options, "frame.jpg", first, to_other)
    assert indexer.commit([probe], set()) == ["changing"]
    assert Image.select().count() == 0
    assert first not in every_stored_byte(settings) and second not in every_stored_byte(settings)
    # Probed again, the file now at that name is indexed with its own hash and bytes.
    again = probe_image(FileStat.of(folder / "frame.jpg", folder), options, ClassNames())
    assert indexer.commit([again], set()) == ["indexed"]
    image = Image.get()
    assert image.sha256 == sha(second)
    assert (settings.images_dir / image.storage_key).read_bytes() == second


def test_a_copy_across_filesystems_is_hashed_again(tmp_path):
    """The copy fallback (captures on another filesystem than the data folder) stores the
    bytes of the descriptor it was given, and refuses bytes whose hash is not the probe's."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) to copy across")
    source_dir = Path(shutil.os.path.realpath(shm)) / f"edgecatalog-test-{os.getpid()}"
    source_dir.mkdir()
    try:
        data = unique_jpeg(31, side=64)
        source = source_dir / "frame.jpg"
        source.write_bytes(data)
        fd = os.open(source, os.O_RDONLY)
        try:
            good = tmp_path / "good.jpg"
            durable.store_from_fd(fd, good, sha(data))
            assert good.read_bytes() == data and os.stat(good).st_ino != os.stat(source).st_ino
            # The same descriptor, claimed to hold other bytes: nothing is kept.
            bad = tmp_path / "bad.jpg"
            with pytest.raises(durable.FileChanged):
                durable.store_from_fd(fd, bad, sha(b"something else"))
            assert not bad.exists() and not list(tmp_path.glob(".bad.jpg*"))
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(source_dir)


# -- after indexing: an indexed file (index mode) later swapped for a link ----------------------


def test_an_indexed_file_swapped_for_a_link_is_neither_served_nor_sent(tmp_path):
    from sync_helpers import drain, sync_settings
    from upstream_emulator import UpstreamEmulator

    from edgecatalog.models import Outbox
    from edgecatalog.sync.worker import SyncWorker

    emulator = UpstreamEmulator(record_bodies=True)
    try:
        settings = sync_settings(tmp_path, emulator, capture__settle_seconds=0.0)
        app = create_app(settings)
        folder = tmp_path / "captures"
        folder.mkdir()
        kept, swapped = unique_jpeg(41, side=64), unique_jpeg(42, side=64)
        (folder / "kept.jpg").write_bytes(kept)
        (folder / "swapped.jpg").write_bytes(swapped)
        report = run_scan(
            settings, folder, recursive=False, mode="index", out=io.StringIO(), err=io.StringIO()
        )
        assert report.indexed == 2
        # The secret is as long as the capture, so a size check alone would not catch it.
        secret = tmp_path / "outside" / "secret.bin"
        secret.parent.mkdir()
        secret.write_bytes((SECRET_BYTES * 1000)[: len(swapped)])
        (folder / "swapped.jpg").unlink()
        (folder / "swapped.jpg").symlink_to(secret)

        token = Authenticator(settings).issue_token("reviewer", "read")
        headers = {"Authorization": f"Bearer {token}"}
        with database.connection_context():
            ids = {img.sha256: img.id for img in Image.select()}
        client = app.test_client()
        gone = client.get(f"/files/{ids[sha(swapped)]}", headers=headers)
        assert gone.status_code == 404 and SECRET_BYTES not in gone.data
        thumb = client.get(f"/files/{ids[sha(swapped)]}/thumbnail?size=128", headers=headers)
        assert thumb.status_code == 404 and SECRET_BYTES not in thumb.data
        assert client.get(f"/files/{ids[sha(kept)]}", headers=headers).data == kept

        worker = SyncWorker(settings)
        try:
            with database.connection_context():
                drain(worker)
        finally:
            worker.close()
        assert set(emulator.images) == {sha(kept)}
        assert emulator.bodies and not any(SECRET_BYTES[:16] in b for b in emulator.bodies)
        with database.connection_context():
            problem = Outbox.get(Outbox.image == ids[sha(swapped)])
            assert problem.state != "done" and "symbolic link" in (problem.last_error or "")
    finally:
        emulator.close()
        database.close()
