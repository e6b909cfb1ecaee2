"""The OpenAPI 3 document of the service: generated from the declarations the code runs on, and
committed as ``openapi/openapi.json``.

Regenerate the committed file after changing a route, its access, a filter, a serialized field
or a body::

    .venv/bin/python -m edgecatalog.openapi_write --write

(``--check`` exits 1 when the committed file is stale; tests/test_openapi.py fails then too.)

``generate(app)`` builds the document from:

* the app's routes (paths, methods, path parameters from the URL converters) and each route's
  ``access.route_access`` declaration (security, and the query parameters of a signed URL);
* the query parameters the view parses: ``listing.FILTERS`` and ``listing.OPTIONS`` for
  GET /data/images, ``batches.BATCH_FILTERS`` for GET /data/batches; each parser states its
  type (``param_types``);
* the response objects' fields from ``serialize`` (``IMAGE_FIELDS`` and the others);
* the request bodies' fields: ``catalog.PATCHABLE`` and the fields lists of ``views.bodies``,
  typed from the serialized fields and the code's limits;
* error statuses: 414 and 500 everywhere, 401/403 unless public, 429 with a device key, 400
  when the route takes parameters or a body, 404 with a path parameter, 413/415 with a body,
  503 when it uses the database, plus the extra ones ``openapi_spec`` names; each a shared
  ``components/responses`` entry.

The prose (summaries, descriptions, success responses' wording) and the shapes no code module
declares are ``openapi_spec``'s. ``document()`` serves the committed file (the running service
needs no app to describe itself). Flask is imported only by the generator.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import bulk_edits, catalog, listing, openapi_spec, param_types, projects, serialize, site
from .models import ANNOTATION_TYPES, SPLITS
from .openapi_spec import ERRORS, OPERATIONS, Operation, QueryParam, ref
from .version import __version__
from .views import bodies

if TYPE_CHECKING:  # the web edge: imported by the generator only, at run time
    from flask import Flask

    from .access import Access

COMMITTED = Path(__file__).parent / "openapi" / "openapi.json"
REGENERATE = ".venv/bin/python -m edgecatalog.openapi_write --write"
METHODS = ("get", "put", "post", "patch", "delete")
_VARIABLE = re.compile(r"<(?:([a-zA-Z_]+)(?:\([^)]*\))?:)?([^>]+)>")


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files("edgecatalog").joinpath("openapi/openapi.json").read_text("utf-8")
    doc = json.loads(text)
    doc["info"]["version"] = __version__
    return doc


def document() -> dict[str, Any]:
    """A fresh copy of the committed document, so a caller can change it without touching the
    cached one."""
    return copy.deepcopy(_load())


# -- schemas from the code's declarations -------------------------------------------------------

_JSON_TYPES = frozenset({"integer", "number", "string", "boolean", "object"})


def field_schema(spec: serialize.FieldSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": spec.type}
    if spec.items:
        schema["items"] = {"type": spec.items} if spec.items in _JSON_TYPES else ref(spec.items)
    if spec.enum:
        schema["enum"] = list(spec.enum)
    if spec.nullable:
        schema["nullable"] = True
    if spec.description:
        schema["description"] = spec.description
    return schema


def object_schema(specs: Iterable[serialize.FieldSpec]) -> dict[str, Any]:
    return {"type": "object", "properties": {spec.name: field_schema(spec) for spec in specs}}


def _fields(
    specs: tuple[serialize.FieldSpec, ...], names: Iterable[str]
) -> dict[str, dict[str, Any]]:
    by_name = {spec.name: spec for spec in specs}
    return {name: field_schema(by_name[name]) for name in names}


def _request(
    properties: Mapping[str, Any], *, required: Iterable[str] = (), patch: bool = False
) -> dict[str, Any]:
    """A JSON request body: only these fields (views.bodies rejects others); a patch needs at
    least one."""
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if required := list(required):
        schema["required"] = required
    if patch:
        schema["minProperties"] = 1
    schema["properties"] = dict(properties)
    return schema


def _annotation_request(names: Iterable[str]) -> dict[str, Any]:
    known = {
        "image_id": {"type": "integer", "minimum": 1},
        "class_value": {"type": "string", "minLength": 1, "maxLength": catalog.MAX_CLASS_CHARS},
        "type": {"type": "string", "enum": list(ANNOTATION_TYPES)},
        "geometry": {"type": "array", "items": dict(openapi_spec.UNIT)},
        "z_order": {"type": "integer", "minimum": -catalog.MAX_Z, "maximum": catalog.MAX_Z},
        "confidence": {**openapi_spec.UNIT, "nullable": True},
        "source": {"type": "string", "maxLength": catalog.MAX_SOURCE_CHARS},
    }
    # A field added to views.bodies without a type here is a KeyError: the generator stops.
    return {name: dict(known[name]) for name in names}


def _bulk_request() -> dict[str, Any]:
    """PATCH /data/images: the selection (ids, or the list's filters as their query-string
    text), and the change (set and/or assign_split, force)."""
    unit = dict(openapi_spec.UNIT)
    filters = {f.param: {"type": "string", "description": f.help} for f in listing.FILTERS}
    return _request(
        {
            "ids": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 1,
                "maxItems": bulk_edits.MAX_IDS,
            },
            "filter": {"type": "object", "additionalProperties": False, "properties": filters},
            "set": _request(_fields(serialize.IMAGE_FIELDS, bulk_edits.SETTABLE), patch=True),
            "assign_split": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "properties": {name: dict(unit) for name in SPLITS},
            },
            "force": {"type": "boolean"},
        }
    )


def schemas() -> dict[str, Any]:
    """Every component schema: the declared envelope first, then the ones from the code."""
    found = copy.deepcopy(openapi_spec.SCHEMAS)
    found["types.AnnotationDTO"] = object_schema(serialize.ANNOTATION_FIELDS)
    found["types.ImageDetailResponse"] = object_schema(serialize.IMAGE_FIELDS)
    found["Project"] = object_schema(serialize.PROJECT_FIELDS)
    found["Batch"] = object_schema(serialize.BATCH_FIELDS)
    found["ImageUpdateRequest"] = _request(
        _fields(serialize.IMAGE_FIELDS, catalog.EDITABLE), patch=True
    )
    found["ImageBulkUpdateRequest"] = _bulk_request()
    found["BatchUpdateRequest"] = _request(
        _fields(serialize.BATCH_FIELDS, bodies.BATCH_PATCH_FIELDS), patch=True
    )
    project = _fields(serialize.PROJECT_FIELDS, bodies.PROJECT_CREATE_FIELDS)
    for name, limit in (
        ("name", projects.MAX_NAME_CHARS),
        ("description", projects.MAX_DESCRIPTION_CHARS),
    ):
        if name in project:
            project[name]["maxLength"] = limit
    if "name" in project:
        project["name"]["minLength"] = 1  # required, and not blank
    found["ProjectCreateRequest"] = _request(
        project, required=openapi_spec.REQUIRED["ProjectCreateRequest"]
    )
    found["AnnotationCreateRequest"] = _request(
        _annotation_request(bodies.ANNOTATION_CREATE_FIELDS),
        required=openapi_spec.REQUIRED["AnnotationCreateRequest"],
    )
    found["AnnotationUpdateRequest"] = _request(
        _annotation_request(bodies.ANNOTATION_PATCH_FIELDS), patch=True
    )
    found["SiteImageUpdateRequest"] = _request(
        {
            **_fields(serialize.IMAGE_FIELDS, catalog.PATCHABLE),
            "edited_at": dict(openapi_spec.EDITED_AT),
        },
        patch=True,
    )
    found["SiteAnnotationCreateRequest"] = _request(
        _annotation_request(site.ANNOTATION_FIELDS),
        required=openapi_spec.REQUIRED["SiteAnnotationCreateRequest"],
    )
    found["AnnotationSetRequest"] = _request(
        {
            "annotations": {
                "type": "array",
                "items": _request(
                    _annotation_request(f for f in site.ANNOTATION_FIELDS if f != "image_id"),
                    required=("class_value", "type", "geometry"),
                ),
            },
            "edited_at": dict(openapi_spec.EDITED_AT),
        },
        required=openapi_spec.REQUIRED["AnnotationSetRequest"],
    )
    for schema, notes in openapi_spec.REQUEST_NOTES.items():
        for name, note in notes.items():
            if name in found[schema]["properties"]:  # a note on a field no longer taken: none
                found[schema]["properties"][name]["description"] = note
    return found


# -- operations from the routes ---------------------------------------------------------------


def query_parameter(declared: QueryParam) -> dict[str, Any]:
    """A query parameter from its declaration: the parser states the type
    (``param_types.schema_of``); one that states none (a lambda) is documented as a string."""
    schema = dict(param_types.schema_of(declared.parse) or {"type": "string"})
    schema.update(getattr(declared, "extra", {}))
    parameter: dict[str, Any] = {"name": declared.param, "in": "query"}
    if getattr(declared, "required", False):
        parameter["required"] = True
    parameter["description"] = declared.help
    parameter["schema"] = schema
    return parameter


def path_parameter(converter: str, name: str, description: str) -> dict[str, Any]:
    # Flask's int converter takes digits only; path and the default take any text.
    schema = {"type": "integer", "minimum": 0} if converter == "int" else {"type": "string"}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def security(access: Access) -> list[dict[str, list[str]]]:
    """The credentials that get in, as alternatives (access._admit's order)."""
    if access.public:
        return []
    alternatives: list[dict[str, list[str]]] = []
    if access.device_key:
        alternatives.append({"DeviceKey": []})
    alternatives.append({"BearerAuth": []})
    if access.signed_url:
        alternatives.append({"UrlExpires": [], "UrlSignature": []})
    if access.allow_from:
        alternatives.append({})  # no credential, from an address the setting lists
    return alternatives


def who_may_call(access: Access) -> str:
    if access.public:
        return "Public: no credential."
    scope = (
        f"a bearer token with the '{access.scope}' scope"
        if access.scope
        else "any valid bearer token"
    )
    ways = [scope]
    if access.device_key:
        ways.append("an X-Device-Key")
    if access.signed_url:
        ways.append("the expires and signature of the image's image_url")
    if access.allow_from:
        ways.append(f"no credential from an address in [{access.allow_from.replace('.', '] ')}")
    return "Credentials: " + ", or ".join(ways) + "."


def error_statuses(
    access: Access, op: Operation, has_path: bool, has_query: bool, has_typed_path: bool
) -> set[int]:
    statuses = {414, 500, *op.errors}
    if not access.public:
        statuses |= {401, 403}
    if access.device_key:
        statuses.add(429)
    if has_query or has_typed_path or op.body is not None:
        statuses.add(400)
    if has_path:
        statuses.add(404)
    if op.body is not None:
        statuses |= {413, 415}
    if access.database:  # a database server that cannot be reached (PostgreSQL)
        statuses.add(503)
    return statuses


def operation(path_rule: str, endpoint: str, access: Access) -> tuple[str, dict[str, Any]]:
    """The OpenAPI path and operation of one route."""
    if endpoint not in OPERATIONS:
        raise KeyError(f"{endpoint} has no entry in openapi_spec.OPERATIONS")
    op = OPERATIONS[endpoint]
    parameters = []
    variables = _VARIABLE.findall(path_rule)
    for converter, name in variables:
        parameters.append(path_parameter(converter, name, op.path.get(name, name)))
    query = list(op.query()) + (list(openapi_spec.SIGNED_URL_PARAMS) if access.signed_url else [])
    parameters += [query_parameter(declared) for declared in query]
    responses: dict[str, Any] = {}
    statuses = error_statuses(
        access, op, bool(variables), bool(query), any(c == "int" for c, _ in variables)
    )
    for status in statuses:
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    responses.update(copy.deepcopy(dict(op.responses)))  # a shape of its own wins
    out: dict[str, Any] = {"tags": [op.tag], "summary": op.summary, "operationId": op.operation_id}
    out["description"] = " ".join(part for part in (op.description, who_may_call(access)) if part)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = copy.deepcopy(dict(op.body))
    out["responses"] = dict(sorted(responses.items()))
    out["security"] = security(access)
    return _VARIABLE.sub(lambda m: "{" + m.group(2) + "}", path_rule), out


def error_responses() -> dict[str, Any]:
    out = {}
    for status, (name, description) in sorted(ERRORS.items()):
        response: dict[str, Any] = {"description": description}
        if status in openapi_spec.WITH_RETRY_AFTER:
            response["headers"] = copy.deepcopy(openapi_spec.RETRY_AFTER)
        response["content"] = {"application/json": {"schema": ref("ErrorResponse")}}
        out[name] = response
    return out


def generate(app: Flask) -> dict[str, Any]:
    """The document of ``app``'s routes, from the code's declarations (module docstring)."""
    from .access import route_access  # the web edge: only the generator needs it

    declared = route_access(app)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint not in declared:
            raise KeyError(f"{rule.endpoint} declares no access (access.requires/public)")
        for method in METHODS:
            if method.upper() in (rule.methods or ()):
                path, op = operation(rule.rule, rule.endpoint, declared[rule.endpoint])
                paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.0.3",
        "info": {**openapi_spec.INFO, "version": __version__},
        "servers": [{"url": "/"}],
        "security": [],
        "tags": [{"name": tag} for tag in openapi_spec.TAGS],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "responses": error_responses(),
            "securitySchemes": copy.deepcopy(openapi_spec.SECURITY_SCHEMES),
        },
    }


def render(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
