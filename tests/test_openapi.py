"""The OpenAPI document: valid, in step with the registered routes both ways, served at
/openapi.json, and agreeing with the upstream seed for GET /data/images (extended only
additively). The live-server fuzzing is in test_api_fuzz.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from edgecatalog import apidoc

SEED = Path(__file__).parent / "contract" / "list-images.openapi.md"
METHODS = {"get", "post", "put", "patch", "delete"}


def seed_document() -> dict[str, Any]:
    text = SEED.read_text()
    block = re.search(r"````yaml[^\n]*\n(.*?)````", text, re.DOTALL)
    assert block, "the seed's yaml block was not found"
    return yaml.safe_load(block.group(1))


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = doc["components"]["schemas"][name]
    return node


def properties(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Properties of a schema, through $ref and allOf (later parts win)."""
    schema = resolve(doc, schema)
    found: dict[str, Any] = {}
    for part in schema.get("allOf", []):
        found.update(properties(doc, part))
    found.update(schema.get("properties", {}))
    return found


def type_of(doc: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """The declared type, also when it is stated by the parts of an allOf."""
    schema = resolve(doc, schema)
    if "type" in schema:
        return schema["type"]
    types = {type_of(doc, part) for part in schema.get("allOf", [])} - {None}
    assert len(types) <= 1, f"allOf parts disagree: {types}"
    return types.pop() if types else None


def normalise(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def flask_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        # No exclusions: Flask's own /static is off (static_folder=None), and the page's
        # /static/<path:name> is a real route of ours, so it is documented like the others.
        path = normalise(re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule))
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method.lower(), path))
    return routes


def test_document_is_valid_openapi_3():
    doc = apidoc.document()
    validate(doc)
    assert doc["openapi"].startswith("3.")


def test_every_route_is_documented_and_nothing_else(app):
    doc = apidoc.document()
    documented = {
        (method, normalise(path))
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
    routes = flask_routes(app)
    assert sorted(routes - documented) == [], "routes missing from the document"
    assert sorted(documented - routes) == [], "documented operations the app does not have"


def test_served_document_is_the_package_document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == apidoc.document()


def test_every_operation_declares_auth_and_an_error_shape():
    doc = apidoc.document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert "security" in operation, f"{method} {path}"
            errors = [code for code in operation["responses"] if code.startswith(("4", "5"))]
            assert errors, f"{method} {path} documents no error response"


def _same_type(ours: dict[str, Any], theirs: dict[str, Any], doc, seed, where: str) -> None:
    ours, theirs = resolve(doc, ours), resolve(seed, theirs)
    assert type_of(doc, ours) == type_of(seed, theirs), where
    if theirs.get("type") == "array":
        _same_type(ours["items"], theirs["items"], doc, seed, where + "[]")
    for name, schema in properties(seed, theirs).items():
        mine = properties(doc, ours)
        assert name in mine, f"{where}.{name} is missing"
        _same_type(mine[name], schema, doc, seed, f"{where}.{name}")


def test_list_images_agrees_with_the_seed():
    doc, seed = apidoc.document(), seed_document()
    ours = doc["paths"]["/data/images"]["get"]
    theirs = seed["paths"]["/data/images"]["get"]
    mine = {(p["name"], p["in"]): p for p in ours["parameters"]}
    for param in theirs["parameters"]:
        key = (param["name"], param["in"])
        assert key in mine, f"parameter {key} is missing"
        assert mine[key]["schema"]["type"] == param["schema"]["type"], key
        assert mine[key].get("required", False) == param.get("required", False), key
    for status, response in theirs["responses"].items():
        assert status in ours["responses"], f"response {status} is missing"
        their_schema = response["content"]["application/json"]["schema"]
        our_schema = ours["responses"][status]["content"]["application/json"]["schema"]
        for name, schema in properties(seed, their_schema).items():
            assert name in properties(doc, our_schema), f"{status}: field {name} is missing"
            _same_type(properties(doc, our_schema)[name], schema, doc, seed, f"{status}.{name}")
    assert ours["security"] == theirs["security"]


@pytest.mark.parametrize(
    "name",
    [
        "types.APIResponse",
        "types.ImageDetailResponse",
        "types.AnnotationDTO",
        "types.APIMeta",
        "types.APIError",
    ],
)
def test_seed_component_schemas_kept_their_names_and_types(name):
    doc, seed = apidoc.document(), seed_document()
    assert name in doc["components"]["schemas"]
    _same_type(
        doc["components"]["schemas"][name], seed["components"]["schemas"][name], doc, seed, name
    )


def test_agreement_check_catches_a_changed_type():
    # The comparison above must be able to fail: change one field's type and look.
    doc, seed = apidoc.document(), seed_document()
    doc["components"]["schemas"]["types.ImageDetailResponse"]["properties"]["width"] = {
        "type": "string"
    }
    with pytest.raises(AssertionError):
        _same_type(
            doc["components"]["schemas"]["types.ImageDetailResponse"],
            seed["components"]["schemas"]["types.ImageDetailResponse"],
            doc,
            seed,
            "x",
        )
