"""The contract over a real waitress server on a free loopback port: auth headers, signed
URLs, conditional and range requests and PATCH as a client on the LAN sees them.
"""

from __future__ import annotations

import requests
from conftest import jpeg_bytes, seed_image


def test_signed_url_range_and_conditional_over_http(settings, live_server, auth_headers):
    data = jpeg_bytes(120, 90, seed=3)
    img = seed_image(settings, filename="100%_real.jpg", data=data, width=120, height=90)
    seed_image(settings, filename="other.jpg", seed=4)
    resp = live_server.get(
        "/data/images",
        headers=auth_headers(),
        params={"search": "%_r", "include_image_url": "TRUE"},
    )
    body = resp.json()
    assert resp.status_code == 200 and [r["id"] for r in body["data"]] == [img.id]
    url = body["data"][0]["image_url"]
    assert url.startswith(f"{live_server.url}/files/{img.id}?")

    full = requests.get(url, timeout=10)  # no Authorization header: the signature is enough
    assert full.status_code == 200 and full.content == data
    assert full.headers["Content-Type"] == "image/jpeg"
    part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    again = requests.get(url, headers={"If-None-Match": full.headers["ETag"]}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    tampered = requests.get(url.replace("signature=", "signature=0"), timeout=10)
    assert tampered.status_code == 403 and tampered.json()["error"]["code"] == "FORBIDDEN"
    other = requests.get(url.replace(f"/files/{img.id}?", f"/files/{img.id + 1}?"), timeout=10)
    assert other.status_code == 403


def test_auth_and_patch_over_http(settings, live_server, auth_headers):
    img = seed_image(settings, filename="p.jpg")
    resp = live_server.get("/data/images")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.json() == {
        "success": False,
        "data": None,
        "error": {
            "code": "UNAUTHORIZED",
            "details": "Authorization",
            "message": resp.json()["error"]["message"],
        },
    }
    url = f"{live_server.url}/data/images/{img.id}"
    denied = requests.patch(url, json={"split": "val"}, headers=auth_headers("read"), timeout=10)
    assert denied.status_code == 403
    done = requests.patch(
        url, json={"split": "val", "split_locked": True}, headers=auth_headers("write"), timeout=10
    )
    assert done.status_code == 200 and done.json()["data"]["split"] == "val"
    locked = requests.patch(url, json={"split": "test"}, headers=auth_headers("write"), timeout=10)
    assert locked.status_code == 409
    listed = live_server.get("/data/images?split=val", headers=auth_headers()).json()
    assert listed["meta"]["total"] == 1 and listed["data"][0]["split_locked"] is True
    bad = live_server.get("/data/images?limit=0", headers=auth_headers())
    assert bad.status_code == 400 and bad.json()["error"]["details"] == "limit"
    assert "X-Request-ID" in bad.headers
