"""Every 400/404 of GET /data/images and GET /data/images/{id}: the envelope, a code, and
``details`` naming the parameter; never a traceback or SQL in the body.
"""

from __future__ import annotations

import re

import pytest
from conftest import seed_image

CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
LEAKS = ("Traceback", "SELECT", "sqlite", "peewee", 'File "', "Error(")


def assert_error(resp, status: int, code: str, details: str | None = None) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert body["success"] is False and body["data"] is None
    err = body["error"]
    assert set(err) == {"code", "message", "details"}
    assert CODE.match(err["code"]) and err["code"] == code
    assert isinstance(err["details"], str) and err["message"]
    if details is not None:
        assert err["details"] == details
    text = resp.get_data(as_text=True)
    for leak in LEAKS:
        assert leak not in text
    return err


BAD = [
    ("project_id", "abc"),
    ("project_id", "1.5"),
    ("project_id", ""),
    ("project_id", "NULL"),
    ("project_id", "0"),
    ("project_id", "-3"),
    ("project_id", "1e3"),
    ("project_id", "١"),
    ("project_id", "99999999999999999999999"),
    ("batch_id", "abc"),
    ("batch_id", ""),
    ("batch_id", "null"),
    ("batch_id", "0x10"),
    ("batch_id", "-1"),
    ("stage", "done"),
    ("stage", "Complete"),
    ("stage", ""),
    ("annotation_status", "PENDING"),
    ("annotation_status", "reviewed"),
    ("annotation_status", ""),
    ("split", "training"),
    ("split", "ALL"),
    ("split", ""),
    ("include_annotations", "yes"),
    ("include_annotations", "2"),
    ("include_annotations", ""),
    ("include_annotations", "truee"),
    ("include_image_url", "no"),
    ("include_image_url", "-1"),
    ("limit", "0"),
    ("limit", "-1"),
    ("limit", "abc"),
    ("limit", ""),
    ("limit", "1.5"),
    ("limit", "10 0"),
    ("limit", "9" * 65),
    ("offset", "9" * 30),
    ("offset", "-1"),
    ("offset", "abc"),
    ("offset", ""),
    ("offset", "0.5"),
    ("sort", "id"),
    ("sort", "CREATED_AT"),
    ("sort", ""),
    ("order", "ascending"),
    ("order", "ASC"),
    ("order", ""),
    ("search", "a\x00b"),
]


@pytest.mark.parametrize("param,value", BAD, ids=lambda v: repr(v)[:30])
def test_bad_parameter_is_400_naming_it(client, auth_headers, param, value):
    resp = client.get("/data/images", query_string={param: value}, headers=auth_headers())
    err = assert_error(resp, 400, "VALIDATION_ERROR", details=param)
    assert param in err["message"]


@pytest.mark.parametrize("value", ("true", "TRUE", "True", "1", "false", "FALSE", "0"))
def test_boolean_spellings(client, auth_headers, value):
    resp = client.get(
        "/data/images", query_string={"include_annotations": value}, headers=auth_headers()
    )
    assert resp.status_code == 200


@pytest.mark.parametrize("param", ("limit", "split", "search", "project_id", "sort"))
def test_repeated_parameter_is_400(client, auth_headers, param):
    value = {"limit": "5", "split": "train", "search": "a", "project_id": "1", "sort": "filename"}[
        param
    ]
    resp = client.get(f"/data/images?{param}={value}&{param}={value}", headers=auth_headers())
    assert_error(resp, 400, "VALIDATION_ERROR", details=param)


@pytest.mark.parametrize("param", ("search", "filename", "device_id", "class_values"))
def test_overlong_value_is_400(client, auth_headers, settings, param):
    value = "a" * (settings["limits.max_param_chars"] + 1)
    resp = client.get("/data/images", query_string={param: value}, headers=auth_headers())
    assert_error(resp, 400, "VALIDATION_ERROR", details=param)


def test_too_many_class_values_is_400(client, auth_headers, settings):
    many = ",".join(f"c{i}" for i in range(settings["limits.max_class_values"] + 1))
    resp = client.get("/data/images", query_string={"class_values": many}, headers=auth_headers())
    assert_error(resp, 400, "VALIDATION_ERROR", details="class_values")


def test_query_string_too_long_is_414(client, auth_headers, settings):
    n = settings["server.max_query_string_bytes"]
    resp = client.get("/data/images?x=" + "a" * n, headers=auth_headers())
    assert_error(resp, 414, "URI_TOO_LONG")


def test_limit_above_maximum_is_clamped(client, auth_headers, settings):
    seed_image(settings)
    for value in ("101", "500", "99999999999", "9" * 40):
        body = client.get(f"/data/images?limit={value}", headers=auth_headers()).get_json()
        assert body["success"] is True and body["meta"]["limit"] == 100


def test_unknown_device_is_404_naming_it(client, auth_headers, settings):
    seed_image(settings, device_id="cam01")
    resp = client.get("/data/images?device_id=cam-ghost", headers=auth_headers())
    err = assert_error(resp, 404, "NOT_FOUND", details="device_id")
    assert "cam-ghost" in err["message"]
    # A known device with no matching images is an empty page, not a 404.
    resp = client.get("/data/images?device_id=cam01&split=test", headers=auth_headers())
    assert resp.status_code == 200 and resp.get_json()["meta"]["total"] == 0


def test_unknown_parameters_are_ignored(client, auth_headers, settings):
    seed_image(settings)
    resp = client.get("/data/images?page=3&per_page=x&sort_by=bogus", headers=auth_headers())
    assert resp.status_code == 200 and resp.get_json()["meta"]["total"] == 1


def test_validation_needs_auth_first(client):
    # Without a token, even a bad query is a 401: nothing about the data is revealed.
    resp = client.get("/data/images?limit=abc")
    assert_error(resp, 401, "UNAUTHORIZED")


def test_get_one_errors(client, auth_headers, settings):
    image = seed_image(settings)
    assert_error(
        client.get("/data/images/999999", headers=auth_headers()), 404, "NOT_FOUND", details="id"
    )
    assert_error(
        client.get("/data/images/99999999999999999999999", headers=auth_headers()), 404, "NOT_FOUND"
    )
    assert_error(client.get("/data/images/abc", headers=auth_headers()), 404, "NOT_FOUND")
    assert_error(
        client.get(f"/data/images/{image.id}?include_image_url=maybe", headers=auth_headers()),
        400,
        "VALIDATION_ERROR",
        details="include_image_url",
    )
    ok = client.get(f"/data/images/{image.id}", headers=auth_headers()).get_json()
    assert ok["success"] is True and ok["data"]["id"] == image.id
    assert ok["data"]["annotations"] == [] and "image_url" not in ok["data"]


def test_wrong_method_is_405_in_envelope(client, auth_headers):
    resp = client.delete("/data/images", headers=auth_headers())
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in resp.headers["Allow"]


def test_unknown_route_is_404_in_envelope(client, auth_headers):
    assert_error(client.get("/data/nothing", headers=auth_headers()), 404, "NOT_FOUND")
