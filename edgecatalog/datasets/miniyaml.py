"""The part of YAML a YOLO ``data.yaml`` is written in, read without a YAML library: top-level
``key: value`` lines whose value is a scalar (plain, 'single' or "double" quoted), a flow list
``[a, b]`` or mapping ``{0: a}``, or an indented block of ``- item`` or ``key: value`` lines;
``#`` comments. Anything else is refused with its line (``MalformedDataset``), never guessed
at; no anchors, tags or documents to expand. No Flask.
"""

from __future__ import annotations

import json
import re

from .source import MalformedDataset

Value = str | list[str] | dict[str, str]
_KEY = re.compile(r"^([A-Za-z0-9_]+)\s*:(.*)$")


def parse(text: str, name: str) -> dict[str, Value]:
    out: dict[str, Value] = {}
    block: list[str] | dict[str, str] | None = None
    last = ""
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{name} line {number}"
        line = _strip_comment(raw, where).rstrip()
        if not line.strip():
            continue
        if line[0] in " \t":
            item = line.strip()
            if block is None:
                raise MalformedDataset(where, "an indented line belongs to no key")
            if item.startswith("- ") or item == "-":
                if isinstance(block, dict) and block:
                    raise MalformedDataset(where, "a list item among key: value lines")
                if isinstance(block, dict):
                    block = out[last] = []  # the key's block is a list after all
                block.append(_scalar(item[1:].strip(), where))
                continue
            key, value = _pair(item, where)
            if isinstance(block, list):
                raise MalformedDataset(where, "a key: value line among list items")
            block[key] = _scalar(value, where)
            continue
        match = _KEY.match(line)
        if match is None:
            raise MalformedDataset(where, "expected 'key: value'")
        last, value = match.group(1), match.group(2).strip()
        if last in out:
            raise MalformedDataset(where, f"{last} is given twice")
        if value:
            out[last], block = _flow(value, where), None
        else:
            out[last] = block = {}
    return out


def _strip_comment(line: str, where: str) -> str:
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    if quote:
        raise MalformedDataset(where, "an unclosed quote")
    return line


def _pair(item: str, where: str) -> tuple[str, str]:
    key, colon, value = item.partition(":")
    if not colon or not key.strip():
        raise MalformedDataset(where, "expected 'key: value' or '- item'")
    return _scalar(key.strip(), where), value.strip()


def _flow(value: str, where: str) -> Value:
    if value.startswith(("[", "{")):
        close = "]" if value[0] == "[" else "}"
        if not value.endswith(close):
            raise MalformedDataset(where, f"a flow collection must end with {close!r} on its line")
        items = [i for i in _split(value[1:-1], where) if i.strip()]
        if close == "]":
            return [_scalar(i.strip(), where) for i in items]
        return {k: _scalar(v, where) for k, v in (_pair(i.strip(), where) for i in items)}
    return _scalar(value, where)


def _split(text: str, where: str) -> list[str]:
    parts, current, quote = [], "", ""
    for c in text:
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == ",":
            parts.append(current)
            current = ""
            continue
        elif c in "[]{}":
            raise MalformedDataset(where, "nested collections are not read")
        current += c
    return [*parts, current]


def _scalar(text: str, where: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            raise MalformedDataset(where, f"a bad double-quoted string: {text[:40]}") from None
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text[:1] in ("&", "*", "!", "|", ">", "[", "{", "'", '"'):
        raise MalformedDataset(where, f"not read here: {text[:40]}")
    return text
