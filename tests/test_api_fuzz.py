"""schemathesis against the live server (real waitress on a loopback port, real tokens):
for the read endpoints and the upload endpoint, no 5xx and every response (status, content
type, headers, body) conforms to the document. Small example counts keep it fast; the
``slow`` variant runs many more.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from conftest import make_settings, seed_image
from hypothesis import HealthCheck
from hypothesis import settings as hyp_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_process import ThreadedServer

from edgecatalog import apidoc, create_app
from edgecatalog.auth import Authenticator
from edgecatalog.catalog import NewAnnotation
from edgecatalog.models import database

SCHEMA = schemathesis.openapi.from_dict(apidoc.document())
FUZZED = SCHEMA.include(method="GET").include(
    path=["/device/images/upload", "/api/device/images/upload"], method="POST"
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
QUICK = int(os.environ.get("EDGECATALOG_FUZZ_EXAMPLES", "8"))


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    settings = make_settings(tmp, site__enabled=True)  # the gateway's /api routes too
    app = create_app(settings)
    ann = NewAnnotation(
        class_value="scratch", type="bbox", geometry=(0.5, 0.5, 0.2, 0.2), confidence=0.9
    )
    with database.connection_context():
        for seed in range(3):
            seed_image(settings, filename=f"f{seed}.jpg", seed=seed, annotations=(ann,))
    server = ThreadedServer(app, threads=4)
    token = Authenticator(settings).issue_token("fuzzer", "write")
    yield server.url, {"Authorization": f"Bearer {token}"}
    server.close()
    if not database.is_closed():
        database.close()


def _run(case, fuzz_target) -> None:
    url, headers = fuzz_target
    case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=30)


@FUZZED.parametrize()
@hyp_settings(
    max_examples=QUICK, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_live_server_conforms(case, fuzz_target):
    _run(case, fuzz_target)


@pytest.mark.slow
@FUZZED.parametrize()
@hyp_settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
def test_live_server_conforms_long(case, fuzz_target):
    _run(case, fuzz_target)
