"""The OpenAPI document: valid, in step with the registered routes both ways, served at
/openapi.json, agreeing with the upstream seed for GET /data/images (extended only
additively), committed exactly as ``apidoc.generate`` makes it, and tied to the declarations it
is generated from (a filter, a serialized field or a patchable field added to the code shows up
in it). The live-server fuzzing is in test_api_fuzz.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from edgecatalog import apidoc, catalog, param_types, serialize
from edgecatalog import listing as queries

SEED = Path(__file__).parent / "contract" / "list-images.openapi.md"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def settings(tmp_path: Path, database_url: str):
    """The document covers the site gateway's routes too, which the app serves with [site]
    enabled (the generator builds its app so)."""
    from conftest import make_settings

    return make_settings(tmp_path, database__url=database_url, site__enabled=True)


def seed_document() -> dict[str, Any]:
    text = SEED.read_text()
    block = re.search(r"````yaml[^\n]*\n(.*?)````", text, re.DOTALL)
    assert block, "the seed's yaml block was not found"
    return yaml.safe_load(block.group(1))


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local references: a schema's, or an operation's shared error response."""
    while "$ref" in node:
        pointer = node["$ref"].removeprefix("#/").split("/")
        node = doc
        for part in pointer:
            node = node[part]
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
        our_response = resolve(doc, ours["responses"][status])
        our_schema = our_response["content"]["application/json"]["schema"]
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


# -- the document is generated from the code ------------------------------------------------


def test_committed_document_is_the_generated_one(app):
    committed = apidoc.COMMITTED.read_text(encoding="utf-8")
    generated = apidoc.render(apidoc.generate(app))
    assert json.loads(committed) == json.loads(generated), (
        f"{apidoc.COMMITTED.name} is stale: regenerate it with `{apidoc.REGENERATE}`"
    )
    assert committed == generated, f"formatting differs: regenerate with `{apidoc.REGENERATE}`"


def _list_parameters(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in doc["paths"]["/data/images"]["get"]["parameters"]}


def test_a_filter_added_to_the_code_is_in_the_document(app, monkeypatch):
    before = apidoc.generate(app)
    colour = queries.Filter(
        "colour", param_types.choice(("red", "blue")), lambda v: None, "dominant colour"
    )
    monkeypatch.setattr(queries, "FILTERS", (*queries.FILTERS, colour))
    after = apidoc.generate(app)
    assert after != before
    added = _list_parameters(after)["colour"]
    assert added["in"] == "query" and added["description"] == "dominant colour"
    assert added["schema"] == {"type": "string", "enum": ["red", "blue"]}
    assert "colour" not in _list_parameters(before)


def test_list_parameters_are_the_declared_filters_and_options(app):
    documented = _list_parameters(apidoc.generate(app))
    declared = [f.param for f in queries.FILTERS] + list(queries.OPTION_PARAMS)
    assert list(documented) == declared
    assert documented["limit"]["schema"]["default"] == queries.DEFAULT_LIMIT
    assert documented["sort"]["schema"]["enum"] == list(queries.SORTS)


def test_every_list_parser_states_its_type():
    # A bare function would be documented as a plain string: the image list's are all typed.
    for declared in (*queries.FILTERS, *queries.OPTIONS):
        assert isinstance(declared.parse, param_types.TypedParser), declared.param


def test_a_field_added_to_the_serializer_is_in_the_schema(app, monkeypatch):
    extra = serialize.FieldSpec(
        "exposure_ms", "number", lambda row: row["exposure_ms"], "exposure time", nullable=True
    )
    monkeypatch.setattr(serialize, "IMAGE_FIELDS", (*serialize.IMAGE_FIELDS, extra))
    schema = apidoc.generate(app)["components"]["schemas"]["types.ImageDetailResponse"]
    assert schema["properties"]["exposure_ms"] == {
        "type": "number",
        "nullable": True,
        "description": "exposure time",
    }


def test_a_patchable_field_is_in_the_update_body(app, monkeypatch):
    monkeypatch.setattr(catalog, "EDITABLE", (*catalog.EDITABLE, "version_name"))
    body = apidoc.generate(app)["components"]["schemas"]["ImageUpdateRequest"]
    assert list(body["properties"]) == list(catalog.EDITABLE)
    assert body["properties"]["version_name"] == {"type": "string"}


def test_image_schema_lists_the_serializers_fields_in_order():
    doc = apidoc.document()
    row = {
        "id": 1,
        "filename": "a.jpg",
        "storage_key": "k",
        "width": 4,
        "height": 3,
        "device_id": "d",
        "batch": 2,
        "batch_name": None,
        "project_name": None,
        "annotation_status": "pending",
        "split": "none",
        "split_locked": 0,
        "version_name": None,
        "created_at": 1,
        "updated_at": 1,
        "sync_state": "pending",
        "synced_at": None,
        "pinned": 0,
        "annotations": [],
    }
    served = serialize.image_to_dict(row, lambda image_id: f"/files/{image_id}")
    schema = doc["components"]["schemas"]["types.ImageDetailResponse"]
    assert list(served) == list(schema["properties"])


def test_error_responses_are_shared_components():
    doc = apidoc.document()
    shared = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")) or (path, status) == ("/readyz", "503"):
                    continue  # readyz's 503 carries the checks: a shape of its own
                name = response.get("$ref", "").rsplit("/", 1)[-1]
                assert name in shared, f"{method} {path} {status} is not a shared response"


def test_security_follows_the_access_declarations(app):
    from edgecatalog.access import route_access

    doc, declared = apidoc.generate(app), route_access(app)
    by_operation = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}
    for endpoint, access in declared.items():
        op = by_operation[apidoc.OPERATIONS[endpoint].operation_id]
        assert (op["security"] == []) == access.public, endpoint
        assert ({"DeviceKey": []} in op["security"]) == access.device_key, endpoint
        assert ({} in op["security"]) == bool(access.allow_from), endpoint
        assert ("401" in op["responses"]) == (not access.public), endpoint


def test_a_route_without_a_table_entry_fails_the_generator(app, monkeypatch):
    monkeypatch.delitem(apidoc.OPERATIONS, "sync.sync_status")
    with pytest.raises(KeyError, match="sync.sync_status"):
        apidoc.generate(app)


def test_single_image_variant_of_the_field_table():
    # Built from the same table: a single image with a URL and no annotations key.
    row = {
        "id": 1,
        "filename": "a.jpg",
        "storage_key": "k",
        "width": 4,
        "height": 3,
        "device_id": "d",
        "batch": 2,
        "batch_name": "b",
        "project_name": "p",
        "annotation_status": "pending",
        "split": "none",
        "split_locked": 1,
        "version_name": "v",
        "created_at": 1,
        "updated_at": 1,
        "sync_state": "synced",
        "synced_at": 1,
        "pinned": 1,
        "evicted_at": 5,
    }
    served = serialize.image_to_dict(row, lambda image_id: "unused")
    assert served["image_url"] == "" and "annotations" not in served
    assert list(served)[:4] == ["id", "filename", "storage_key", "image_url"]
