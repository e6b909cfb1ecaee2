"""One small parser per kind of query-string parameter (the JSON bodies are
``views.bodies``').

Each raises ``ValidationError`` naming the parameter and the accepted form; none falls back
silently to a default when a value is given but wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ValidationError
from .timeutil import parse_ts

MAX_ID = 2**63 - 1
MAX_DIGITS = 64
_TRUE = ("true", "1")
_FALSE = ("false", "0")


def parse_int(
    name: str, text: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    stripped = text.strip()
    body = stripped[1:] if stripped[:1] in "+-" else stripped
    # Long digit strings are still integers (so a huge limit is clamped, a huge id is out of
    # range), but the length is capped: int() of a very long string costs quadratic time.
    if not body.isascii() or not body.isdigit() or len(body) > MAX_DIGITS:
        raise ValidationError(name, f"{name} must be an integer, got {_show(text)}")
    value = int(stripped)
    if minimum is not None and value < minimum:
        raise ValidationError(name, f"{name} must be >= {minimum}, got {_show(str(value))}")
    if maximum is not None and value > maximum:
        raise ValidationError(name, f"{name} must be <= {maximum}, got {_show(str(value))}")
    return value


def parse_id(name: str, text: str) -> int:
    return parse_int(name, text, minimum=1, maximum=MAX_ID)


def parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValidationError(name, f"{name} must be true, false, 1 or 0, got {_show(text)}")


def parse_unit(name: str, text: str) -> float:
    """A number in 0..1 (a confidence): plain decimal notation, no NaN or infinity."""
    stripped = text.strip()
    try:
        value = float(stripped) if stripped and len(stripped) <= 32 else None
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 1:  # NaN fails it too
        raise ValidationError(name, f"{name} must be a number in 0..1, got {_show(text)}")
    return value


def parse_choice(name: str, text: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if text not in choices:
        raise ValidationError(
            name, f"{name} must be one of {', '.join(choices)}, got {_show(text)}"
        )
    return text


def parse_nullable_id(name: str, text: str) -> int | None:
    """An integer id, or the literal 'null' meaning 'has none'."""
    if text == "null":
        return None
    try:
        return parse_id(name, text)
    except ValidationError:
        raise ValidationError(
            name, f"{name} must be an integer id or null, got {_show(text)}"
        ) from None


def parse_instant(name: str, text: str) -> int:
    """An instant as microseconds since the epoch: ISO 8601 with an offset or ``Z``, or epoch
    milliseconds. A time without an offset is refused rather than guessed (the device's
    zone? UTC?): the same text would select different images on two machines."""
    stripped = text.strip()
    body = stripped[1:] if stripped[:1] == "-" else stripped
    if body.isascii() and body.isdigit() and len(body) <= 16:
        return int(stripped) * 1000
    expected = (
        f"{name} must be ISO 8601 with an offset or Z (2026-11-28T10:00:00Z) or epoch "
        f"milliseconds, got {_show(text)}"
    )
    has_offset = stripped[-1:] in ("Z", "z") or re.search(r"[+-]\d\d:?\d\d$", stripped)
    if "T" not in stripped.upper() or not has_offset or not stripped.isascii():
        raise ValidationError(name, expected)
    try:
        value = parse_ts(stripped)
    except (ValueError, OverflowError):
        raise ValidationError(name, expected) from None
    if abs(value) > MAX_ID:
        raise ValidationError(name, expected)
    return value


def parse_csv(name: str, text: str, *, max_items: int) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if len(items) > max_items:
        raise ValidationError(name, f"{name} accepts at most {max_items} items, got {len(items)}")
    return items


def single_values(args: Any, names: Iterable[str], *, max_chars: int) -> dict[str, str]:
    """The known parameters of a MultiDict, each given at most once and not overlong.

    A parameter given twice is ambiguous (first? last? both?), so it is an error rather than
    a guess. Unknown parameters are ignored, as upstream does.
    """
    values: dict[str, str] = {}
    for name in names:
        given = (
            args.getlist(name) if hasattr(args, "getlist") else [args[name]] if name in args else []
        )
        if not given:
            continue
        if len(given) > 1:
            raise ValidationError(name, f"{name} was given {len(given)} times; give it once")
        value = given[0]
        if len(value) > max_chars:
            raise ValidationError(name, f"{name} is longer than {max_chars} characters")
        if "\x00" in value:
            raise ValidationError(name, f"{name} must not contain NUL characters")
        values[name] = value
    return values


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


PAGE_PARAMS = ("limit", "offset")


def parse_page(
    given: Mapping[str, str], *, default_limit: int = 50, max_limit: int = 100
) -> tuple[int, int]:
    """(limit, offset) as /data/images takes them: a limit above the maximum is clamped (as
    upstream), below 1 is an error; offset >= 0."""
    limit = default_limit
    if "limit" in given:
        limit = min(parse_int("limit", given["limit"], minimum=1), max_limit)
    offset = (
        parse_int("offset", given["offset"], minimum=0, maximum=MAX_ID) if "offset" in given else 0
    )
    return limit, offset
