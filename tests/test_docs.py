"""The documentation holds together: every relative link in README.md, docs/*.md and
benchmarks/README.md reaches a file (and, for ``#anchor`` links into Markdown, a heading), the
README stays short enough to finish, and its two set-up commands stay what they are, with
``.ci/run`` running the test command verbatim.

Anchors follow GitHub's rules: the heading's text, lowercased, punctuation other than ``-`` and
``_`` removed, spaces turned into ``-``; a repeated heading gets ``-1``, ``-2``, ...
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 200

INSTALL_AND_SERVE = (
    "python3 -m venv .venv || { sudo apt-get install -y python3-venv && python3 -m venv .venv; }; "
    ".venv/bin/pip install . && .venv/bin/edgecatalog serve"
)
INSTALL_AND_TEST = (
    "python3 -m venv .venv || { sudo apt-get install -y python3-venv && python3 -m venv .venv; }; "
    ".venv/bin/pip install '.[test,postgres]' && .venv/bin/python -m pytest -q"
)

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) or ![alt](target), with an optional "title"; text may hold `code`.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def doc_files(root: Path) -> list[Path]:
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    bench = root / "benchmarks" / "README.md"
    if bench.exists():
        files.append(bench)
    return files


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def code_blocks(text: str) -> list[str]:
    blocks, current = [], None
    for line in text.splitlines():
        if FENCE.match(line):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def github_anchor(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text, not its target
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        out.extend((number, m.group(1)) for m in LINK.finditer(line))
    return out


def broken_links(root: Path) -> list[str]:
    """Every relative link of the documentation that does not resolve, as 'file:line: target'."""
    broken = []
    for doc in doc_files(root):
        for number, target in links(doc):
            if EXTERNAL.match(target):
                continue
            where = f"{doc.relative_to(root)}:{number}: {target}"
            path_part, _, anchor = target.partition("#")
            dest = (doc.parent / path_part).resolve() if path_part else doc
            if not dest.exists():
                broken.append(f"{where} (no such file)")
                continue
            if not dest.resolve().is_relative_to(root.resolve()):
                broken.append(f"{where} (outside the repository)")
                continue
            if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no heading with that anchor)")
    return broken


# -- the repository's documentation -----------------------------------------------------------


def test_every_relative_link_resolves():
    broken = broken_links(REPO)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_is_short_enough_to_finish():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_opens_with_its_two_commands_verbatim():
    blocks = code_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks[:2] == [INSTALL_AND_SERVE, INSTALL_AND_TEST]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = code_blocks((REPO / "README.md").read_text(encoding="utf-8"))[1]
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


# -- the checker itself can fail ---------------------------------------------------------------


def _copy_docs(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for doc in doc_files(REPO):
        dest = root / doc.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(doc, dest)
    return root


def test_a_broken_file_link_is_found(tmp_path):
    root = _copy_docs(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text() + "\nSee [gone](docs/no-such-page.md).\n")
    assert any("docs/no-such-page.md (no such file)" in b for b in broken_links(root))


def test_a_broken_anchor_is_found_and_a_good_one_is_not(tmp_path):
    root = _copy_docs(tmp_path)
    page = root / "docs" / "extra.md"
    page.write_text(
        "# Extra\n\n## The list contract: `GET /data/images`\n\n"
        "[ok](#the-list-contract-get-dataimages) [bad](#no-such-heading)\n"
        "```\n[in code](#not-checked)\n```\n"
    )
    found = [b for b in broken_links(root) if b.startswith("docs/extra.md")]
    assert found == ["docs/extra.md:5: #no-such-heading (no heading with that anchor)"]


def test_github_anchor_rules():
    assert (
        github_anchor("The list contract: `GET /data/images`") == "the-list-contract-get-dataimages"
    )
    assert github_anchor("Projects, batches and annotations") == "projects-batches-and-annotations"
    assert (
        github_anchor("`edgecatalog scan DIR [--recursive] [--mode index|move]`")
        == "edgecatalog-scan-dir---recursive---mode-indexmove"
    )
    assert github_anchor("snake_case and dash-ed") == "snake_case-and-dash-ed"


def _list_parameter_rows() -> dict[str, str]:
    """docs/api.md's table of GET /data/images parameters: each parameter named in its first
    column (``a`` / ``b`` and ``a``, ``b`` name two) -> its 'accepted values' cell."""
    rows: dict[str, str] = {}
    lines = (REPO / "docs" / "api.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| parameter | accepted values | meaning |")
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        first, accepted = (cell.strip() for cell in line.strip("|").split("|")[:2])
        for name in re.findall(r"`([a-z_]+)`", first):
            rows[name] = accepted
    return rows


def test_the_list_parameter_table_is_the_declared_parameters():
    """A filter or option added to the code (listing.FILTERS / OPTIONS) and not to the table,
    or a value a choice accepts missing from its row, fails here."""
    from edgecatalog import listing as queries

    rows = _list_parameter_rows()
    declared = [f.param for f in queries.FILTERS] + [o.param for o in queries.OPTIONS]
    assert sorted(rows) == sorted(declared)
    for declared_param in (*queries.FILTERS, *queries.OPTIONS):
        schema = getattr(declared_param.parse, "schema", None) or {}
        items = schema.get("items", {}) if schema.get("type") == "array" else schema
        for value in items.get("enum", []):
            if value is not None:
                assert f"`{value}`" in rows[declared_param.param], (declared_param.param, value)
