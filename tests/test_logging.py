"""Logs: one line per event, every request once with method, route, status, duration and
request id, text or JSON, and never a token, device key or URL signature."""

from __future__ import annotations

import io
import json
import logging
import signal

import pytest
import requests
from conftest import make_settings, seed_image
from serve_process import ServeProcess, free_port, write_config

from edgecatalog import logsetup
from edgecatalog.auth import Authenticator
from edgecatalog.models import database

DEVICE_KEY = "adk_0123456789abcdef0123456789abcdef"


@pytest.fixture
def captured(settings):
    stream = io.StringIO()
    handler = logsetup.configure(settings.replace(logging__format="json"), stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def test_access_line_has_the_fields_and_no_secrets(app, client, settings, tokens, captured):
    with database.connection_context():
        image = seed_image(settings)
    expires, signature = Authenticator(settings).sign_file(image.id)
    client.get(
        f"/files/{image.id}?expires={expires}&signature={signature}",
        headers={"X-Request-ID": "req-signed-1"},
    )
    client.get(
        "/data/images?limit=1",
        headers={
            "Authorization": f"Bearer {tokens['read']}",
            "X-Request-ID": "req-bearer-2",
            "X-Device-Key": DEVICE_KEY,
        },
    )
    client.get("/data/images/1?token=" + tokens["read"])
    text = captured.getvalue()
    assert signature not in text and tokens["read"] not in text and DEVICE_KEY not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON event
    access = [line for line in lines if line["logger"] == "edgecatalog.access"]
    assert len(access) == 3  # once per request
    first, second = access[0], access[1]
    assert first["request_id"] == "req-signed-1" and first["status"] == 200
    assert first["route"] == "/files/<int:image_id>"
    assert "signature=[redacted]" in first["msg"] and f"expires={expires}" in first["msg"]
    assert second["request_id"] == "req-bearer-2" and second["route"] == "/data/images"
    assert isinstance(second["duration_ms"], float) and second["msg"].startswith("GET ")


def test_scrub_catches_credentials_anywhere():
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    line = logsetup.scrub(f"Authorization: Bearer {token} key={DEVICE_KEY} ?signature=abc&x=1")
    assert token not in line and DEVICE_KEY not in line and "abc" not in line
    assert "x=1" in line
    assert (
        logsetup.scrub_query("signature=s3cr3t&expires=5&limit=2")
        == "signature=[redacted]&expires=5&limit=2"
    )


def test_text_format_is_one_line_per_event(settings):
    stream = io.StringIO()
    handler = logsetup.configure(settings, stream=stream)
    try:
        log = logging.getLogger("edgecatalog.test")
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            log.exception("failed with Bearer abc.def.ghi")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "Traceback" in lines[0]
    assert "abc.def.ghi" not in lines[0] and "ERROR edgecatalog.test" in lines[0]


def test_waitress_queue_warnings_are_rate_limited(settings, monkeypatch):
    """A burst of queued requests logs one line a minute, not one per request."""
    clock = [1000.0]
    monkeypatch.setattr(logsetup.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    handler = logsetup.configure(settings, stream=stream)
    queue = logging.getLogger("waitress.queue")
    try:
        for depth in range(100):
            queue.warning("Task queue depth is %d", depth)
        clock[0] += 61
        queue.warning("Task queue depth is %d", 7)
        logging.getLogger("edgecatalog.test").warning("not limited")
        logging.getLogger("edgecatalog.test").warning("not limited")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert [line.split("waitress.queue: ")[-1] for line in lines if "waitress.queue" in line] == [
        "Task queue depth is 0",
        "Task queue depth is 7",
    ]
    assert sum("not limited" in line for line in lines) == 2
    assert len([f for f in queue.filters if isinstance(f, logsetup.OncePer)]) == 1


def test_served_process_logs_json_to_stderr_without_secrets(tmp_path):
    settings = make_settings(tmp_path)
    port = free_port()
    config = write_config(
        tmp_path / "c.toml", settings.data_dir, port, logging={"format": "json", "level": "INFO"}
    )
    token = Authenticator(settings).issue_token("logger", "read")
    proc = ServeProcess(config, port)
    try:
        proc.wait_ready()
        answer = requests.get(
            proc.url + "/data/images?signature=topsecret",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "from-client-7"},
            timeout=5,
        )
        assert answer.headers["X-Request-ID"] == "from-client-7"
        proc.terminate(signal.SIGTERM)
        code, err = proc.wait()
    finally:
        proc.close()
    assert code == 0
    events = [json.loads(line) for line in err.splitlines()]
    hits = [e for e in events if e.get("request_id") == "from-client-7"]
    assert len(hits) == 1 and hits[0]["route"] == "/data/images" and hits[0]["status"] == 200
    assert token not in err and "topsecret" not in err
