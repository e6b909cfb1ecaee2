"""The domain never imports Flask: checked on the source (every import statement, including
ones inside functions) and at run time (importing the whole domain loads no flask module).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgecatalog"
# The web edge: importing one of these is importing Flask. Everything else is the domain,
# found on disk, so a new module is held to the rule without a line here.
WEB_MODULES = ("web", "views", "access")
# The API document describes the web edge (routes, access, body fields), so it may read it.
DOCUMENT_MODULES = ("apidoc", "openapi_write")
# create_app (Flask on demand), the command line and the server that starts the app.
ENTRY_MODULES = ("__init__", "__main__", "cli", "server")
DOMAIN_MODULES = tuple(
    sorted(
        p.stem
        for p in PACKAGE.glob("*.py")
        if p.stem not in WEB_MODULES + ENTRY_MODULES + DOCUMENT_MODULES
    )
)
DOMAIN_PACKAGES = tuple(
    sorted(
        p.name
        for p in PACKAGE.iterdir()
        if (p / "__init__.py").is_file() and p.name not in WEB_MODULES
    )
)


def domain_files() -> list[Path]:
    files = [PACKAGE / f"{name}.py" for name in DOMAIN_MODULES]
    for pkg in DOMAIN_PACKAGES:
        if (PACKAGE / pkg).is_dir():
            files += sorted((PACKAGE / pkg).rglob("*.py"))
    return files


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> set[str]:
    """Absolute names of every module an import statement in ``path`` names."""
    package = list(path.relative_to(root).parts[:-1])  # a module's (or __init__'s) package
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_domain_list_is_real():
    for path in domain_files()[: len(DOMAIN_MODULES)]:
        assert path.is_file(), path


@pytest.mark.parametrize("path", domain_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_domain_module_does_not_import_flask(path):
    bad = set()
    for name in imported_modules(path):
        top = name.split(".")
        if top[0] == "flask":
            bad.add(name)
        if top[0] == "edgecatalog" and len(top) > 1 and top[1] in WEB_MODULES:
            bad.add(name)
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_scanner_catches_a_flask_import(tmp_path):
    # The scanner itself can fail: a planted import is found, relative or not, even in a function.
    fake = tmp_path / "edgecatalog" / "ingest" / "planted.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..web import settings\n    import flask.json\n")
    assert imported_modules(fake, tmp_path) >= {"edgecatalog.web", "flask.json"}


def test_importing_the_domain_loads_no_flask(tmp_path):
    modules = [f"edgecatalog.{m}" for m in DOMAIN_MODULES]
    for pkg in DOMAIN_PACKAGES:
        for path in sorted((PACKAGE / pkg).rglob("*.py")) if (PACKAGE / pkg).is_dir() else []:
            rel = path.relative_to(PACKAGE.parent).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            modules.append(".".join(parts))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m == 'flask' or m.startswith('flask.')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECATALOG_")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
