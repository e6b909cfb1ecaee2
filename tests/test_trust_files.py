"""Files from a device are served as what their bytes are, never as their name says, and with
a policy under which a browser runs nothing: a JPEG carrying HTML after its end marker and
named ``report.html`` (or .svg, .xhtml, .js) is an image/jpeg that runs no script, also when a
reviewer opens its ``image_url`` from the signed-in page in the real browser.
"""

from __future__ import annotations

import json

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, requires_browser, sign_in
from conftest import jpeg_bytes
from upload_helpers import CONTENT_TYPE, upload_body

from edgecatalog.ingest.store import sniff_format

SCRIPT = (
    b"<html><body><script>window.__pwned = 'ran'; document.title = 'PWNED ' + "
    b"JSON.stringify(sessionStorage)</script></body></html>"
)


def upload(client, headers, data: bytes, filename: str) -> dict:
    resp = client.post(
        "/device/images/upload",
        data=upload_body(data, {"filename": filename}),
        headers={**headers, "Content-Type": CONTENT_TYPE},
    )
    assert resp.status_code == 201, resp.data
    return json.loads(resp.data)["data"]


@pytest.mark.parametrize(
    "name", ["report.html", "drawing.svg", "page.xhtml", "code.js", "noextension"]
)
def test_a_file_is_served_as_its_bytes_say_with_a_sandbox(client, auth_headers, name):
    data = jpeg_bytes(seed=3) + SCRIPT
    image_id = upload(client, auth_headers("write"), data, name)["image_id"]
    resp = client.get(f"/files/{image_id}", headers=auth_headers())
    assert resp.status_code == 200 and resp.data == data
    assert sniff_format(data) == "JPEG"
    assert resp.headers["Content-Type"] == "image/jpeg"
    csp = [part.strip() for part in resp.headers["Content-Security-Policy"].split(";")]
    assert "default-src 'none'" in csp and "sandbox" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    stem = name.rsplit(".", 1)[0]
    assert resp.headers["Content-Disposition"] == f'inline; filename="{stem}.jpg"'
    thumb = client.get(f"/files/{image_id}/thumbnail?size=128", headers=auth_headers())
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    assert "sandbox" in thumb.headers["Content-Security-Policy"]


def test_other_formats_keep_their_own_type(client, auth_headers):
    from upload_helpers import image_bytes

    for fmt, mime in (("PNG", "image/png"), ("WEBP", "image/webp"), ("BMP", "image/bmp")):
        data = image_bytes(fmt, seed=7)
        image_id = upload(client, auth_headers("write"), data, "frame.jpg")["image_id"]
        resp = client.get(f"/files/{image_id}", headers=auth_headers())
        assert resp.headers["Content-Type"] == mime, fmt
        ext = {"PNG": "png", "WEBP": "webp", "BMP": "bmp"}[fmt]
        assert resp.headers["Content-Disposition"] == f'inline; filename="frame.{ext}"'


@pytest.mark.parametrize("mark", requires_browser)
def test_opening_a_planted_html_jpeg_from_the_page_runs_no_script(
    mark, live_server, client, auth_headers, tokens
):
    from playwright.sync_api import sync_playwright

    data = jpeg_bytes(seed=5) + SCRIPT
    upload(client, auth_headers("write"), data, "report.html")
    listed = json.loads(
        client.get("/data/images?include_image_url=true", headers=auth_headers()).data
    )
    image_url = listed["data"][0]["image_url"]
    # The URL the page shows points at this server: open it where the live server answers.
    path = image_url[image_url.index("/files/") :]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(10_000)
            sign_in(page, live_server, tokens["write"])
            assert page.evaluate("sessionStorage.length") > 0  # the token is there to steal
            response = page.goto(live_server.url + path)
            assert response.status == 200
            assert page.evaluate("window.__pwned") is None  # the script did not run
            assert "PWNED" not in page.title()
            assert response.headers["content-type"] == "image/jpeg"
            assert page.evaluate("document.contentType") == "image/jpeg"
        finally:
            browser.close()


def test_files_need_the_read_scope(client, settings, auth_headers):
    """A verified token none of whose scopes this service knows reads no file, as it lists
    no image: every data route needs its scope."""
    import time

    import jwt

    data = jpeg_bytes(seed=9)
    image_id = upload(client, auth_headers("write"), data, "frame.jpg")["image_id"]
    now = int(time.time())
    odd = jwt.encode(
        {"sub": "x", "scope": "admin", "iat": now, "exp": now + 60},
        settings["auth.jwt_secret"],
        algorithm="HS256",
    )
    headers = {"Authorization": f"Bearer {odd}"}
    for path in (f"/files/{image_id}", f"/files/{image_id}/thumbnail?size=128", "/data/images"):
        resp = client.get(path, headers=headers)
        assert resp.status_code == 403, (path, resp.data)
        assert json.loads(resp.data)["error"]["details"] == "scope"
    assert client.get(f"/files/{image_id}", headers=auth_headers()).data == data
