"""The upload path's shortcuts keep their answers: class sets found by plain SQL, the space
check that takes no lock while there is room, and an image check and persist that reuse the
received file's own descriptor.
"""

from __future__ import annotations

import threading

import pytest
from conftest import make_settings
from upload_helpers import unique_jpeg

from edgecatalog import class_sets, create_app, retention
from edgecatalog.errors import InsufficientStorage, ValidationError
from edgecatalog.ingest.store import IncomingFile
from edgecatalog.models import ClassSet, ClassSetMember, database


@pytest.fixture
def settings(tmp_path):
    settings = make_settings(tmp_path)
    create_app(settings).extensions["edgecatalog.ingest_lock"].release()
    yield settings
    retention.use_disk_usage(None)
    if not database.is_closed():
        database.close()


def _sets() -> dict[str, int]:
    return {row.classes: row.id for row in ClassSet.select()}


def _members() -> set[tuple[str, int]]:
    return {(m.class_value, m.set_id) for m in ClassSetMember.select()}


def test_class_set_ids_add_new_sets_with_members_and_find_known_ones(settings):
    sep = class_sets.SEP
    with database.connection_context(), database.atomic():
        first = class_sets.ids_for([f"car{sep}person", "car", ""])
        known = _sets()
        assert first == {"": class_sets.EMPTY, **known}
        assert set(known) == {f"car{sep}person", "car"}
        assert _members() == {
            ("car", known["car"]),
            ("car", known[f"car{sep}person"]),
            ("person", known[f"car{sep}person"]),
        }
        again = class_sets.ids_for(["car", f"car{sep}person", "dog"])
        assert again["car"] == known["car"] and again[f"car{sep}person"] == known[f"car{sep}person"]
        assert len(_sets()) == 3 and ("dog", again["dog"]) in _members()
        assert len(_members()) == 4


def test_space_check_with_room_takes_no_lock(settings):
    retention.use_disk_usage(lambda path: (10**12, 10**12 // 2))
    done = threading.Event()
    with retention._lock:  # an eviction under way in another thread of this process
        checker = threading.Thread(
            target=lambda: (retention.ensure_ingest_space(settings, 1000), done.set())
        )
        checker.start()
        assert done.wait(5), "the check waited for the eviction lock although there was room"
    checker.join(5)


def test_space_check_when_short_still_refuses(settings):
    total = 10**9
    retention.use_disk_usage(lambda path: (total, 1000))  # nearly full, nothing evictable
    with database.connection_context(), pytest.raises(InsufficientStorage):
        retention.ensure_ingest_space(settings, 10_000)


def _received(images_dir, data: bytes) -> IncomingFile:
    incoming = IncomingFile(images_dir, max_bytes=10**8)
    for start in range(0, len(data), 4096):
        incoming.write(data[start : start + 4096])
    return incoming


def test_check_reads_the_received_file_and_persist_keeps_every_byte(tmp_path):
    data = unique_jpeg(1, 50_000)
    incoming = _received(tmp_path / "images", data)
    fmt, width, height = incoming.check()
    assert fmt == "JPEG" and width > 0 and height > 0
    stored = incoming.persist("a.jpg")
    assert stored.path.read_bytes() == data
    assert stored.byte_size == len(data)
    assert list((tmp_path / "images" / ".incoming").iterdir()) == []


def test_a_truncated_jpeg_is_refused_by_the_check_through_the_same_file(tmp_path):
    data = unique_jpeg(2, 50_000)
    cut = data[: data.rindex(b"\xff\xd9")]  # no end-of-image marker
    with pytest.raises(ValidationError, match="truncated"), _received(tmp_path / "i", cut) as f:
        f.check()
    assert list((tmp_path / "i" / ".incoming").iterdir()) == []


def test_a_failed_flush_after_the_rename_leaves_no_file(tmp_path, monkeypatch):
    incoming = _received(tmp_path / "images", unique_jpeg(3, 20_000))
    incoming.check()

    def failing_fsync(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr("edgecatalog.ingest.store.os.fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        incoming.persist("b.jpg")
    assert list((tmp_path / "images" / "raw-data").iterdir()) == []
    assert list((tmp_path / "images" / ".incoming").iterdir()) == []
