"""A fault-injecting HTTP proxy to put between the service and a real S3 server.

Requests pass through unchanged (the `Host` header too, so SigV4 signatures stay valid) unless a `Fault`
matches them: then the proxy answers an S3 error (503, 429 `SlowDown`, ...), delays, cuts the connection before
or in the middle of the request body, or throttles writes to one key the way Storj does (about one per second).
Faults are added and cleared while the test runs; every request is recorded so tests can count attempts.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from tests.support.tools import free_port

COPY_CHUNK = 64 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}

Action = Literal["status", "drop", "drop_mid_body", "delay", "throttle"]


@dataclass
class Fault:
    """What to do to the requests that match `method`, `path` (decoded) and `query` (regexes searched in each),
    and carry the `header` named (any value), when one is.

    The first `skip` matching requests pass; after them, `times` requests (every one when None) get the fault.
    """

    action: Action
    method: str | None = None
    path: str | None = None
    query: str | None = None
    header: str | None = None
    status: int = 503
    code: str = "ServiceUnavailable"
    seconds: float = 0.0
    skip: int = 0
    times: int | None = None
    matched: int = 0
    hits: int = 0
    throttled: list[str] = field(default_factory=list)  # the keys a throttle refused, in order
    _last_write: dict[str, float] = field(default_factory=dict, repr=False)

    def matches(self, method: str, path: str, query: str, headers: frozenset[str] = frozenset()) -> bool:
        return (
            (self.header is None or self.header.lower() in headers)
            and (self.method is None or self.method == method)
            and (self.path is None or re.search(self.path, path) is not None)
            and (self.query is None or re.search(self.query, query) is not None)
        )

    def strikes(self, path: str) -> bool:
        """Count a matching request; True when this one gets the fault."""
        self.matched += 1
        if self.action == "throttle":
            return self._throttled(path)
        after_skip = self.matched - self.skip
        return after_skip > 0 and (self.times is None or after_skip <= self.times)

    def _throttled(self, path: str) -> bool:
        now = time.monotonic()
        if now - self._last_write.get(path, -1e9) < self.seconds:
            self.throttled.append(path)
            return True
        self._last_write[path] = now
        return False


def unavailable(**match: Any) -> Fault:
    return Fault("status", status=503, code="ServiceUnavailable", **match)


def slow_down(**match: Any) -> Fault:
    """Storj's throttling answer."""
    return Fault("status", status=429, code="SlowDown", **match)


def drop(**match: Any) -> Fault:
    """Close the connection as soon as the request head arrives: no answer at all."""
    return Fault("drop", **match)


def drop_mid_body(**match: Any) -> Fault:
    """Read half of the request body, then close the connection."""
    return Fault("drop_mid_body", **match)


def delay(seconds: float, **match: Any) -> Fault:
    return Fault("delay", seconds=seconds, **match)


def throttle_writes_per_key(seconds: float = 1.0, **match: Any) -> Fault:
    """429 `SlowDown` for a write to a key written less than `seconds` ago (Storj allows about 1 write/s)."""
    return Fault("throttle", status=429, code="SlowDown", seconds=seconds, **match)


def storj_write_limit() -> Fault:
    """Storj's limit on object writes: one a second to a key (PUT and CopyObject; parts of a multipart upload are
    not object writes)."""
    return throttle_writes_per_key(1.0, method="PUT", query=r"^(?!.*partNumber=)")


def no_conditional_overwrite() -> Fault:
    """Storj does not promise `If-Match` on writes (storj/storj#7377): this store refuses it as not implemented,
    so the service must do without it (`If-None-Match: *`, create-only, stays)."""
    return Fault("status", status=501, code="NotImplemented", method="PUT", header="If-Match")


def storj_rules() -> list[Fault]:
    """What the Storj gateway does that SeaweedFS does not: its per-key write limit, and no `If-Match`."""
    return [no_conditional_overwrite(), storj_write_limit()]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    fault: Action | None
    copy: bool = False  # an `x-amz-copy-source` header: CopyObject

    @property
    def operation(self) -> str:
        """The S3 operation, told from the method, the query and the copy header as a server would."""
        keyed = self.path.strip("/").count("/") >= 1
        params = {part.split("=", 1)[0] for part in self.query.split("&") if part}
        if self.method == "PUT":
            if "partNumber" in params:
                return "UploadPart"
            return "CopyObject" if self.copy else ("PutObject" if keyed else "CreateBucket")
        if self.method == "POST":
            return "CompleteMultipartUpload" if "uploadId" in params else "CreateMultipartUpload"
        if self.method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in params else "DeleteObject"
        if self.method == "HEAD":
            return "HeadObject" if keyed else "HeadBucket"
        if "list-type" in params:
            return "ListObjectsV2"
        return "ListMultipartUploads" if "uploads" in params else "GetObject"


class FaultProxy:
    """Listen on 127.0.0.1 and forward to `upstream` (`http://host:port`), applying the faults added."""

    def __init__(self, upstream: str, latency: float = 0.0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.latency = latency  # seconds added before every request: the round trip to a remote gateway
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault and forget the requests seen so far."""
        with self.lock:
            self.faults.clear()
            self.seen.clear()

    def forget_requests(self) -> None:
        """Forget the requests seen so far, keeping the faults (a store's standing rules)."""
        with self.lock:
            self.seen.clear()

    def count(self, method: str | None = None, path: str | None = None, query: str | None = None) -> int:
        """How many requests (faulted or passed on) matched."""
        probe = Fault("status", method=method, path=path, query=query)
        with self.lock:
            return sum(probe.matches(s.method, s.path, s.query) for s in self.seen)

    def operations(self) -> dict[str, int]:
        """How many requests of each S3 operation were seen (since the last `clear`)."""
        with self.lock:
            return dict(Counter(seen.operation for seen in self.seen))

    def quiet(self, seconds: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until no request has arrived for `seconds` (background work of a service has settled)."""
        deadline = time.monotonic() + timeout
        count = -1
        while time.monotonic() < deadline:
            with self.lock:
                now_seen = len(self.seen)
            if now_seen == count:
                return
            count = now_seen
            time.sleep(seconds)
        raise TimeoutError("the proxy never went quiet")

    def decide(
        self, method: str, path: str, query: str, copy: bool = False, headers: frozenset[str] = frozenset()
    ) -> Fault | None:
        with self.lock:
            chosen = None
            for fault in self.faults:
                if fault.matches(method, path, query, headers) and fault.strikes(path):
                    chosen = fault
                    fault.hits += 1
                    break
            self.seen.append(Seen(method, path, query, chosen.action if chosen else None, copy))
            return chosen


def s3_error(status: int, code: str, path: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected by the fault proxy (HTTP {status})</Message>"
        f"<Resource>{path}</Resource><RequestId>fault-proxy</RequestId></Error>"
    ).encode()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    proxy: FaultProxy

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        copy = "x-amz-copy-source" in self.headers
        headers = frozenset(name.lower() for name in self.headers)
        fault = self.proxy.decide(self.command, unquote(parts.path), parts.query, copy, headers)
        length = int(self.headers.get("Content-Length") or 0)
        if self.proxy.latency:
            time.sleep(self.proxy.latency)
        if fault is None or fault.action == "delay":
            if fault is not None:
                time.sleep(fault.seconds)
            self._forward(length)
        elif fault.action == "drop":
            self._cut()
        elif fault.action == "drop_mid_body":
            self._discard(length // 2)
            self._cut()
        else:
            self._discard(length)
            self._answer_error(fault.status, fault.code, parts.path)

    def _cut(self) -> None:
        """Reset the connection: the client sees it die with no answer."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(COPY_CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)

    def _answer_error(self, status: int, code: str, path: str) -> None:
        body = s3_error(status, code, path) if self.command != "HEAD" else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        if status in (429, 503):
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, length: int) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._discard_and_refuse()
            return
        upstream = http.client.HTTPConnection(*self.proxy.upstream, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.endheaders()
            self._copy_body(upstream, length)
            response = upstream.getresponse()
            self._relay(response)
        finally:
            upstream.close()

    def _discard_and_refuse(self) -> None:
        self.close_connection = True
        self._answer_error(501, "NotImplemented", "chunked request bodies are not supported by the fault proxy")

    def _copy_body(self, upstream: http.client.HTTPConnection, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(COPY_CHUNK, length))
            if not chunk:
                raise ConnectionError("client went away mid-body")
            upstream.send(chunk)
            length -= len(chunk)

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)  # upstream's own Server and Date headers follow
        declared = response.getheader("Content-Length")
        bodiless = self.command == "HEAD" or response.status in (204, 304)
        body = b"" if bodiless or declared is not None else response.read()
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and (name.lower() != "content-length" or bodiless):
                self.send_header(name, value)
        if not bodiless:
            self.send_header("Content-Length", declared if declared is not None else str(len(body)))
        self.end_headers()
        if bodiless:
            return
        if body:
            self.wfile.write(body)
            return
        while chunk := response.read(COPY_CHUNK):
            self.wfile.write(chunk)
