"""The upload floor: the least a Python server can do with a device upload.

A bare WSGI callable on waitress (the same server and thread count as the service) that takes
``POST /device/images/upload``, streams the multipart body's parts to a file in ``--dir``
with werkzeug's form parser (the one Flask gives the service), fsyncs the image file, and
answers ``201`` with a small JSON body. No framework, no auth, no validation, no hashing, no
database: what receiving and keeping the bytes durably costs, so the service's upload rate
can be read as a ratio that holds across machines (``benchmarks/ingest.py`` reports it).

Usage: ``python benchmarks/upload_floor.py --port 8092 --dir /tmp/floor-uploads [--threads 4]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import waitress
from werkzeug.formparser import parse_form_data


def make_app(folder: Path):
    def stream_factory(total_content_length, content_type, filename, content_length=None):
        # Every file part straight to disk, as the service spools an upload.
        return tempfile.NamedTemporaryFile(dir=folder, delete=False)

    def app(environ, start_response):
        if environ["PATH_INFO"] != "/device/images/upload" or environ["REQUEST_METHOD"] != "POST":
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        _, _form, files = parse_form_data(environ, stream_factory=stream_factory)
        part = files.get("image")
        if part is None:
            start_response("400 Bad Request", [("Content-Length", "0")])
            return [b""]
        part.stream.flush()
        os.fsync(part.stream.fileno())
        part.stream.close()
        body = b'{"success":true,"data":{"stored":true}}'
        start_response(
            "201 Created",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    waitress.serve(
        make_app(args.dir), host="127.0.0.1", port=args.port, threads=args.threads, _quiet=True
    )


if __name__ == "__main__":
    main()
