"""Logging of the process: one line per event on stderr (journald adds its own metadata),
as text or JSON (``[logging] format``), at ``[logging] level``.

Every formatted line passes through ``scrub``, so a bearer token, a device key, a JWT or a URL
signature never reaches the log even if some code puts one into a message by mistake.
``scrub_query`` is what the access log uses for query strings. No Flask here.

One event is one line, whatever a client put into it (a request path is attacker-chosen
text): C0 and C1 controls, DEL, U+2028/U+2029 and lone surrogates are written as visible
escapes (``\\r``, ``\\x1b``, ``\\u2028``), so no value can end a line, forge the next one or
send a terminal escape sequence. The text format escapes the backslash too, so an escape in
the log always means the character it names; the JSON format leaves JSON's own escaping to
``json.dumps`` and escapes, as ``\\uXXXX``, what that leaves raw.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode

from .config import Settings

# Query parameters whose values are credentials.
SECRET_PARAMS = frozenset({"signature", "token", "access_token", "api_key", "key", "device_key"})
_PATTERNS = (
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"\badk_[A-Za-z0-9_-]+"), "adk_[redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (
        re.compile(r"(?i)\b(signature|access_token|token|api_key|device_key)=[^&\s\"']+"),
        r"\1=[redacted]",
    ),
)
# Attributes a LogRecord has by itself; anything else was passed with extra= and is a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


# What a text line escapes, and how: named escapes where they exist, else \xNN or \uNNNN.
_TEXT_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}
# What json.dumps(ensure_ascii=False) leaves raw that still breaks or fakes lines (or is not
# UTF-8): they only occur inside JSON strings, where \uXXXX is their faithful spelling.
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_text(text: str) -> str:
    """``text`` with every control, line separator, lone surrogate and backslash escaped."""
    return _TEXT_UNSAFE.sub(_visible, text)


def escape_json(line: str) -> str:
    """A ``json.dumps(..., ensure_ascii=False)`` line with what it leaves raw escaped."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def scrub(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub_query(query: str) -> str:
    """A query string with the values of credential parameters replaced."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(
        [(k, "[redacted]" if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="[]/:,"
    )


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _fields(record)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        # One event, one line: a traceback's newlines would split it in journald, a path's CR
        # or U+2028 would forge a line. Scrubbed first, on the text as it is: a credential
        # pattern ends at whitespace, which escaping would turn into letters.
        return escape_text(scrub(line))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        body.update(_fields(record))
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return escape_json(scrub(json.dumps(body, default=str, ensure_ascii=False)))


def configure(settings: Settings | None = None, stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger to one stderr handler with the configured format and level."""
    level = settings["logging.level"] if settings else "INFO"
    fmt = settings["logging.format"] if settings else "text"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_edgecatalog", False):
            root.removeHandler(old)
    handler._edgecatalog = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    queue = logging.getLogger("waitress.queue")
    for old in [f for f in queue.filters if isinstance(f, OncePer)]:
        queue.removeFilter(old)
    # waitress warns for every request that waits for a free thread: under a burst, a line per
    # request (CPU and journal churn on a small device); once a minute says the same.
    queue.addFilter(OncePer(60.0))
    server = logging.getLogger("waitress")
    for old in [f for f in server.filters if isinstance(f, SaidAlready)]:
        server.removeFilter(old)
    server.addFilter(SaidAlready())
    return handler


class SaidAlready(logging.Filter):
    """Drops a record whose exception was logged where it was raised (``logged`` set on it):
    an export whose file broke its plan ends the connection through an ``OSError``, which
    waitress would log again with a traceback as a socket error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, "logged", False)


class OncePer(logging.Filter):
    """Lets one record through per ``seconds``; drops the rest."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.next_at = seconds, 0.0
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self.lock:
            now = time.monotonic()
            if now < self.next_at:
                return False
            self.next_at = now + self.seconds
            return True
