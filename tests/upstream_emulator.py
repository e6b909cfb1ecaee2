"""A contract-faithful stand-in for the Acusight cloud, on a loopback port, for sync tests.

Implements what the contract notes (§3, §5.5, §6.1, §8.3) document of the calls the sync
worker makes: ``POST /api/device/images/upload`` (X-Device-Key, multipart ``image`` +
``metadata``, 50 MB limit, JPEG/PNG only, duplicates by SHA-256 answered 409
``DUPLICATE_IMAGE``, 201 ``{success, data: {image_id, batch_id, storage_key}}``),
``GET /api/device/self``, ``PATCH /api/data/images/{id}`` and ``POST /api/data/annotations``
(bearer). An ``Idempotency-Key`` seen before gets the same answer again (status and body).

Faults are switchable: ``go_offline()`` closes the listening socket (connections refused)
and every open connection; ``queue_faults`` applies faults to the next requests in order;
``random_faults`` applies them with a seeded probability; ``poison`` answers one filename
with a fixed status forever. Fault kinds: ``500``, ``429`` (with Retry-After), ``401``,
``413``, ``400``, ``slow`` (answer after ``slow_seconds``, past the client's timeout) and
``drop`` (the upload is stored, then the connection is closed without an answer).
``bandwidth`` caps how fast request bodies are read (a thin uplink).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from werkzeug.formparser import parse_form_data

MAX_UPLOAD = 50 * 1024 * 1024
FAULTS = ("500", "429", "401", "413", "400", "slow", "drop")


@dataclass
class Stored:
    image_id: Any
    batch_id: Any
    storage_key: str
    sha256: str
    filename: str
    size: int
    metadata: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)  # annotation_status, split, ...


@dataclass
class Logged:
    start: float
    end: float
    method: str
    path: str
    status: int | None  # None: no answer was sent (dropped)
    body_bytes: int
    idempotency_key: str
    fault: str = ""


class UpstreamEmulator:
    def __init__(
        self,
        *,
        device_key: str = "adk_test",
        api_token: str = "tok_test",
        id_style: str = "int",
        honour_idempotency: bool = True,
        retry_after: int = 1,
        slow_seconds: float = 2.0,
        latency: float = 0.0,
        record_bodies: bool = False,
        bandwidth: int = 0,
    ) -> None:
        self.device_key, self.api_token = device_key, api_token
        self.id_style, self.honour_idempotency = id_style, honour_idempotency
        self.retry_after, self.slow_seconds, self.latency = retry_after, slow_seconds, latency
        # A thin uplink: request bodies are read at most this many bytes a second (0: as fast
        # as they come), so an upload takes as long as it would on the link.
        self.bandwidth = bandwidth
        self.lock = threading.RLock()
        self.images: dict[str, Stored] = {}  # by sha256
        self.by_id: dict[str, Stored] = {}
        self.annotations: list[dict[str, Any]] = []
        self.idempotent: dict[str, tuple[int, bytes]] = {}
        self.log: list[Logged] = []
        self.received: list[tuple[float, int]] = []  # (arrival time, body bytes)
        self.uploads_received = 0  # complete upload bodies read, duplicates included
        # Every request body as received, when a test must look for bytes that must never
        # leave the device (off by default: soaks send thousands of images).
        self.bodies: list[bytes] | None = [] if record_bodies else None
        self.replays = 0  # answers repeated for a known Idempotency-Key
        self.poison: dict[str, str] = {}  # filename -> fault kind, forever
        self._queued: list[str] = []
        self._random: tuple[random.Random, float, tuple[str, ...]] | None = None
        self._next_id = 1000
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self.port = 0
        self.go_online()

    # -- life cycle ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def go_online(self) -> None:
        if self._server is not None:
            return
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = _QuietServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def go_offline(self) -> None:
        """Close the listening socket (new connections are refused) and every open one."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        self.go_offline()

    # -- faults ----------------------------------------------------------------------------
    def queue_faults(self, *kinds: str) -> None:
        assert all(k in FAULTS or k == "" for k in kinds), kinds
        with self.lock:
            self._queued.extend(kinds)

    def random_faults(self, probability: float, kinds: tuple[str, ...], seed: int) -> None:
        self._random = (random.Random(seed), probability, kinds) if probability else None

    def _take_fault(self, filename: str) -> str:
        with self.lock:
            if filename and filename in self.poison:
                return self.poison[filename]
            if self._queued:
                return self._queued.pop(0)
            if self._random is not None:
                rng, p, kinds = self._random
                if rng.random() < p:
                    return rng.choice(kinds)
        return ""

    # -- views -----------------------------------------------------------------------------
    def new_id(self, prefix: str) -> Any:
        self._next_id += 1
        return self._next_id if self.id_style == "int" else f"{prefix}_{self._next_id}"

    def store_upload(self, image: bytes, filename: str, meta: dict[str, Any]) -> tuple[int, dict]:
        digest = hashlib.sha256(image).hexdigest()
        if meta.get("sha256") not in (None, digest):
            return 400, _error("VALIDATION_ERROR", "sha256 does not match the image", "sha256")
        with self.lock:
            self.uploads_received += 1
            if digest in self.images:
                return 409, _error(
                    "DUPLICATE_IMAGE", "an image with this hash already exists", "sha256"
                )
            image_id, batch_id = self.new_id("img"), 7 if self.id_style == "int" else "batch_7"
            stored = Stored(
                image_id,
                batch_id,
                f"raw-data/{image_id}_{filename}",
                digest,
                filename,
                len(image),
                meta,
            )
            self.images[digest] = stored
            self.by_id[str(image_id)] = stored
        data = {"image_id": image_id, "batch_id": batch_id, "storage_key": stored.storage_key}
        return 201, {"success": True, "data": data}

    def annotations_of(self, image_id: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.annotations if str(a["image_id"]) == str(image_id)]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients killed or timed out mid-request are part of the tests, not news


def _error(code: str, message: str, details: str = "") -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message, "details": details}}


FAULT_ANSWERS = {
    "500": (500, _error("INTERNAL_ERROR", "emulated server error")),
    "401": (401, _error("INVALID_DEVICE_KEY", "emulated auth failure")),
    "413": (413, _error("PAYLOAD_TOO_LARGE", "emulated size rejection", "image")),
    "400": (400, _error("VALIDATION_ERROR", "emulated bad request", "metadata")),
}
_IMAGE_PATH = re.compile(r"^/api/data/images/([^/]+)$")


class _Handler(BaseHTTPRequestHandler):
    emulator: UpstreamEmulator
    protocol_version = "HTTP/1.1"  # keep-alive, as a real API gateway does

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle's algorithm and
        # the peer's delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.emulator.lock:
            self.emulator._conns.add(self.connection)

    def finish(self) -> None:
        with self.emulator.lock:
            self.emulator._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    # -- plumbing --------------------------------------------------------------------------
    def _answer(
        self,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        payload = raw if raw is not None else json.dumps(body).encode()
        self._status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True

    def _drop(self) -> None:
        self._status = None
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_body(self) -> bytes:
        """Read the body in small pieces, logging when each arrived (for bandwidth checks)."""
        length, parts = int(self.headers.get("Content-Length") or 0), []
        while length > 0:
            piece = self.rfile.read(min(length, 4096))
            if not piece:
                break
            length -= len(piece)
            parts.append(piece)
            if self.emulator.bandwidth:
                time.sleep(len(piece) / self.emulator.bandwidth)
            with self.emulator.lock:
                self.emulator.received.append((time.monotonic(), len(piece)))
        if length > 0:  # the client went away mid-body: a server drops such a request
            raise ConnectionAbortedError("request body ended early")
        body = b"".join(parts)
        if self.emulator.bodies is not None:
            with self.emulator.lock:
                self.emulator.bodies.append(body)
        return body

    def _logged(self, handler) -> None:
        start, self._status, self._fault, self._size = time.monotonic(), None, "", 0
        try:
            if self.emulator.latency:
                time.sleep(self.emulator.latency)
            handler()
        except (ConnectionAbortedError, ConnectionResetError, BrokenPipeError):
            self.close_connection = True  # nothing was processed; nobody to answer
        finally:
            entry = Logged(
                start,
                time.monotonic(),
                self.command,
                self.path,
                self._status,
                self._size,
                self.headers.get("Idempotency-Key", ""),
                self._fault,
            )
            with self.emulator.lock:
                self.emulator.log.append(entry)

    def _fault_answer(self, fault: str) -> bool:
        """Answer an immediate fault; True when the request is finished."""
        self._fault = fault
        if fault in FAULT_ANSWERS:
            status, body = FAULT_ANSWERS[fault]
            self._answer(status, body)
            return True
        if fault == "429":
            self._answer(
                429,
                _error("RATE_LIMITED", "emulated rate limit"),
                {"Retry-After": str(self.emulator.retry_after)},
            )
            return True
        return False

    def _bearer_ok(self) -> bool:
        if self.headers.get("Authorization", "") == f"Bearer {self.emulator.api_token}":
            return True
        self._answer(401, _error("UNAUTHORIZED", "missing or invalid bearer token"))
        return False

    def _device_ok(self) -> bool:
        if self.headers.get("X-Device-Key", "") == self.emulator.device_key:
            return True
        self._answer(401, _error("INVALID_DEVICE_KEY", "missing or invalid X-Device-Key"))
        return False

    def _replay(self, key: str) -> bool:
        if key and self.emulator.honour_idempotency:
            with self.emulator.lock:
                seen = self.emulator.idempotent.get(key)
            if seen is not None:
                with self.emulator.lock:
                    self.emulator.replays += 1
                self._answer(seen[0], {}, raw=seen[1])
                return True
        return False

    def _remember(self, key: str, status: int, body: dict[str, Any]) -> None:
        if key and self.emulator.honour_idempotency and status < 500:
            with self.emulator.lock:
                self.emulator.idempotent[key] = (status, json.dumps(body).encode())

    # -- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._logged(self._get)

    def do_POST(self) -> None:
        self._logged(self._post)

    def do_PATCH(self) -> None:
        self._logged(self._patch)

    def _get(self) -> None:
        if self.path != "/api/device/self":
            return self._answer(404, _error("NOT_FOUND", "no such route"))
        if self._device_ok():
            self._answer(
                200,
                {
                    "success": True,
                    "data": {
                        "device_id": "emulated",
                        "endpoint_id": "emulated",
                        "status": "approved",
                        "organization_id": "00000000-0000-0000-0000-000000000000",
                        "name": "emulated",
                    },
                },
            )

    def _post(self) -> None:
        if self.path == "/api/data/annotations":
            return self._post_annotation()
        if self.path != "/api/device/images/upload":
            self._read_body()
            return self._answer(404, _error("NOT_FOUND", "no such route"))
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD + 64 * 1024:
            self.close_connection = True  # the body is not read: the connection is spent
            return self._answer(413, _error("PAYLOAD_TOO_LARGE", "image exceeds 50 MB", "image"))
        body = self._read_body()
        self._size = len(body)
        if not self._device_ok():
            return
        key = self.headers.get("Idempotency-Key", "")
        if self._replay(key):
            return
        status, answer = self._upload(body)
        if self._status is not None:
            return  # a fault already answered; not remembered, a retry may succeed
        self._remember(key, status, answer)
        if self._fault == "drop":
            return self._drop()
        if self._fault == "slow":
            time.sleep(self.emulator.slow_seconds)
        self._answer(status, answer)

    def _upload(self, body: bytes) -> tuple[int, dict[str, Any]]:
        environ = {
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        _, form, files = parse_form_data(environ)
        if "image" not in files:
            return 400, _error("VALIDATION_ERROR", "the image part is required", "image")
        image = files["image"].read()
        filename = files["image"].filename or "image"
        fault = self.emulator._take_fault(filename)
        if fault and fault not in ("drop", "slow"):
            self._fault_answer(fault)
            return self._status or 500, {}
        self._fault = fault
        if len(image) > MAX_UPLOAD:
            return 413, _error("PAYLOAD_TOO_LARGE", "image exceeds 50 MB", "image")
        if not (image.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"))):
            return 400, _error("VALIDATION_ERROR", "image must be JPEG or PNG", "image")
        try:
            meta = json.loads(form.get("metadata") or "{}")
            _check_metadata(meta)
        except (ValueError, TypeError) as exc:
            return 400, _error("VALIDATION_ERROR", f"metadata: {exc}", "metadata")
        return self.emulator.store_upload(image, filename, meta)

    def _post_annotation(self) -> None:
        raw = self._read_body()
        self._size = len(raw)
        if self._fault_answer(self.emulator._take_fault("")) or not self._bearer_ok():
            return
        key = self.headers.get("Idempotency-Key", "")
        if self._replay(key):
            return
        body = json.loads(raw or b"{}")
        with self.emulator.lock:
            if str(body.get("image_id")) not in self.emulator.by_id:
                return self._answer(404, _error("NOT_FOUND", "no such image", "image_id"))
            record = dict(body, id=self.emulator.new_id("ann"))
            self.emulator.annotations.append(record)
        answer = {"success": True, "data": record}
        self._remember(key, 201, answer)
        self._answer(201, answer)

    def _patch(self) -> None:
        raw = self._read_body()
        self._size = len(raw)
        match = _IMAGE_PATH.match(self.path)
        if not match:
            return self._answer(404, _error("NOT_FOUND", "no such route"))
        if self._fault_answer(self.emulator._take_fault("")) or not self._bearer_ok():
            return
        body = json.loads(raw or b"{}")
        unknown = set(body) - {"annotation_status", "split", "split_locked"}
        if unknown:
            return self._answer(
                400, _error("VALIDATION_ERROR", "unknown fields", ",".join(unknown))
            )
        with self.emulator.lock:
            stored = self.emulator.by_id.get(match.group(1))
            if stored is None:
                return self._answer(404, _error("NOT_FOUND", "no such image", "id"))
            stored.fields.update(body)
        self._answer(200, {"success": True, "data": {"id": stored.image_id, **stored.fields}})


def _check_metadata(meta: Any) -> None:
    """The upload metadata as the contract's examples show it; normalized geometry only."""
    if not isinstance(meta, dict):
        raise TypeError("metadata must be a JSON object")
    for ann in meta.get("annotations", []):
        geometry = ann.get("geometry")
        if not isinstance(ann.get("class_value"), str) or ann.get("type") not in (
            "bbox",
            "polygon",
        ):
            raise ValueError("annotations need class_value and type")
        if not isinstance(geometry, list) or not all(0 <= float(v) <= 1 for v in geometry):
            raise ValueError("annotation geometry must be normalized to 0..1")
        if ann["type"] == "bbox" and len(geometry) != 4:
            raise ValueError("a bbox geometry has four numbers")
