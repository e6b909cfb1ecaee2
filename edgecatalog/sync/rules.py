"""What goes upstream at all, and in which order: ``[upstream] select`` rules and ``[upstream]
windows``, parsed and checked, and the pure decisions made from them. No database, no Flask,
and nothing from ``config`` (which calls these parsers), so every decision here is a function
of its arguments and a test can recompute it.

A rule is a match, a sampling share, a priority and optional quotas. The first rule whose
match holds decides an image; an image no rule matches is not sent. Sampling is by content
hash: an image is in when the first 16 hex digits of its SHA-256, read as an integer, are
below ``floor(share * 2**64)``; the same image is always in or out, whatever the order it was
seen in, a restart or a retry. Priorities: 1 is the highest; a rule's default is its position.

Match terms, separated by spaces, must all hold:
``*`` (every image, alone), ``class:a,b`` (an annotation of one of these classes),
``confidence:LO-HI`` (an annotation whose confidence is within [LO, HI]), ``source:s,t`` (an
annotation from one of these sources; ``manual``, ``import`` and ``model`` alone are short
for it), ``status:s,t`` (the image's annotation status), ``device:d,e``, ``pinned``,
``annotated`` and ``unannotated``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

SOURCE_WORDS = ("manual", "import", "model")
FLAG_WORDS = ("pinned", "annotated", "unannotated")
LIST_TERMS = ("class", "source", "status", "device")
QUOTA_KEYS = ("per_hour", "per_day", "per_hour_bytes", "per_day_bytes")
RULE_KEYS = ("match", "share", "priority", "name", *QUOTA_KEYS)
STATUS_WORDS = ("pending", "in_progress", "completed")
HASH_SPACE = 2**64


@dataclass(frozen=True)
class Facts:
    """What a match looks at, for one image."""

    sha256: str
    device_id: str
    annotation_status: str
    pinned: bool
    classes: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    confidences: tuple[float, ...] = ()
    annotated: bool = False


@dataclass(frozen=True)
class Term:
    kind: str  # *, class, confidence, source, status, device, pinned, annotated, unannotated
    values: frozenset[str] = frozenset()
    low: float = 0.0
    high: float = 1.0

    def holds(self, facts: Facts) -> bool:
        if self.kind == "*":
            return True
        if self.kind in FLAG_WORDS:
            return {
                "pinned": facts.pinned,
                "annotated": facts.annotated,
                "unannotated": not facts.annotated,
            }[self.kind]
        if self.kind == "confidence":
            return any(self.low <= c <= self.high for c in facts.confidences)
        have = {
            "class": facts.classes,
            "source": facts.sources,
            "status": frozenset([facts.annotation_status]),
            "device": frozenset([facts.device_id]),
        }[self.kind]
        return bool(self.values & have)


@dataclass(frozen=True)
class Rule:
    name: str
    match: str
    terms: tuple[Term, ...]
    share: float
    priority: int
    quotas: dict[str, int] = field(default_factory=dict)  # QUOTA_KEYS present -> limit

    @property
    def catch_all(self) -> bool:
        return any(t.kind == "*" for t in self.terms)

    def matches(self, facts: Facts) -> bool:
        return all(term.holds(facts) for term in self.terms)

    def to_config(self) -> dict[str, Any]:
        """The rule as written, with defaults filled in (for check-config and fingerprints)."""
        return {"name": self.name, "match": self.match, "share": self.share,
                "priority": self.priority, **self.quotas}  # fmt: skip


# The rules in force when ``[upstream] select`` is empty: every image, priority 1.
SEND_ALL = (Rule("*", "*", (Term("*"),), 1.0, 1),)


def sampled(sha256: str, share: float) -> bool:
    """In or out of a ``share`` sample, by content hash (see the module's docstring)."""
    return int(sha256[:16], 16) < int(share * HASH_SPACE)


def decide(rules: Sequence[Rule], facts: Facts) -> tuple[Rule | None, bool]:
    """The rule that decides the image (None: none matched) and whether it is sent."""
    for rule in rules:
        if rule.matches(facts):
            return rule, sampled(facts.sha256, rule.share)
    return None, False


# -- parsing ---------------------------------------------------------------------------------
def _parse_term(word: str) -> Term:
    if word == "*":
        return Term("*")
    if word in FLAG_WORDS:
        return Term(word)
    if word in SOURCE_WORDS:
        return Term("source", frozenset([word]))
    kind, sep, rest = word.partition(":")
    if not sep:
        raise ValueError(
            f"{word!r} is not a match term (expected *, class:, confidence:, source:, status:, "
            "device:, pinned, annotated, unannotated, manual, import or model)"
        )
    if kind == "confidence":
        low, dash, high = rest.partition("-")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            lo = hi = -1.0
        if not dash or not (0.0 <= lo <= hi <= 1.0):
            raise ValueError(f"{word!r}: expected confidence:LOW-HIGH with 0 <= LOW <= HIGH <= 1")
        return Term("confidence", low=lo, high=hi)
    if kind not in LIST_TERMS:
        raise ValueError(f"{word!r}: unknown term {kind!r}")
    values = frozenset(v.strip() for v in rest.split(",") if v.strip())
    if not values:
        raise ValueError(f"{word!r}: expected {kind}:VALUE[,VALUE...]")
    if kind == "status" and not values <= set(STATUS_WORDS):
        raise ValueError(f"{word!r}: a status is one of {', '.join(STATUS_WORDS)}")
    return Term(kind, values)


def _parse_match(text: Any) -> tuple[Term, ...]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError('match is empty (expected e.g. "class:crack" or "*")')
    terms = tuple(_parse_term(word) for word in text.split())
    if len(terms) > 1 and any(t.kind == "*" for t in terms):
        raise ValueError("'*' matches every image and stands alone")
    return terms


def _number(raw: dict[str, Any], key: str, default: Any, kind: type) -> Any:
    value = raw.get(key, default)
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{key} must be {'a number' if kind is float else 'an integer'}")
    return kind(value)


def parse_rule(raw: Any, position: int) -> Rule:
    """One ``{ match = ..., share = ... }`` table; ValueError saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError('expected a table such as { match = "class:crack", share = 1.0 }')  # noqa: TRY004
    unknown = sorted(set(raw) - set(RULE_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (keys: {', '.join(RULE_KEYS)})")
    if "match" not in raw:
        raise ValueError("match is missing")
    terms = _parse_match(raw["match"])
    share = _number(raw, "share", 1.0, float)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, got {share:g}")
    priority = _number(raw, "priority", position, int)
    if priority < 1:
        raise ValueError(f"priority must be >= 1 (1 goes first), got {priority}")
    quotas = {}
    for key in QUOTA_KEYS:
        if key in raw:
            quotas[key] = _number(raw, key, 0, int)
            if quotas[key] < 0:
                raise ValueError(f"{key} must be >= 0, got {quotas[key]}")
    name = raw.get("name", " ".join(raw["match"].split()))
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string")
    return Rule(name.strip(), " ".join(raw["match"].split()), terms, share, priority, quotas)


def parse_rules(value: Any) -> tuple[Rule, ...]:
    """``[upstream] select`` -> rules; ValueError naming the rule (its position and match)."""
    if not isinstance(value, list):
        raise ValueError('expected a list of rules, e.g. [{ match = "*", share = 0.05 }]')  # noqa: TRY004
    rules: list[Rule] = []
    for position, raw in enumerate(value, 1):
        try:
            rules.append(parse_rule(raw, position))
        except ValueError as exc:
            shown = raw.get("match") if isinstance(raw, dict) else raw
            raise ValueError(f"rule {position} ({shown!r}): {exc}") from None
    names = [rule.name for rule in rules]
    for position, name in enumerate(names, 1):
        if names.index(name) + 1 != position:
            raise ValueError(
                f"rule {position} ({name!r}): rule {names.index(name) + 1} has the same name; "
                'give one a name = "..."'
            )
    return tuple(rules)


def unreachable(rules: Sequence[Rule]) -> list[str]:
    """Warnings for rules that can never decide an image (they follow a ``*``)."""
    for position, rule in enumerate(rules, 1):
        if rule.catch_all and position < len(rules):
            return [
                f"rule {later} ({rules[later - 1].match!r}) can never match: rule {position} "
                "('*') takes every image before it"
                for later in range(position + 1, len(rules) + 1)
            ]
    return []


# -- windows ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """Minutes of the local day: [start, end), across midnight when end <= start."""

    start: int
    end: int

    def holds(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def _minute(text: str, allow_24: bool) -> int:
    hours, sep, minutes = text.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0) and allow_24:
        return 24 * 60
    if h > 23 or m > 59:
        raise ValueError
    return h * 60 + m


def parse_window(text: str) -> Window:
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError
        window = Window(_minute(start, False), _minute(end, True))
    except ValueError:
        raise ValueError(f'{text!r}: expected HH:MM-HH:MM, e.g. "22:00-06:00"') from None
    if window.start == window.end:
        raise ValueError(f"{text!r}: a window must not start where it ends")
    return window


def parse_windows(values: Iterable[str]) -> tuple[Window, ...]:
    return tuple(parse_window(text) for text in values)


def _local_minute(ts: float) -> int:
    local = time.localtime(ts)
    return local.tm_hour * 60 + local.tm_min


def in_window(windows: Sequence[Window], ts: float) -> bool:
    """No windows: always. Otherwise whether the device's local time ``ts`` is inside one."""
    return not windows or any(w.holds(_local_minute(ts)) for w in windows)


def next_open(windows: Sequence[Window], ts: float) -> float | None:
    """When the next window opens after ``ts`` (epoch seconds); None without windows."""
    if not windows:
        return None
    day = dt.datetime.fromtimestamp(ts).replace(hour=0, minute=0, second=0, microsecond=0)
    opens = [
        (day + dt.timedelta(days=d, minutes=w.start)).timestamp()
        for d in (0, 1, 2)
        for w in windows
    ]
    return min(t for t in opens if t > ts)


def period_starts(ts: float) -> tuple[float, float]:
    """The start of the local clock hour and of the local day holding ``ts`` (epoch seconds):
    the periods ``per_hour`` and ``per_day`` quotas count in."""
    local = dt.datetime.fromtimestamp(ts)
    hour = local.replace(minute=0, second=0, microsecond=0).timestamp()
    day = local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    return hour, day
