"""Group commit on a real SQLite file: concurrent jobs share a transaction, a failing job
rolls back alone, and each caller gets its own result or its own exception.
"""

from __future__ import annotations

import threading

import pytest
from conftest import make_settings

from edgecatalog import create_app
from edgecatalog.ingest import commit
from edgecatalog.ingest.commit import GroupCommit
from edgecatalog.models import Project, database


@pytest.fixture
def db(tmp_path):
    create_app(make_settings(tmp_path)).extensions["edgecatalog.ingest_lock"].release()
    yield
    if not database.is_closed():
        database.close()


def make_project(name: str, fail: bool = False):
    def work():
        Project.create(name=name, created_at=1, updated_at=1)
        if fail:
            raise ValueError(f"job {name} failed after writing")
        return threading.get_ident()

    return work


def test_jobs_waiting_behind_a_leader_commit_together_and_fail_alone(db):
    group = GroupCommit()
    release = threading.Event()
    started = threading.Event()
    results: dict[str, object] = {}

    def blocking_leader():
        Project.create(name="first", created_at=1, updated_at=1)
        started.set()
        release.wait(10)  # hold the lead while the others queue
        return threading.get_ident()

    def call(name: str, work) -> None:
        with database.connection_context():
            try:
                results[name] = group.run(work)
            except ValueError as exc:
                results[name] = exc

    leader = threading.Thread(target=call, args=("first", blocking_leader))
    leader.start()
    assert started.wait(10)
    names = [f"p{i}" for i in range(6)]
    others = [
        threading.Thread(target=call, args=(n, make_project(n, fail=(n == "p3")))) for n in names
    ]
    for thread in others:
        thread.start()
    while len(group.commits._pending) < len(names):  # all six queued behind the blocked leader
        threading.Event().wait(0.01)
    release.set()
    for thread in [leader] + others:
        thread.join(10)
    assert isinstance(results["p3"], ValueError)
    ok = [n for n in names if n != "p3"]
    # The queued jobs ran in one later round, all in the thread that led it.
    assert len({results[n] for n in ok}) == 1
    assert results["first"] != results[ok[0]]
    with database.connection_context():
        stored = sorted(p.name for p in Project.select())
    assert stored == sorted(["first"] + ok)


def test_a_lone_job_commits_at_once(db):
    group = GroupCommit()
    with database.connection_context():
        assert group.run(make_project("solo")) == threading.get_ident()
        assert Project.select().count() == 1
        with pytest.raises(ValueError):
            group.run(make_project("bad", fail=True))
        assert [p.name for p in Project.select()] == ["solo"]
    assert group.commits._leading is False and group.commits._pending == []


def test_a_flush_runs_while_another_round_is_in_its_transaction(db, tmp_path, monkeypatch):
    """The flush stage does not wait for the commit stage: the second upload's file is
    flushed while the first one's transaction is still open, and its row is committed only
    after its flush."""
    events: list[str] = []
    release = threading.Event()
    in_tx = threading.Event()
    flushed = threading.Event()

    def recording_flush(jobs):
        events.append("flush " + ",".join(str(f.name) for job in jobs for f in job.files))
        flushed.set()

    monkeypatch.setattr(commit, "_flush", recording_flush)
    group = GroupCommit()  # its flush stage runs the recording flush

    def slow_first():
        Project.create(name="first", created_at=1, updated_at=1)
        in_tx.set()
        release.wait(10)
        events.append("first committing")
        return "first"

    def second():
        events.append("second in transaction")
        Project.create(name="second", created_at=1, updated_at=1)
        return "second"

    results: dict[str, object] = {}

    def call(name, work, files):
        with database.connection_context():
            results[name] = group.run(work, sync_files=files)

    first = threading.Thread(target=call, args=("first", slow_first, [tmp_path / "a"]))
    first.start()
    assert in_tx.wait(10)
    flushed.clear()
    other = threading.Thread(target=call, args=("second", second, [tmp_path / "b"]))
    other.start()
    assert flushed.wait(10)  # while "first" still holds its transaction open
    assert events == ["flush a", "flush b"]
    release.set()
    first.join(10)
    other.join(10)
    assert results == {"first": "first", "second": "second"}
    assert events == ["flush a", "flush b", "first committing", "second in transaction"]
    with database.connection_context():
        assert sorted(p.name for p in Project.select()) == ["first", "second"]


def test_a_failed_flush_fails_its_jobs_and_writes_nothing(db, tmp_path, monkeypatch):
    def failing_flush(jobs):
        raise OSError(5, "I/O error while flushing")

    monkeypatch.setattr(commit, "_flush", failing_flush)
    group = GroupCommit()
    with database.connection_context():
        with pytest.raises(OSError, match="I/O error"):
            group.run(make_project("lost"), sync_files=[tmp_path / "x"])
        # A job with nothing to flush never meets the failing flush.
        assert group.run(make_project("kept")) == threading.get_ident()
        assert [p.name for p in Project.select()] == ["kept"]
    assert group.flushes._leading is False and group.commits._leading is False


@pytest.mark.parametrize("files", [1, 3])
def test_flush_is_one_syncfs_whatever_the_number_of_files(tmp_path, monkeypatch, files):
    calls: list[str] = []
    monkeypatch.setattr(commit, "syncfs_available", lambda: True)
    monkeypatch.setattr(commit, "syncfs", lambda path: calls.append(f"syncfs {path.name}") or True)
    monkeypatch.setattr(commit, "fsync_file", lambda path: calls.append(f"fsync {path.name}"))
    monkeypatch.setattr(commit, "fsync_dir", lambda path: calls.append(f"fsync {path.name}"))
    folder = tmp_path / "dir"
    commit._flush([commit._Job(lambda: None, (folder,), (folder / f"f{i}",)) for i in range(files)])
    assert calls == ["syncfs dir"]


def test_flush_without_syncfs_fsyncs_every_file_and_folder(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(commit, "syncfs_available", lambda: False)
    monkeypatch.setattr(commit, "fsync_file", lambda path: calls.append(path.name))
    monkeypatch.setattr(commit, "fsync_dir", lambda path: calls.append(path.name + "/"))
    folder = tmp_path / "dir"
    commit._flush([commit._Job(lambda: None, (folder,), (folder / f"f{i}",)) for i in range(3)])
    assert calls == ["f0", "f1", "f2", "dir/"]


def _queue_behind_a_blocked_round(group, jobs):
    """Run ``jobs`` ((name, work, together) each) in threads while a first round holds the
    commit stage, so they all meet in the next round; their results or exceptions by name."""
    release, started = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def blocking():
        started.set()
        release.wait(10)
        return "first"

    def call(name, work, together=None):
        with database.connection_context():
            try:
                results[name] = group.run(work, together=together)
            except ValueError as exc:
                results[name] = exc

    leader = threading.Thread(target=call, args=("first", blocking))
    leader.start()
    assert started.wait(10)
    threads = [threading.Thread(target=call, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    while len(group.commits._pending) < len(jobs):
        threading.Event().wait(0.01)
    release.set()
    for thread in [leader, *threads]:
        thread.join(10)
    return results


def test_jobs_that_can_run_together_make_one_call(db):
    calls: list[list[str]] = []

    def create_all(names):
        calls.append(list(names))
        for name in names:
            Project.create(name=name, created_at=1, updated_at=1)
        return [f"made {name}" for name in names]

    def alone(name):
        return lambda: create_all([name])[0]

    names = [f"p{i}" for i in range(4)]
    results = _queue_behind_a_blocked_round(
        GroupCommit(), [(n, alone(n), (create_all, n)) for n in names]
    )
    assert [sorted(c) for c in calls] == [sorted(names)]  # one call for the whole round
    assert {n: results[n] for n in names} == {n: f"made {n}" for n in names}
    with database.connection_context():
        assert sorted(p.name for p in Project.select()) == sorted(names)


def test_a_bad_job_in_a_joint_call_fails_alone(db):
    calls: list[list[str]] = []

    def create_all(names):
        calls.append(list(names))
        for name in names:
            Project.create(name=name, created_at=1, updated_at=1)
            if name == "bad":
                raise ValueError("bad job")
        return list(names)

    def alone(name):
        return lambda: create_all([name])[0]

    names = ["a", "bad", "c"]
    results = _queue_behind_a_blocked_round(
        GroupCommit(), [(n, alone(n), (create_all, n)) for n in names]
    )
    assert sorted(len(c) for c in calls) == [1, 1, 1, 3]  # the joint call, then one by one
    assert isinstance(results["bad"], ValueError)
    assert results["a"] == "a" and results["c"] == "c"
    with database.connection_context():  # the joint call's rows were rolled back
        assert sorted(p.name for p in Project.select()) == ["a", "c"]
