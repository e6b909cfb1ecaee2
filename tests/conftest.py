"""Shared fixtures: a real SQLite file under tmp_path, the real app, real tokens, and a real
waitress server on a free loopback port for tests where HTTP matters.
"""

from __future__ import annotations

import hashlib
import io
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg_cluster as pg_cluster_module
import pytest
import requests
import waitress.server
from PIL import Image as PILImage

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.catalog import NewAnnotation, NewImage
from edgecatalog.config import Settings, load_settings
from edgecatalog.ingest.bulk import add_image
from edgecatalog.models import FileRoot, Image, database


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values = {"storage.data_dir": str(tmp_path / "data"), "auth.jwt_secret": "t" * 40}
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_settings(environ={}, overrides=values)


# -- the engines ------------------------------------------------------------------------------
# A test module marked ``pytest.mark.both_engines`` runs each of its tests on a SQLite file and
# on a PostgreSQL database of its own (a throwaway cluster, tests/pg_cluster.py); every other
# test runs on SQLite. The ``settings`` fixture (and all built on it) follows the engine.


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_engines"):
        metafunc.parametrize("engine", ["sqlite", "postgres"], indirect=True)


@pytest.fixture(scope="session")
def pg_cluster():
    cluster, reason = pg_cluster_module.start()
    if cluster is None:
        yield reason
        return
    try:
        pg_cluster_module.make_template(cluster)
        yield cluster
    finally:
        cluster.stop()


ENGINES = ("sqlite", "postgres")


def engine_database(request: pytest.FixtureRequest, engine: str) -> str:
    """For a fixture of any scope: empty for SQLite, else a fresh PostgreSQL database's URL,
    dropped when the fixture ends (the test is skipped, with why, when there is no cluster)."""
    if engine == "sqlite":
        return ""
    cluster = request.getfixturevalue("pg_cluster")
    if isinstance(cluster, str):
        pytest.skip(f"PostgreSQL tests skipped: {cluster}")
    url = cluster.new_database()

    def drop() -> None:
        if not database.is_closed():
            database.close()
        cluster.drop_database(url)

    request.addfinalizer(drop)
    return url


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(engine: str, request: pytest.FixtureRequest) -> str:
    """Empty for SQLite; a fresh, migrated PostgreSQL database's URL for postgres."""
    return engine_database(request, engine)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database__url=database_url)


@pytest.fixture
def app(settings: Settings):
    application = create_app(settings)
    yield application
    if not database.is_closed():
        database.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tokens(settings: Settings) -> dict[str, str]:
    auth = Authenticator(settings)
    return {
        "read": auth.issue_token("reader", "read"),
        "write": auth.issue_token("writer", "write"),
    }


@pytest.fixture
def auth_headers(tokens: dict[str, str]) -> Callable[[str], dict[str, str]]:
    return lambda scope="read": {"Authorization": f"Bearer {tokens[scope]}"}


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A real, small JPEG whose bytes differ with the seed."""
    img = PILImage.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, seed % 256))
    img.putpixel((0, 0), (seed % 256, (seed // 256) % 256, (seed // 65536) % 256))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def assert_crcs_are_the_files() -> int:
    """Every image's ``crc32`` is its file's CRC-32 counted here; how many were checked."""
    images = list(
        Image.select(Image.crc32, Image.storage_key, FileRoot.path.alias("root_path"))
        .join(FileRoot)
        .dicts()
    )
    for row in images:
        data = (Path(row["root_path"]) / row["storage_key"]).read_bytes()
        assert row["crc32"] == zlib.crc32(data), row
    return len(images)


def seed_image(
    settings: Settings,
    *,
    filename: str = "frame.jpg",
    device_id: str = "cam01",
    annotations: tuple[NewAnnotation, ...] = (),
    seed: int = 0,
    width: int = 64,
    height: int = 48,
    data: bytes | None = None,
    captured_at: int | None = None,
):
    """Store a real file under images/ and index it through the catalog's own write path."""
    data = data if data is not None else jpeg_bytes(width, height, seed)
    digest = hashlib.sha256(data).hexdigest()
    key = f"raw-data/{digest[:12]}_{filename}"
    target = settings.images_dir / key
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    image, _ = add_image(
        NewImage(
            filename=filename,
            storage_key=key,
            sha256=digest,
            crc32=zlib.crc32(data),
            byte_size=len(data),
            width=width,
            height=height,
            root=str(settings.images_dir),
            device_id=device_id,
            captured_at=captured_at,
            annotations=annotations,
        )
    )
    return image


class LiveServer:
    def __init__(self, app, host: str = "127.0.0.1", **kw: Any) -> None:
        self.server = waitress.server.create_server(app, host=host, port=0, threads=4, **kw)
        self.port = self.server.effective_port
        self.url = f"http://{host}:{self.port}"
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # Our own short-timeout loop, closed from this thread: closing the sockets from the test
        # thread while waitress sits in select() raced into EBADF in the server thread.
        from waitress import wasyncore

        while not self._stop.is_set():
            wasyncore.loop(timeout=0.05, map=self.server._map, count=1)
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.server._map)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kw)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.close()


@pytest.fixture
def emulator():
    """The upstream cloud's stand-in on a loopback port (tests/upstream_emulator.py)."""
    from upstream_emulator import UpstreamEmulator

    emu = UpstreamEmulator()
    yield emu
    emu.close()


@pytest.fixture(autouse=True)
def _close_db_after_test():
    # Tests that open the database directly (not through the app fixture) must not leave a
    # connection to a deleted tmp_path behind for the next test in this thread.
    yield
    if not database.is_closed():
        database.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the page tests (tests/browser_support.py), one per module."""
    from browser_support import browser_session

    yield from browser_session()


@pytest.fixture
def page(browser):
    from browser_support import page_session

    yield from page_session(browser)
