"""``python -m edgecatalog`` is the ``edgecatalog`` command."""

from .cli import main

raise SystemExit(main())
