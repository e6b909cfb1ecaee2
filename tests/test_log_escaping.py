"""Log lines cannot be forged: every control and line-separator character a client puts into
a logged value (a request path, an extra field, an exception) is written as a visible escape,
in the text and the JSON format, so each event stays one line and no line is made up.

The request-path tests send raw bytes over a socket to a real waitress server (the path both
percent-encoded, which waitress decodes, and as raw bytes) and read the lines the service's
own log handler wrote.
"""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import socket

import pytest
from conftest import LiveServer, make_settings
from serve_process import ServeProcess, free_port, write_config

from edgecatalog import create_app, logsetup
from edgecatalog.config import load_settings

# Everything that may not appear raw in a log line: C0 controls but the line's own "\n", DEL,
# C1 controls (U+0085 NEL among them), U+2028/U+2029 and lone surrogates. Written out here
# rather than taken from logsetup, so the test does not share the code's idea of the set.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f\x80-\x9f\u2028\u2029\ud800-\udfff]")
FORGED = "2026-01-01 00:00:00,000 INFO edgecatalog.access: GET /forged 200 0.1ms"
HOSTILE = "a\rb\nc\x1b[31md\x7fe\x85f\u2028g\u2029h\ti\x00j\x9bk\\nl"


def _lines(text: str) -> list[str]:
    # Split on "\n" only: str.splitlines() would also split on the characters under test.
    assert text.endswith("\n")
    return text[:-1].split("\n")


def _no_raw(lines: list[str]) -> None:
    for line in lines:
        assert RAW.search(line) is None, repr(line)


def _format(fmt: str, *args, exc: bool = False, **extra) -> str:
    """One record through the service's handler (``logsetup.configure``), as written."""
    stream = io.StringIO()
    settings = load_settings(environ={}, overrides={"logging.format": fmt})
    handler = logsetup.configure(settings, stream=stream)
    try:
        log = logging.getLogger("edgecatalog.test")
        if exc:
            try:
                raise ValueError(HOSTILE)
            except ValueError:
                log.exception(*args, extra=extra)
        else:
            log.warning(*args, extra=extra)
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue()


def test_text_escapes_every_control_in_message_fields_and_traceback():
    text = _format("text", "path %s", HOSTILE, exc=True, field=HOSTILE)
    lines = _lines(text)
    assert len(lines) == 1
    _no_raw(lines)
    line = lines[0]
    # The escapes name the characters: each one visible, in place.
    expected = "a\\rb\\nc\\x1b[31md\\x7fe\\x85f\\u2028g\\u2029h\\ti\\x00j\\x9bk\\\\nl"
    assert f"path {expected}" in line and f"field={expected}" in line
    assert f"ValueError: {expected}" in line  # the exception's message, inside the traceback


def test_json_escapes_what_json_dumps_leaves_raw_and_decodes_back():
    text = _format("json", "path %s", HOSTILE, exc=True, field=HOSTILE)
    lines = _lines(text)
    assert len(lines) == 1
    _no_raw(lines)
    for raw in ("\u2028", "\u2029", "\x85", "\x7f", "\x9b"):
        assert raw not in text
    event = json.loads(lines[0])
    # Escaped, not altered: the JSON reader gets back exactly what was logged.
    assert event["msg"] == f"path {HOSTILE}" and event["field"] == HOSTILE
    assert HOSTILE in event["exc"]


def test_a_lone_surrogate_is_escaped_not_a_logging_error(capsys):
    text = _format("text", "value %s", "x\ud800y")
    assert _lines(text) == [_lines(text)[0]] and "x\\ud800y" in text
    event = json.loads(_lines(_format("json", "value %s", "x\udfffy"))[0])
    assert event["msg"] == "value x\udfffy"
    assert "Logging error" not in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_still_scrubbed_next_to_control_characters(fmt):
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    key = "adk_0123456789abcdef0123456789abcdef"
    text = _format(
        fmt, "Authorization: Bearer %s\r\nkey=%s\x1b ?signature=abc\u2028&x=1", token, key
    )
    assert token not in text and key not in text and "abc" not in text
    assert "x=1" in text
    _no_raw(_lines(text))


# -- real requests to a real waitress ----------------------------------------------------------

PERCENT_PATH = (
    "/data/images%0D%0A" + FORGED.replace(" ", "%20") + "%1B[31m%E2%80%A8%E2%80%A9%C2%85%7F%09end"
)
DECODED_PATH = "/data/images\r\n" + FORGED + "\x1b[31m\u2028\u2029\x85\x7f\tend"
# Raw bytes waitress passes on to the app (it refuses a bare CR, and non-ASCII raw bytes, itself
# with a 400 of its own; those are sent too, and must not reach the log raw either).
RAW_PATH = b"/data/images\x1b[2J\x0b\x0c\x7fend"
DECODED_RAW_PATH = "/data/images\x1b[2J\x0b\x0c\x7fend"
REFUSED_PATHS = (
    b"/data/images\rX",
    b"/data/images\xe2\x80\xa8",
    b"/data/images\xc2\x85",
    b"/data/images\nX",
)


def _send(port: int, path: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_hostile_request_paths_make_one_visible_line_each(tmp_path, fmt):
    settings = make_settings(tmp_path, logging__format=fmt)
    app = create_app(settings)
    stream = io.StringIO()
    handler = logsetup.configure(settings, stream=stream)
    server = LiveServer(app)
    try:
        answers = [_send(server.port, PERCENT_PATH.encode()), _send(server.port, RAW_PATH)]
        refused = [_send(server.port, path) for path in REFUSED_PATHS]
    finally:
        server.close()
        logging.getLogger().removeHandler(handler)
    assert all(400 <= _status(a) < 500 for a in answers + refused)
    lines = _lines(stream.getvalue())
    _no_raw(lines)
    access = [line for line in lines if "edgecatalog.access" in line]
    # One line per request that reached the app, none per request waitress refused; and
    # no line of the log begins with the forged text (it stays inside the real event's line).
    assert len(access) == 2, lines
    assert not any(line.startswith("2026-01-01 00:00:00") for line in lines)
    if fmt == "json":
        events = [json.loads(line) for line in lines]  # every line is one whole JSON event
        msgs = [e["msg"] for e in events if e["logger"] == "edgecatalog.access"]
        # Escaped, not altered: the reader of the JSON gets the path exactly as requested.
        assert msgs[0].startswith(f"GET {DECODED_PATH} 4")
        assert msgs[1].startswith(f"GET {DECODED_RAW_PATH} 4")
    else:
        assert (
            "GET /data/images\\r\\n" + FORGED + "\\x1b[31m\\u2028\\u2029\\x85\\x7f\\tend 4"
            in access[0]
        )
        assert "GET /data/images\\x1b[2J\\x0b\\x0c\\x7fend 4" in access[1]


def test_served_process_writes_escaped_lines_to_stderr(tmp_path):
    """The whole ``edgecatalog serve`` process, its stderr read back as bytes."""
    settings = make_settings(tmp_path)
    port = free_port()
    config = write_config(
        tmp_path / "c.toml", settings.data_dir, port, logging={"format": "text", "level": "INFO"}
    )
    proc = ServeProcess(config, port)
    try:
        proc.wait_ready()
        assert 400 <= _status(_send(port, PERCENT_PATH.encode())) < 500
        assert 400 <= _status(_send(port, RAW_PATH)) < 500
        proc.terminate(signal.SIGTERM)
        code, _ = proc.wait()
        raw = proc.log_path.read_bytes()
    finally:
        proc.close()
    assert code == 0
    text = raw.decode("utf-8")  # valid UTF-8 throughout
    lines = _lines(text)
    _no_raw(lines)
    access = [line for line in lines if "edgecatalog.access" in line and "/data/images" in line]
    assert len(access) == 2
    assert "\\r\\n" + FORGED in access[0] and "\\x1b[2J" in access[1]
    assert not any(line.startswith(FORGED) for line in lines)
