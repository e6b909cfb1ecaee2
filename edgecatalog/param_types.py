"""Query-string parameters that say what they accept: a ``params`` parser paired with the JSON
Schema of the text it takes, so the list filters (``listing.FILTERS``) and options are declared
once and both parsed and documented from that declaration (``apidoc``). No Flask here.

A ``TypedParser`` is called like the plain parsers, ``parse(name, text)``; ``Param`` is one
named parameter that is not a filter (an option such as ``limit``) with its help text.
``schema_of`` answers for any parser (none for a plain function).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import params


@dataclass(frozen=True, eq=False)
class TypedParser:
    """A parser of one parameter's text and the JSON Schema of the text it accepts."""

    parse: Callable[[str, str], Any]
    schema: Mapping[str, Any]

    def __call__(self, name: str, text: str) -> Any:
        return self.parse(name, text)


@dataclass(frozen=True, eq=False)
class Param:
    """A query parameter other than a filter: its name, parser and help text."""

    param: str
    parse: TypedParser
    help: str
    required: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)  # more schema, e.g. a default


def _text(name: str, text: str) -> str:
    return text


TEXT = TypedParser(_text, {"type": "string"})
BOOL = TypedParser(params.parse_bool, {"type": "boolean"})
UNIT = TypedParser(params.parse_unit, {"type": "number", "minimum": 0, "maximum": 1})
# The upstream contract types its id filters as strings (tests/contract): kept, with the form
# the parser takes as a pattern.
ID = TypedParser(params.parse_id, {"type": "string", "pattern": "^[0-9]+$"})
# An instant (``params.parse_instant``): microseconds since the epoch once parsed.
INSTANT = TypedParser(
    params.parse_instant,
    {"type": "string", "pattern": "^(-?[0-9]+|[0-9]{4}-.+T.+([Zz]|[+-][0-9]{2}:?[0-9]{2}))$"},
)
NULLABLE_ID = TypedParser(
    params.parse_nullable_id, {"type": "string", "pattern": "^([0-9]+|null)$"}
)


def schema_of(parse: Callable[[str, str], Any]) -> Mapping[str, Any] | None:
    """The schema a typed parser declares; None for any other function (a lambda states
    nothing)."""
    return parse.schema if isinstance(parse, TypedParser) else None


def choice(values: tuple[str, ...]) -> TypedParser:
    """One of ``values``, exactly."""
    return TypedParser(
        lambda name, text: params.parse_choice(name, text, values),
        {"type": "string", "enum": list(values)},
    )


def csv(max_items: int) -> TypedParser:
    """Comma-separated values, duplicates dropped, at most ``max_items`` of them."""
    return TypedParser(
        lambda name, text: params.parse_csv(name, text, max_items=max_items), {"type": "string"}
    )


def page_params(default_limit: int, max_limit: int) -> tuple[Param, Param]:
    """``limit`` and ``offset`` as ``params.parse_page`` takes them: a limit above the maximum
    is clamped (so the schema states no maximum), below 1 is an error."""
    limit = TypedParser(
        lambda name, text: min(params.parse_int(name, text, minimum=1), max_limit),
        {"type": "integer", "minimum": 1},
    )
    offset = TypedParser(
        lambda name, text: params.parse_int(name, text, minimum=0, maximum=params.MAX_ID),
        {"type": "integer", "minimum": 0, "maximum": params.MAX_ID},
    )
    return (
        Param(
            "limit",
            limit,
            f"page size (default {default_limit}, at most {max_limit}; larger is clamped)",
            extra={"default": default_limit},
        ),
        Param("offset", offset, "number of results to skip", extra={"default": 0}),
    )
