"""Absolute URLs are never built from an unchecked Host; forwarded headers count only from a
trusted proxy; keys and tokens never go to a plain-http upstream unless the operator says so.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from conftest import LiveServer, make_settings, seed_image

from edgecatalog import create_app
from edgecatalog.config import ConfigError, load_settings
from edgecatalog.doctor import check_transport
from edgecatalog.hosts import HostPolicy


def test_a_foreign_host_gets_no_signed_url(settings, client, auth_headers):
    seed_image(settings, seed=1)
    resp = client.get(
        "/data/images?include_image_url=true",
        headers={**auth_headers(), "Host": "evil.example:1234"},
    )
    assert resp.status_code == 400
    body = json.loads(resp.data)
    assert body["error"]["code"] == "HOST_NOT_ALLOWED"
    assert body["error"]["details"] == "Host"
    assert b"evil.example/files" not in resp.data and b"signature=" not in resp.data
    # The names a newcomer uses still work, with URLs on the name asked for.
    for host in ("localhost", "127.0.0.1:8080", "[::1]:8080", socket.gethostname()):
        resp = client.get(
            "/data/images?include_image_url=true", headers={**auth_headers(), "Host": host}
        )
        assert resp.status_code == 200, host
        url = json.loads(resp.data)["data"][0]["image_url"]
        assert url.split("/")[2] == host.lower()


def test_public_url_is_the_base_and_pins_the_host(tmp_path, auth_headers):
    settings = make_settings(tmp_path, server__public_url="https://catalog.plant.example")
    app = create_app(settings)
    seed_image(settings, seed=2)
    client = app.test_client()
    for host in ("catalog.plant.example", "localhost"):
        resp = client.get(
            "/data/images?include_image_url=true", headers={**auth_headers(), "Host": host}
        )
        assert resp.status_code == 200
        url = json.loads(resp.data)["data"][0]["image_url"]
        assert url.startswith("https://catalog.plant.example/files/")
    resp = client.get(
        "/data/images?include_image_url=true", headers={**auth_headers(), "Host": "evil.example"}
    )
    assert resp.status_code == 400


def test_allowed_hosts_entries():
    policy = HostPolicy([".plant.example", "gateway", "10.0.0.5"])
    assert policy.allows("cam7.plant.example:8080") and policy.allows("plant.example")
    assert policy.allows("GATEWAY") and policy.allows("10.0.0.5:80")
    assert not policy.allows("evilplant.example") and not policy.allows("localhost")
    assert not policy.allows("") and not policy.allows("gateway.evil")
    assert HostPolicy(["*"]).allows("anything.example")


def test_over_real_http_a_raw_foreign_host_is_refused(settings, app, auth_headers):
    seed_image(settings, seed=3)
    server = LiveServer(app)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            token = auth_headers()["Authorization"]
            sock.sendall(
                f"GET /data/images?include_image_url=true HTTP/1.1\r\nHost: evil.example:1234\r\n"
                f"Authorization: {token}\r\nConnection: close\r\n\r\n".encode()
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400") and b"HOST_NOT_ALLOWED" in answer
        assert b"evil.example/files" not in answer
    finally:
        server.close()


def serve(settings, **kw):
    app = create_app(settings)
    seed_image(settings, seed=4)
    # As build_server does: the app, not waitress, judges forwarded headers.
    return LiveServer(app, clear_untrusted_proxy_headers=False, **kw)


FORWARDED = {
    "X-Forwarded-Host": "catalog.plant.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-For": "192.0.2.7",
}


def test_forwarded_headers_from_a_trusted_proxy_make_the_url(tmp_path, auth_headers):
    settings = make_settings(
        tmp_path,
        server__trusted_proxies=["127.0.0.0/8"],
        server__allowed_hosts=["catalog.plant.example", "127.0.0.1"],
    )
    server = serve(settings)
    try:
        resp = server.get(
            "/data/images?include_image_url=true", headers={**auth_headers(), **FORWARDED}
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"][0]["image_url"].startswith(
            "https://catalog.plant.example/files/"
        )
        # The proxy still cannot name a host the service does not answer to.
        resp = server.get(
            "/data/images?include_image_url=true",
            headers={**auth_headers(), **FORWARDED, "X-Forwarded-Host": "evil.example"},
        )
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "HOST_NOT_ALLOWED"
    finally:
        server.close()


def test_forwarded_headers_from_anyone_else_are_ignored(tmp_path, auth_headers):
    settings = make_settings(
        tmp_path,
        server__trusted_proxies=["10.9.8.7"],
        server__allowed_hosts=["catalog.plant.example", "127.0.0.1"],
    )
    server = serve(settings)
    try:
        resp = server.get(
            "/data/images?include_image_url=true", headers={**auth_headers(), **FORWARDED}
        )
        assert resp.status_code == 200
        url = resp.json()["data"][0]["image_url"]
        assert url.startswith(f"http://127.0.0.1:{server.port}/files/")
    finally:
        server.close()


def test_a_bad_trusted_proxy_entry_stops_start_up(tmp_path):
    with pytest.raises(ConfigError, match="server.trusted_proxies"):
        make_settings(tmp_path, server__trusted_proxies=["gateway.local"])


# -- upstream transport ----------------------------------------------------------------------


def test_a_plain_http_upstream_is_refused_unless_allowed(tmp_path):
    base = {"storage.data_dir": str(tmp_path / "d"), "upstream.device_key": "adk_x"}
    with pytest.raises(ConfigError, match="upstream.base_url.*allow_insecure_http"):
        load_settings(
            environ={},
            overrides={**base, "upstream.base_url": "http://gateway.plant.example:8080/api"},
        )
    with pytest.raises(ConfigError, match="upstream.base_url"):
        load_settings(
            environ={"EDGECATALOG_UPSTREAM_BASE_URL": "http://10.0.0.9/api"}, overrides=base
        )
    # Loopback crosses no network; https is always fine.
    for url in ("http://127.0.0.1:9000/api", "http://localhost/api", "https://cloud.example/api"):
        settings = load_settings(environ={}, overrides={**base, "upstream.base_url": url})
        assert [c.name for c in check_transport(settings)] == []
    allowed = load_settings(
        environ={},
        overrides={
            **base,
            "upstream.allow_insecure_http": True,
            "upstream.base_url": "http://10.0.0.9/api",
        },
    )
    [warning] = check_transport(allowed)
    assert warning.warning and "clear" in warning.message and warning.name == "upstream transport"


def test_the_sync_command_says_so_in_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "d"}"\n[upstream]\n'
        'base_url = "http://gateway.plant.example/api"\ndevice_key = "adk_x"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "edgecatalog", "sync", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "allow_insecure_http" in lines[0] and "Traceback" not in lines[0]


def test_doctor_warns_about_a_network_without_tls(tmp_path):
    lan = load_settings(
        environ={}, overrides={"storage.data_dir": str(tmp_path / "d"), "server.host": "0.0.0.0"}
    )
    names = {c.name for c in check_transport(lan)}
    assert names == {"server hosts", "server transport"}
    fronted = load_settings(
        environ={},
        overrides={
            "storage.data_dir": str(tmp_path / "d"),
            "server.host": "127.0.0.1",
            "server.public_url": "https://catalog.plant.example",
        },
    )
    assert check_transport(fronted) == []
