"""The inspection page's HTTP side: GET /, its static files (CSP, ETag, no traversal) and the
sign-in link printed by ``edgecatalog token --ui``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgecatalog.auth import Authenticator
from edgecatalog.config import load_settings

STATIC = Path(__file__).resolve().parent.parent / "edgecatalog" / "static"


def csp_directives(header: str) -> dict[str, str]:
    return {
        part.split()[0]: " ".join(part.split()[1:])
        for part in (p.strip() for p in header.split(";"))
        if part
    }


def test_page_is_served_with_a_strict_csp(live_server):
    resp = live_server.get("/")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/static/app.js">' in resp.text
    csp = csp_directives(resp.headers["Content-Security-Policy"])
    assert csp["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "img-src", "connect-src"):
        assert csp[directive] == "'self'", directive
    assert csp["frame-ancestors"] == "'none'"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]


def test_page_has_no_inline_script_or_style_and_nothing_external():
    # The CSP forbids inline code; a slip would silently break the page in the browser.
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path.name
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), path.name
            assert "<style" not in text and " style=" not in text, path.name
            assert not re.search(r"\son[a-z]+=", text), path.name
        if path.suffix == ".js":
            assert "innerHTML" not in text and "eval(" not in text, path.name
            assert 'setAttribute("style"' not in text, path.name


@pytest.mark.parametrize(
    "name,kind",
    [
        ("app.js", "javascript"),
        ("app.css", "text/css"),
        ("grid.js", "javascript"),
        ("favicon.svg", "image/svg"),
    ],
)
def test_static_files_have_etags_and_revalidate(live_server, name, kind):
    resp = live_server.get(f"/static/{name}")
    assert resp.status_code == 200 and kind in resp.headers["Content-Type"]
    assert resp.content == (STATIC / name).read_bytes()
    assert "no-cache" in resp.headers["Cache-Control"]
    etag = resp.headers["ETag"]
    again = live_server.get(f"/static/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert "Content-Security-Policy" in again.headers


@pytest.mark.parametrize(
    "path",
    [
        "/static/nope.js",
        "/static/../__init__.py",
        "/static/%2e%2e/__init__.py",
        "/static/..%2fcli.py",
    ],
)
def test_unknown_or_escaping_static_paths_are_404(live_server, path):
    resp = live_server.get(path)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "NOT_FOUND"


def test_every_module_the_page_imports_is_shipped(live_server):
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        seen.add(name)
        resp = live_server.get(f"/static/{name}")
        assert resp.status_code == 200, name
        for dep in re.findall(r'from "\./([a-z]+\.js)"', resp.text):
            if dep not in seen:
                todo.append(dep)
    assert {"api.js", "grid.js", "detail.js", "filters.js", "status.js", "overlay.js"} <= seen


def run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "edgecatalog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def write_config(tmp_path: Path, server: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\n{server}\n[storage]\ndata_dir = "{tmp_path / "d"}"\n'
        f'[auth]\njwt_secret = "{"s" * 40}"\n',
        encoding="utf-8",
    )
    return config


@pytest.mark.parametrize(
    "server,base",
    [
        ('public_url = "https://cam-3.line.local:8443/"', "https://cam-3.line.local:8443"),
        ('host = "127.0.0.1"\nport = 9123', "http://127.0.0.1:9123"),
    ],
)
def test_token_ui_prints_a_sign_in_link(tmp_path, server, base):
    config = write_config(tmp_path, server)
    result = run_cli(
        "token", "--ui", "--sub", "inspector", "--scope", "write", "--config", str(config)
    )
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert link.startswith(base + "/#token=")
    token = link.split("#token=", 1)[1]
    settings = load_settings(config, environ={})
    principal = Authenticator(settings).verify_token(token)
    assert principal.subject == "inspector" and principal.can("write")


def test_token_without_ui_is_still_a_bare_token(tmp_path):
    config = write_config(tmp_path, "port = 9124")
    result = run_cli("token", "--sub", "x", "--config", str(config))
    assert result.returncode == 0 and result.stdout.count(".") == 2 and "#" not in result.stdout
