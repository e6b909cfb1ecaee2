"""Group commit on a real SQLite file: concurrent jobs share a transaction, a failing job
rolls back alone, and each caller gets its own result or its own exception.
"""

from __future__ import annotations

import threading

import pytest
from conftest import make_settings

from edgecatalog import create_app
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
    while len(group._pending) < len(names):  # all six queued behind the blocked leader
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
    assert group._leading is False and group._pending == []
