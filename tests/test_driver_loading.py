"""A catalog on SQLite never loads the PostgreSQL driver (~12 MB of a device's 80 MB), and one
on PostgreSQL gets it; with no upstream, neither loads the HTTP client (requests, ~5 MB): each
in a fresh interpreter, as the service starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import engine_database

CHECK = """
import json, sys
from pathlib import Path
from edgecatalog import create_app
from edgecatalog.config import load_settings
import peewee
path = Path(sys.argv[1])
app = create_app(load_settings(path))
with app.test_client() as client:
    status = client.get("/readyz", headers={"Host": "localhost"}).status_code
print(json.dumps({"psycopg": "psycopg" in sys.modules, "peewee_driver": peewee.psycopg is not None,
                  "requests": "requests" in sys.modules, "ready": status}))
"""


def _run(tmp_path, config: str) -> dict:
    path = tmp_path / "c.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_sqlite_catalog_never_imports_psycopg(tmp_path):
    got = _run(tmp_path, f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    assert got == {"psycopg": False, "peewee_driver": False, "requests": False, "ready": 200}


def test_a_postgres_catalog_hands_peewee_its_driver(tmp_path, request):
    pytest.importorskip("psycopg")
    url = engine_database(request, "postgres")
    got = _run(
        tmp_path,
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[database]\nurl = "{url}"\n',
    )
    assert got == {"psycopg": True, "peewee_driver": True, "requests": False, "ready": 200}
