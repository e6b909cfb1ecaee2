"""What the real-browser tests share: Debian's Chromium launched through Playwright, a seeded
catalog with known annotations, and small page helpers. The tests skip with a clear reason
when Chromium or Playwright is missing.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
import requests
from conftest import seed_image
from PIL import Image as PILImage
from PIL import ImageDraw

from edgecatalog.catalog import NewAnnotation

# Not an EDGECATALOG_* variable: the service refuses unknown ones at start-up.
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

requires_browser = [
    pytest.mark.skipif(
        sync_playwright is None, reason="playwright is not installed (pip install '.[test]')"
    ),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)",
    ),
]


# -- seeded catalog ------------------------------------------------------------------------

W, H = 640, 480


def bbox(cls: str, xc: float, yc: float, w: float, h: float, conf: float | None):
    return NewAnnotation(cls, "bbox", [xc, yc, w, h], confidence=conf)


def poly(cls: str, points: list[float], conf: float | None):
    return NewAnnotation(cls, "polygon", points, confidence=conf)


def annotations_for(i: int) -> tuple[NewAnnotation, ...]:
    """A fixed mix: every third image has none, some have polygons, confidences vary."""
    if i == 0:
        return (
            bbox("scratch", 0.3, 0.35, 0.2, 0.15, 0.91),
            bbox("dent", 0.7, 0.6, 0.18, 0.2, 0.3),
            poly("crack", [0.45, 0.7, 0.6, 0.72, 0.55, 0.88, 0.42, 0.84], 0.62),
        )
    if i % 3 == 1:
        return (bbox("scratch", 0.25 + 0.04 * (i % 5), 0.4, 0.2, 0.12, 0.55 + 0.03 * (i % 4)),)
    if i % 3 == 2:
        return (poly("dent", [0.5, 0.3, 0.7, 0.35, 0.62, 0.55], 0.8),)
    return ()


def picture(i: int, anns: tuple[NewAnnotation, ...]) -> bytes:
    """A part on a conveyor, with marks where the annotations are (for readable screenshots)."""
    img = PILImage.new("RGB", (W, H))
    draw = ImageDraw.Draw(img)
    for y in range(H):
        shade = 40 + (y * 60) // H + (i * 7) % 30
        draw.line([(0, y), (W, y)], fill=(shade, shade + 8, shade + 16))
    draw.ellipse([90, 60, 550, 420], fill=(150 + (i * 13) % 60, 150, 160), outline=(30, 30, 30))
    draw.text((20, 20), f"part {i:03d}", fill=(255, 255, 255))
    for ann in anns:
        g = ann.geometry
        if ann.type == "bbox":
            cx, cy = g[0] * W, g[1] * H
            draw.line([(cx - 30, cy - 8), (cx + 30, cy + 8)], fill=(60, 20, 20), width=4)
        else:
            draw.polygon([(g[k] * W, g[k + 1] * H) for k in range(0, len(g), 2)], fill=(70, 50, 40))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def small_picture(i: int) -> bytes:
    """A 64x48 JPEG unique to i (its number is drawn in), so no two seeds are duplicates."""
    img = PILImage.new("RGB", (64, 48), ((i * 37) % 200 + 30, (i * 91) % 200 + 30, 120))
    ImageDraw.Draw(img).text((4, 16), str(i), fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def seed(settings, count: int = 12, fancy: bool = True) -> list[int]:
    ids = []
    for i in range(count):
        anns = annotations_for(i)
        data = picture(i, anns) if fancy else small_picture(i)
        image = seed_image(
            settings,
            filename=f"part-{i:03d}.jpg",
            annotations=anns,
            seed=i,
            data=data,
            width=W if fancy else 64,
            height=H if fancy else 48,
            device_id="cam01" if i % 2 else "cam02",
        )
        ids.append(image.id)
    return ids


# -- browser and pages (each test module wraps these two in its fixtures) -----------------


def browser_session():
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, problems: list[str], **context_options):
    options = {"viewport": {"width": 1280, "height": 800}}
    options.update(context_options)
    context = browser.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    return page


def page_session(browser):
    problems: list[str] = []
    pg = open_page(browser, problems)
    yield pg
    pg.context.close()
    assert problems == []  # no script errors, no CSP violations


def api(live_server, token: str, path: str) -> dict:
    resp = requests.get(
        live_server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def sign_in(page, live_server, token: str, path: str = "/") -> None:
    page.goto(f"{live_server.url}{path}#token={token}")
    expect(page.locator("#signin")).to_be_hidden()


def tile_ids(page) -> list[int]:
    return page.locator("#grid li.tile").evaluate_all("els => els.map(e => Number(e.dataset.id))")


def wait_for_tiles(page, count: int) -> None:
    expect(page.locator("#grid li.tile")).to_have_count(count)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def wait_until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def needs_route(app, rule: str, method: str) -> None:
    if not any(r.rule == rule and method in r.methods for r in app.url_map.iter_rules()):
        pytest.skip(f"{method} {rule} is not part of this build yet")
