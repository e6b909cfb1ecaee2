"""The service answers over real HTTP with the contract envelope."""

import pytest
from conftest import seed_image

pytestmark = pytest.mark.both_engines


def test_list_over_real_http(settings, live_server, auth_headers):
    ids = [seed_image(settings, filename=f"f{i}.jpg", seed=i).id for i in range(3)]
    resp = live_server.get("/data/images?limit=2&include_image_url=true", headers=auth_headers())
    assert resp.status_code == 200
    body = resp.json()
    assert body["success"] is True
    assert body["meta"] == {"count": 2, "limit": 2, "offset": 0, "total": 3}
    assert [row["id"] for row in body["data"]] == sorted(ids, reverse=True)[:2]
    url = body["data"][0]["image_url"]
    assert url.startswith(live_server.url + "/files/")
    img = live_server.get(url[len(live_server.url) :])
    assert img.status_code == 200 and img.content[:3] == b"\xff\xd8\xff"
