"""No import cycle in the ``edgecatalog`` package.

The graph is built from the source with ``ast``: every ``import`` and ``from ... import`` of
a package module counts, at module level or inside a function (an import moved into a
function to dodge a cycle at start-up still ties the two modules together), relative imports
resolved against the importing module. ``from package import name`` counts as an import of the
submodule ``package.name`` when there is one, else of the package itself. Imports under
``if TYPE_CHECKING:`` count too: a type that can only be named behind that guard is a
dependency the same way.

A cycle is reported as a strongly connected component (every module in it reaches every
other) and printed as one shortest cycle through it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "edgecatalog"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (``from ..x import y`` -> ``pkg.x``)."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]  # a module's relative imports start at its package
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(name, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in files else base)
            for target in targets:
                # ``import a.b.c`` imports a, a.b and a.b.c; the deepest known one is the edge
                # (a package's __init__ importing nothing would add no cycle anyway).
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith(PACKAGE):
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per component of ``cyclic_components``, as a path ``a -> b -> ... -> a``."""
    return [_cycle_through(graph, component) for component in cyclic_components(graph)]


def cyclic_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle from the component's first module back to itself (breadth first)."""
    members, start = set(component), component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - Tarjan found one


def _shown(cycles: list[list[str]]) -> str:
    return "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_graph_sees_relative_local_and_package_imports():
    graph = import_graph()
    assert "edgecatalog.ingest.metadata" in graph["edgecatalog.ingest.sidecars"]  # from .x
    assert "edgecatalog.apidoc" in graph["edgecatalog.views.ops"]  # from .. import x
    assert "edgecatalog.views.files" in graph["edgecatalog"]  # inside create_app
    assert "edgecatalog.version" in graph["edgecatalog"]  # from .version import x
    cyclic = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"a"}, "e": {"a"}}
    assert find_cycles(cyclic) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    print(_shown(cycles))
    assert not cycles, "import cycles: " + _shown(cycles)
