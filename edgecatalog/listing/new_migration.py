"""``python -m edgecatalog.listing.new_migration NAME``: write the migration that installs the
count tables as ``listing.counts.COUNT_TABLES`` now declares them.

The declaration is frozen in the file as literals (a migration must not follow later changes
to the code), with the previous count migration's declaration as what it replaces; the engine
renders the tables and triggers when it runs (``engines.install_counts``). A developer tool: the
service never imports it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .counts import COUNT_TABLES, CountTable, Key


def _key(key: Key) -> str:
    of = f', of="{key.of}"' if key.of else ""
    return f'Key("{key.name}", "{key.type}"{of})'


def _literal(tables: tuple[CountTable, ...]) -> str:
    """The tables as Python source, already in the project's format."""
    lines = ["("]
    for t in tables:
        lines += ["    CountTable(", f'        "{t.name}",']
        if len(t.keys) == 1:  # a one-element tuple stays on one line in the project format
            (k,) = t.keys
            lines.append(f"        ({_key(k)},),")
        elif t.keys:
            lines.append("        (")
            lines += [f"            {_key(k)}," for k in t.keys]
            lines.append("        ),")
        else:
            lines.append("        (),")
        lines.append(f"        per_class={t.per_class},")
        if t.annotations:
            lines.append("        annotations=True,")
        lines.append("    ),")
    lines.append(")")
    return "\n".join(lines)


def migration_source(tables: tuple[CountTable, ...], previous: tuple[CountTable, ...]) -> str:
    """The text of a migration that installs ``tables`` over ``previous`` (what the last
    migration that installed count tables left); both frozen in it as literals."""
    return (
        '"""The list\'s count tables as ``edgecatalog.listing.counts`` declared them when this\n'
        "migration was written (frozen here: a later declaration needs its own migration).\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        "from edgecatalog.engines import engine_of, install_counts\n"
        "from edgecatalog.listing.counts import CountTable, Key\n\n"
        "# What the previous count migration installed.\n"
        f"PREVIOUS = {_literal(previous)}\n"
        f"TABLES = {_literal(tables)}\n\n\n"
        "def up(migrator, db):\n"
        "    install_counts(db.execute_sql, TABLES, previous=PREVIOUS, engine=engine_of(db))\n"
    )


def declared_in(path: Path) -> tuple[CountTable, ...]:
    """The ``TABLES`` a count migration froze, read from its file."""
    spec = importlib.util.spec_from_file_location(f"count_migration_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TABLES


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isidentifier() or not args[0].islower():
        print("usage: python -m edgecatalog.listing.new_migration NAME (short, snake_case)")
        return 2
    from ..db import migrations_dir  # a developer tool: the service never imports it

    folder = migrations_dir()
    existing = sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.py"))
    previous = [p for p in existing if "install_counts(" in p.read_text()][-1]
    path = folder / f"{int(existing[-1].name[:4]) + 1:04d}_{args[0]}.py"
    path.write_text(migration_source(COUNT_TABLES, declared_in(previous)))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
