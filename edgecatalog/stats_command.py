"""``edgecatalog stats [filters and facet options] [--json]``: the answer of
``GET /data/images/facets`` for the same options, as a table in the terminal or as the
endpoint's JSON (``data`` and ``meta``). The options go through the endpoint's own parser, so
a bad value is refused in the same words. No Flask.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TextIO

from .config import Settings
from .errors import CatalogError
from .listing import FACET_OPTIONS, FILTERS, answer_stats, parse_facet_request, stats_table


class StatsRefused(Exception):
    """The options were refused (the message says which and why)."""


def option_names() -> list[str]:
    return [f.param for f in FILTERS] + [o.param for o in FACET_OPTIONS]


def run_stats(
    settings: Settings, options: Mapping[str, str], *, as_json: bool, out: TextIO = sys.stdout
) -> int:
    from . import db
    from .models import database

    db.open_for(settings)
    db.migrate()
    try:
        request = parse_facet_request(
            options,
            max_class_values=settings["limits.max_class_values"],
            max_chars=settings["limits.max_param_chars"],
        )
        with database.connection_context():
            data, total = answer_stats(request)
    except CatalogError as exc:
        raise StatsRefused(f"{exc.details}: {exc.message}" if exc.details else exc.message)
    if as_json:
        out.write(json.dumps({"data": data, "meta": {"total": total}}, indent=2) + "\n")
    else:
        out.write(stats_table(data, total) + "\n")
    return 0
