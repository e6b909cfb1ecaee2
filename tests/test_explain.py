"""``edgecatalog explain URL``: the statements it shows are the ones a real ``GET /data/images``
runs (captured from the app with the same statement log, compared text for text and in order);
the plans it shows are SQLite's; it never writes the catalog; bad input is one line, exit 2.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from seeded_catalog import build_catalog

from edgecatalog import cli, db, explain
from edgecatalog.models import database

# Auth reads its own tables (refreshed about once a second): not statements of the list.
AUTH_TABLES = re.compile(r"\b(auth_epoch|device_key|token_revocation)\b")


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    catalog = build_catalog(tmp_path_factory.mktemp("explain"))
    database.close()
    yield catalog
    database.close()


@pytest.fixture
def config(cat, tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(
        f'[storage]\ndata_dir = "{cat.settings.data_dir.as_posix()}"\n'
        f'[auth]\njwt_secret = "{"t" * 40}"\n'
    )
    return path


def urls(cat) -> list[str]:
    alpha, batch = cat.projects["Alpha"], cat.batches[1]
    return [
        "/data/images",
        "/data/images?class_values=cat&limit=5",
        "/data/images?class_values=cat,dog&split=val",
        "/data/images?class_values=cat,dog",
        "/data/images?class_values=dog&annotation_status=completed&offset=2",
        f"/data/images?project_id={alpha}&stage=complete&split=train",
        f"/data/images?batch_id={batch}&split=val&sort=filename&order=asc",
        "/data/images?device_id=cam02&include_annotations=true&limit=4",
        "/data/images?search=frame&include_annotations=1",
        "/data/images?search=a",
        "/data/images?search=jpg&device_id=cam01",
        "/data/images?filename=dup.jpg&class_values=cat",
        "/data/images?offset=500",
        "http://edge.local:8080/data/images?split=all&limit=100",
    ]


def request_statements(cat, url: str) -> list[tuple[str, tuple]]:
    """What the app itself runs for ``url``, through its test client."""
    db.init_database(cat.settings.db_path)  # the app's own connection, not explain's
    path = url.split("://", 1)[-1]
    path = path[path.index("/") :]
    with explain.captured_statements() as statements:
        resp = cat.client.get(path, headers=cat.headers)
        body = resp.get_data()  # a streamed page runs its annotations statement as it is read
    assert resp.status_code == 200, body[:300]
    database.close()
    return [(s.sql, s.params) for s in statements if not AUTH_TABLES.search(s.sql)]


def explained(cat, url: str) -> explain.Explanation:
    return explain.explain_url(url, cat.settings.db_path)


@pytest.mark.parametrize("n", range(14))
def test_statements_are_the_requests_own(cat, n):
    url = urls(cat)[n]
    expected = request_statements(cat, url)
    got = explained(cat, url)
    assert [(s.sql, s.params) for s in got.statements] == expected
    assert expected, "every list request runs at least its page or its total"
    assert all(s.purpose != "other" for s in got.statements), got.statements
    for statement in got.statements:
        assert statement.plan and statement.ms >= 0


def plan_text(statement: explain.Statement) -> str:
    return "\n".join(row["detail"] for row in statement.plan)


def test_one_class_total_never_scans_annotation(cat):
    got = explained(cat, "/data/images?class_values=cat&limit=50")
    totals = [s for s in got.statements if s.purpose == "total"]
    assert len(totals) == 1
    plan = plan_text(totals[0])
    assert "image_class_count" in plan
    assert not re.search(r"\bannotation\b", plan), plan
    assert "image_class_count" in got.choices["total"]
    assert "classes" in got.choices  # probed or not, and the numbers that decided it


def test_choices_follow_what_ran(cat):
    page_past_end = explained(cat, "/data/images?offset=500")
    assert [s.purpose for s in page_past_end.statements] == ["total"]
    assert "no page statement" in page_past_end.choices["page"]
    rare = explained(cat, "/data/images?search=frame")
    assert [s.purpose for s in rare.statements] == ["search candidates", "page"]
    short = explained(cat, "/data/images?search=a")
    # Counted per zone (carried), then a walk bounded to more rows than the catalog has.
    assert [s.purpose for s in short.statements] == [
        "search matches per zone",
        "page: bounded walk",
        "page",
    ]
    assert "no run of 3" in short.choices["search"]
    assert "bounded walk" in short.choices["page"]
    # The total is the first column: the class count beside it does not make it a count table.
    counted = explained(cat, "/data/images?filename=dup.jpg&class_values=cat")
    assert counted.choices["total"].startswith("COUNT(*) over image")
    faceted = explained(cat, "/data/images?class_values=cat&split=val")
    assert "image_class_total" in faceted.choices["total"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    return subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def file_state(path: Path) -> tuple[int, int, list[str]]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size, sorted(p.name for p in path.parent.iterdir())


def test_json_carries_the_same_statements_read_only(cat, config):
    url = "/data/images?class_values=cat,dog&device_id=cam01&include_annotations=true"
    expected = request_statements(cat, url)
    before = file_state(cat.settings.db_path)
    assert not Path(str(cat.settings.db_path) + "-wal").exists()
    proc = run_cli("explain", "--config", str(config), "--json", url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = json.loads(proc.stdout)
    assert [(s["sql"], tuple(s["params"])) for s in out["statements"]] == expected
    assert [s["purpose"] for s in out["statements"]] == [
        "device lookup",
        "total",
        "page",
        "annotations",
    ]
    for statement in out["statements"]:
        assert statement["plan"] and all("detail" in row for row in statement["plan"])
        assert isinstance(statement["ms"], float)
    assert out["query"]["filters"] == {"device_id": "cam01", "class_values": ["cat", "dog"]}
    assert out["choices"]["total"] and out["choices"]["classes"]
    # Read-only: not a byte, not a timestamp, no -wal or -shm file.
    assert file_state(cat.settings.db_path) == before


def test_text_output_and_read_only_beside_a_running_writer(cat, config):
    # A connection in WAL mode (as the service keeps one) has the -wal and -shm files there:
    # explain reads through them, creates nothing and changes nothing.
    holder = sqlite3.connect(cat.settings.db_path)
    try:
        holder.execute("SELECT count(*) FROM image").fetchone()
        before = file_state(cat.settings.db_path)
        assert any(name.endswith("-wal") for name in before[2])
        proc = run_cli("explain", "--config", str(config), "/data/images?class_values=cat")
        assert proc.returncode == 0, proc.stderr
        assert file_state(cat.settings.db_path) == before
    finally:
        holder.close()
    text = proc.stdout
    assert "1. total" in text and "2. page" in text
    assert "SEARCH image_class_count" in text
    assert "params: ['cat', 'cat']" in text
    assert "choices:" in text and "classes:" in text


def one_line_error(capsys, *argv: str) -> str:
    assert cli.main(["explain", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_bad_parameter_is_the_apis_one_line_error(cat, config):
    proc = run_cli("explain", "--config", str(config), "/data/images?limit=0")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in proc.stderr and proc.stdout == ""
    db.init_database(cat.settings.db_path)
    api = cat.client.get("/data/images?limit=0", headers=cat.headers).get_json()["error"]
    database.close()
    assert err == f"edgecatalog: {api['code']} {api['details']}: {api['message']}"


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("/data/images?sort=size", ("sort",)),
        ("/data/images?split=val&split=test", ("split",)),
        ("/data/images?device_id=nowhere", ("device_id", "nowhere")),
        ("/data/projects", ("/data/images", "/data/projects")),
        ("http://h:1/files/3", ("/data/images",)),
    ],
)
def test_bad_input_is_one_line(cat, config, capsys, url, names):
    err = one_line_error(capsys, "--config", str(config), url)
    for name in names:
        assert name in err


def test_missing_catalog_is_one_line_and_creates_nothing(tmp_path, capsys):
    data = tmp_path / "empty"
    config = tmp_path / "edge.toml"
    config.write_text(f'[storage]\ndata_dir = "{data.as_posix()}"\n')
    err = one_line_error(capsys, "--config", str(config), "/data/images")
    assert "no catalog" in err and "catalog.db" in err
    assert not data.exists()


def test_a_writer_starting_meanwhile_is_read_through_its_wal(cat, tmp_path, monkeypatch):
    # No -wal file: read as immutable. A writer that appears during that read makes explain
    # read again with mode=ro, through the writer's WAL, so a result never mixes two states.
    copy = tmp_path / "catalog.db"
    source = sqlite3.connect(cat.settings.db_path)
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    real, opened, writers = explain.explain_query, [], []

    def writer_arrives(query, url=""):
        opened.append(database.database)
        result = real(query, url)
        if not writers:
            writer = sqlite3.connect(copy)
            writer.execute("UPDATE image SET filename = 'renamed.jpg' WHERE id = 1")
            writer.commit()
            writers.append(writer)  # kept open: its -wal holds the change
        return result

    monkeypatch.setattr(explain, "explain_query", writer_arrives)
    try:
        got = explain.explain_url("/data/images?filename=renamed.jpg", copy)
    finally:
        for writer in writers:
            writer.close()
    assert "immutable=1" in opened[0] and len(opened) == 2
    assert "mode=ro" in opened[1] and "immutable" not in opened[1]
    assert got.statements[0].first_row[0] == 1  # the total sees the writer's change
