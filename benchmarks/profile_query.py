"""Profile one list query inside the service process: the real app (Flask, peewee, auth,
serialization) answering the same request repeatedly, under pyinstrument.

Usage: ``python benchmarks/profile_query.py --data /tmp/ec-1m --url '/data/images?split=val'
[--n 200]``. Requests go through Flask's test client, so waitress is not in the profile; the
HTTP layer's own cost is what the floor comparison in queries.py shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pyinstrument import Profiler

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.config import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder made by generate.py")
    parser.add_argument("--url", required=True, help="path and query string to request")
    parser.add_argument("--n", type=int, default=200, help="requests to profile")
    parser.add_argument("--html", type=Path, help="also write pyinstrument's HTML report here")
    args = parser.parse_args(argv)
    settings = load_settings(
        environ={},
        overrides={
            "storage.data_dir": str(args.data.resolve()),
            "auth.jwt_secret": "p" * 64,
            "upstream.base_url": "http://127.0.0.1:9/api",
        },
    )
    app = create_app(settings, migrate=False)
    headers = {"Authorization": "Bearer " + Authenticator(settings).issue_token("prof", "read")}
    client = app.test_client()
    assert client.get(args.url, headers=headers).status_code == 200  # warm the page cache
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    with profiler:
        for _ in range(args.n):
            client.get(args.url, headers=headers)
    per_request = (time.perf_counter() - started) * 1000 / args.n
    print(f"{args.url}: {per_request:.2f} ms per request in-process (n={args.n}, profiled)")
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if args.html:
        args.html.write_text(profiler.output_html())
    return 0


if __name__ == "__main__":
    sys.exit(main())
