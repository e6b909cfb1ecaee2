"""What the operations endpoints cost on a large catalog: /metrics (counts and sums read at
scrape time), /readyz and /healthz, through the real app over real HTTP.

Usage: ``python benchmarks/generate.py --images 1000000 --out /tmp/ec-1m`` once, then
``python benchmarks/ops.py --data /tmp/ec-1m``. Prints the median and worst of each endpoint
over ``--rounds`` requests. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from serve_process import ThreadedServer  # after the path set-up above

from edgecatalog import create_app
from edgecatalog.auth import Authenticator
from edgecatalog.config import load_settings
from edgecatalog.models import Image


def timed(session: requests.Session, url: str, rounds: int, **kw) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = session.get(url, timeout=60, **kw)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return statistics.median(times) * 1000, max(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a data folder (generate.py)")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    settings = load_settings(
        environ={}, overrides={"storage.data_dir": str(args.data), "auth.jwt_secret": "b" * 40}
    )
    app = create_app(settings)
    server = ThreadedServer(app)
    token = Authenticator(settings).issue_token("bench", "read")
    try:
        with app.app_context():
            images = Image.select().count()
        session = requests.Session()
        headers = {"Authorization": f"Bearer {token}"}
        print(f"catalog: {images} images")
        for path, kw in (("/metrics", {"headers": headers}), ("/readyz", {}), ("/healthz", {})):
            median, worst = timed(session, server.url + path, args.rounds, **kw)
            print(f"GET {path:<9} median {median:7.1f} ms   worst {worst:7.1f} ms")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
