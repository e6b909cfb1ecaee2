"""``python -m edgecatalog.openapi_write --write``: regenerate the committed OpenAPI document
(``openapi/openapi.json``) from an app built on throwaway settings; ``--check`` exits 1 when it
is stale. Its own module because it builds the app: ``apidoc`` is imported by a view, so it
must not import the package's ``create_app`` back.
"""

from __future__ import annotations

import sys
from typing import Any

from . import apidoc


def _generated() -> dict[str, Any]:
    """The document of the app ``create_app`` builds on throwaway settings (a temporary data
    folder): its routes and their access are all that is read."""
    import tempfile

    from . import create_app
    from .config import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            environ={},
            # The site gateway's routes are in the document too: it says they need the setting.
            overrides={"storage.data_dir": tmp, "auth.jwt_secret": "x" * 40, "site.enabled": True},
        )
        return apidoc.generate(create_app(settings))


def main(argv: list[str]) -> int:
    """``--write``: regenerate the committed file; ``--check``: exit 1 when it is stale."""
    if argv not in (["--write"], ["--check"]):
        print("usage: python -m edgecatalog.openapi_write --write | --check", file=sys.stderr)
        return 2
    text = apidoc.render(_generated())
    if argv == ["--write"]:
        apidoc.COMMITTED.write_text(text, encoding="utf-8")
        print(f"wrote {apidoc.COMMITTED}")
        return 0
    if apidoc.COMMITTED.read_text(encoding="utf-8") != text:
        print(
            f"{apidoc.COMMITTED} is stale; regenerate it with: {apidoc.REGENERATE}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
