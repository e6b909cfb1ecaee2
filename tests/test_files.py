"""GET /files/{id}: bearer or signed URL, conditional and range requests, and every way a
stored path could escape its root (all 404, as if there were no file).
"""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import jpeg_bytes, seed_image

from edgecatalog.auth import Authenticator
from edgecatalog.models import FileRoot, Image


@pytest.fixture
def image(settings):
    data = jpeg_bytes(80, 60, seed=7)
    return seed_image(settings, filename="shot.jpg", data=data, width=80, height=60), data


def signed_path(client, headers, image_id: int) -> str:
    body = client.get(f"/data/images/{image_id}?include_image_url=true", headers=headers).get_json()
    url = urlsplit(body["data"]["image_url"])
    assert url.scheme == "http" and url.path == f"/files/{image_id}"
    return f"{url.path}?{url.query}"


def assert_envelope(resp, status: int, code: str) -> None:
    assert resp.status_code == status
    body = resp.get_json()
    assert body["success"] is False and body["error"]["code"] == code


def test_bearer_download(client, auth_headers, image):
    img, data = image
    resp = client.get(f"/files/{img.id}", headers=auth_headers())
    assert resp.status_code == 200 and resp.data == data
    assert resp.mimetype == "image/jpeg"
    assert resp.headers["ETag"].strip('"') == img.sha256
    assert resp.headers["Last-Modified"] and resp.headers["Accept-Ranges"] == "bytes"
    assert int(resp.headers["Content-Length"]) == len(data)


def test_no_credentials_is_401(client, image):
    resp = client.get(f"/files/{image[0].id}")
    assert_envelope(resp, 401, "UNAUTHORIZED")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_signed_url_download(client, auth_headers, image):
    img, data = image
    path = signed_path(client, auth_headers(), img.id)
    resp = client.get(path)
    assert resp.status_code == 200 and resp.data == data


def test_signed_url_tampering(client, auth_headers, settings, image):
    img, _ = image
    other = seed_image(settings, filename="other.jpg", seed=8)
    path = signed_path(client, auth_headers(), img.id)
    q = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
    sig, exp = q["signature"], int(q["expires"])
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    cases = [
        f"/files/{img.id}?expires={exp}&signature={flipped}",
        f"/files/{img.id}?expires={exp + 300}&signature={sig}",  # extended expiry
        f"/files/{img.id}?expires={exp - 300}&signature={sig}",
        f"/files/{other.id}?expires={exp}&signature={sig}",  # moved to another image
        f"/files/{img.id}?expires=abc&signature={sig}",
        f"/files/{img.id}?expires=&signature={sig}",
        f"/files/{img.id}?signature={sig}",
        f"/files/{img.id}?expires={exp}",
        f"/files/{img.id}?expires={exp}&signature=",
        f"/files/{img.id}?expires={exp}&signature={sig.upper()}",
        f"/files/{img.id}?expires={exp}&signature=%C3%A9{sig[2:]}",  # non-ASCII
        f"/files/{img.id}?expires=%C3%A9&signature={sig}",
        f"/files/{img.id}?expires={'9' * 40}&signature={sig}",
    ]
    for url in cases:
        assert_envelope(client.get(url), 403, "FORBIDDEN")


def test_expired_signature_is_403(client, settings, image):
    img, _ = image
    auth = Authenticator(settings)
    expires, sig = auth.sign_file(img.id, now=time.time() - 2 * settings["auth.url_signing_ttl"])
    assert expires < time.time()
    resp = client.get(f"/files/{img.id}?expires={expires}&signature={sig}")
    assert_envelope(resp, 403, "FORBIDDEN")
    assert "expired" in resp.get_json()["error"]["message"]


def test_signature_from_another_secret_is_403(client, tmp_path, image):
    from conftest import make_settings

    img, _ = image
    foreign = Authenticator(make_settings(tmp_path / "x", auth__jwt_secret="z" * 40))
    expires, sig = foreign.sign_file(img.id)
    assert_envelope(
        client.get(f"/files/{img.id}?expires={expires}&signature={sig}"), 403, "FORBIDDEN"
    )


def test_conditional_requests(client, auth_headers, image):
    img, _ = image
    first = client.get(f"/files/{img.id}", headers=auth_headers())
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    resp = client.get(f"/files/{img.id}", headers={**auth_headers(), "If-None-Match": etag})
    assert resp.status_code == 304 and resp.data == b""
    resp = client.get(f"/files/{img.id}", headers={**auth_headers(), "If-Modified-Since": modified})
    assert resp.status_code == 304
    resp = client.get(f"/files/{img.id}", headers={**auth_headers(), "If-None-Match": '"nope"'})
    assert resp.status_code == 200


def test_range_requests(client, auth_headers, image):
    img, data = image
    n = len(data)
    resp = client.get(f"/files/{img.id}", headers={**auth_headers(), "Range": "bytes=0-9"})
    assert resp.status_code == 206 and resp.data == data[:10]
    assert resp.headers["Content-Range"] == f"bytes 0-9/{n}"
    resp = client.get(f"/files/{img.id}", headers={**auth_headers(), "Range": "bytes=-5"})
    assert resp.status_code == 206 and resp.data == data[-5:]
    assert resp.headers["Content-Range"] == f"bytes {n - 5}-{n - 1}/{n}"
    resp = client.get(f"/files/{img.id}", headers={**auth_headers(), "Range": "bytes=20-"})
    assert resp.status_code == 206 and resp.data == data[20:]
    resp = client.get(f"/files/{img.id}", headers={**auth_headers(), "Range": f"bytes={n}-"})
    assert_envelope(resp, 416, "RANGE_NOT_SATISFIABLE")
    assert resp.headers["Content-Range"] == f"bytes */{n}"


def _point(img_id: int, **changes) -> None:
    Image.update(**changes).where(Image.id == img_id).execute()


@pytest.mark.parametrize(
    "stored",
    ["../../etc/passwd", "/etc/passwd", "", ".", "raw-data/../../catalog.db", "../jwt.secret"],
)
def test_stored_path_escaping_root_is_404(client, auth_headers, image, stored):
    img, _ = image
    _point(img.id, storage_key=stored)
    assert_envelope(client.get(f"/files/{img.id}", headers=auth_headers()), 404, "NOT_FOUND")


def test_symlink_out_of_images_is_404(client, auth_headers, settings, tmp_path, image):
    img, _ = image
    outside = tmp_path / "secret.txt"
    outside.write_text("not for you")
    link = settings.images_dir / "raw-data" / "link.jpg"
    os.symlink(outside, link)
    _point(img.id, storage_key="raw-data/link.jpg")
    resp = client.get(f"/files/{img.id}", headers=auth_headers())
    assert_envelope(resp, 404, "NOT_FOUND")
    assert b"not for you" not in resp.data
    # A symlinked directory is followed to its real place too.
    os.symlink(tmp_path, settings.images_dir / "up")
    _point(img.id, storage_key="up/secret.txt")
    assert_envelope(client.get(f"/files/{img.id}", headers=auth_headers()), 404, "NOT_FOUND")


def test_escape_from_a_registered_root_is_404(client, auth_headers, tmp_path, image):
    # Roots are the images dir, the watch dirs and the folders 'edgecatalog scan' registered
    # (views/files.py); whichever root an image has, its path cannot climb out of it.
    img, _ = image
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "beside.jpg").write_bytes(b"\xff\xd8\xff beside")
    root = FileRoot.create(path=str(elsewhere))
    _point(img.id, root=root.id, storage_key="../beside.jpg")
    assert_envelope(client.get(f"/files/{img.id}", headers=auth_headers()), 404, "NOT_FOUND")
    _point(img.id, storage_key=str(tmp_path / "beside.jpg"))
    assert_envelope(client.get(f"/files/{img.id}", headers=auth_headers()), 404, "NOT_FOUND")


def test_watch_dir_root_is_served(tmp_path):
    from conftest import make_settings

    from edgecatalog import create_app
    from edgecatalog.models import database

    watch = tmp_path / "captures"
    watch.mkdir()
    (watch / "cap.jpg").write_bytes(b"\xff\xd8\xff capture")
    settings = make_settings(tmp_path, capture__watch_dirs=[str(watch)])
    app = create_app(settings)
    try:
        img = seed_image(settings, filename="cap.jpg", data=b"\xff\xd8\xff capture")
        root = FileRoot.create(path=str(watch))
        _point(img.id, root=root.id, storage_key="cap.jpg")
        token = Authenticator(settings).issue_token("t")
        resp = app.test_client().get(
            f"/files/{img.id}", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 200 and resp.data == b"\xff\xd8\xff capture"
    finally:
        database.close()


def test_missing_file_and_unknown_id_are_404(client, auth_headers, settings, image):
    img, _ = image
    (settings.images_dir / img.storage_key).unlink()
    assert_envelope(client.get(f"/files/{img.id}", headers=auth_headers()), 404, "NOT_FOUND")
    assert_envelope(client.get("/files/424242", headers=auth_headers()), 404, "NOT_FOUND")
    assert_envelope(
        client.get("/files/99999999999999999999999", headers=auth_headers()), 404, "NOT_FOUND"
    )


def test_public_url_is_the_base_of_image_url(tmp_path):
    from conftest import make_settings

    from edgecatalog import create_app
    from edgecatalog.models import database

    settings = make_settings(tmp_path, server__public_url="https://edge.example:8443/")
    app = create_app(settings)
    try:
        img = seed_image(settings)
        token = Authenticator(settings).issue_token("t")
        body = (
            app.test_client()
            .get("/data/images?include_image_url=1", headers={"Authorization": f"Bearer {token}"})
            .get_json()
        )
        url = body["data"][0]["image_url"]
        assert url.startswith(f"https://edge.example:8443/files/{img.id}?expires=")
        split = urlsplit(url)
        assert app.test_client().get(f"{split.path}?{split.query}").status_code == 200
    finally:
        database.close()
