"""``edgecatalog stats``: the same answer as GET /data/images/facets for the same options
(``--json``: the endpoint's data and meta), as a table otherwise; a bad option is one line
naming it, from the real command."""

from __future__ import annotations

import io
import json

import pytest
import timed_catalog
from test_cli import assert_one_line_error, run

from edgecatalog.stats_command import run_stats

pytestmark = pytest.mark.both_engines
OPTIONS = [
    {},
    {"device_id": "cam02", "facets": "class_value,split"},
    {"class_values": "crack", "histogram": "captured_at:day", "tz": "Europe/Berlin"},
    {"captured_after": "2026-03-28T00:00:00Z", "confidence_bins": "5", "facet_size": "2"},
]


def test_json_is_the_endpoints_answer(settings, client, auth_headers):
    timed_catalog.build(settings)
    for options in OPTIONS:
        out = io.StringIO()
        assert run_stats(settings, options, as_json=True, out=out) == 0
        resp = client.get("/data/images/facets", query_string=options, headers=auth_headers())
        want = resp.get_json()
        assert json.loads(out.getvalue()) == {"data": want["data"], "meta": want["meta"]}
        table = io.StringIO()
        run_stats(settings, options, as_json=False, out=table)
        assert table.getvalue().startswith(f"images: {want['meta']['total']}\n")
        for name, facet in want["data"]["facets"].items():
            assert name in table.getvalue()
            for item in facet["values"]:
                assert str(item["count"]) in table.getvalue()


def test_the_command_refuses_a_bad_option_in_one_line(tmp_path):
    """The command's own argument handling, on its default engine (SQLite)."""
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{(tmp_path / "d").as_posix()}"\n'
        f'[auth]\njwt_secret = "{"s" * 40}"\n'
    )
    ok = run(tmp_path, "stats", "--config", str(config), "--facets", "split")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("images: 0\n\nsplit")
    bad = run(tmp_path, "stats", "--config", str(config), "--facet-size", "5000")
    assert_one_line_error(bad, "facet_size", "1000")
