"""A receiver of registry events on 127.0.0.1, as a deploy pipeline or scanner would run one.

It checks each request's HMAC-SHA256 signature (`X-Registry-Signature-256`) and Content-Type, and keeps every
event in arrival order. It can be down (nothing listens on its port until `start`), and slow: while `hold()` is in
effect it takes requests but answers none until released.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.tools import free_port

MEDIA_TYPE = "application/vnd.docker.distribution.events.v2+json"
SIGNATURE_HEADER = "X-Registry-Signature-256"


class Receiver:
    def __init__(self, secret: str = "", port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []  # the headers of each request, in order
        self.bad: list[str] = []  # what was wrong with requests that failed the checks
        self.arrived = threading.Condition()
        self.released = threading.Event()
        self.released.set()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.released.wait(timeout=120)
                problem = receiver.check(dict(self.headers), body)
                self.send_response(401 if problem else 202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.arrived:
                    receiver.requests.append(dict(self.headers))
                    if problem:
                        receiver.bad.append(problem)
                    else:
                        receiver.events += json.loads(body)["events"]
                    receiver.arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.released.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def check(self, headers: dict[str, str], body: bytes) -> str:
        if headers.get("Content-Type") != MEDIA_TYPE:
            return f"content type {headers.get('Content-Type')}"
        if self.secret:
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(headers.get(SIGNATURE_HEADER, ""), expected):
                return "bad signature"
        return ""

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Take requests but answer none (a receiver stuck on a slow disk) until the block ends."""
        self.released.clear()
        try:
            yield
        finally:
            self.released.set()

    def wait_for(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The first `count` events, once they have arrived (fails after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.events) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.events)} of {count} events arrived: {self.summary()}"
                self.arrived.wait(left)
            return list(self.events[:count])

    def summary(self) -> list[tuple[str, str, str]]:
        return [(e["action"], e["target"].get("repository", ""), e["target"].get("tag", "")) for e in self.events]


@contextmanager
def running_receiver(secret: str = "", *, started: bool = True) -> Iterator[Receiver]:
    receiver = Receiver(secret)
    if started:
        receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
