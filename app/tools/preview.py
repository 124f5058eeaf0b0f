"""`storj-registry preview`: the store served read-only, exactly as Storj linksharing serves the bucket.

Pulls never reach the registry: linksharing serves the bucket's objects as static files (docs/storj.md). This
server does only what linksharing does (facts in the reference notes on Storj), so a `docker pull` from it proves
on a laptop that the bucket alone is enough:
- GET and HEAD (OPTIONS for CORS); any other method 405.
- The object at the URL path (percent-decoded, below the store's root or prefix); its stored Content-Type, or one
  guessed from the key's extension when none or a generic one is stored; Cache-Control when stored.
- A path ending in `/`: the object, else `<path>index.html`; `/v2` without the slash, with `v2/index.html`
  present, is a 303 to `/v2/`. A missing key is 404, with `404.html` of the root as its body when there is one.
- A single Range is 206, If-Modified-Since 304. Never ETag, Docker-Content-Digest or an API version header, and
  `Accept` is ignored: no registry logic at all (this module reads the store through `app.storage` only).
"""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from app.storage import ObjectInfo, Storage, StorageFault
from app.storage.base import check_key

SMALL_OBJECT_BYTES = 8 * 1024 * 1024  # read whole, with its metadata in the same request (manifests, documents)
UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# SeaweedFS answers a HEAD of an implicit "directory" key such as `v2/` with 200 and this type; Storj (and S3)
# answer 404, as no such object was written: it is absent here too.
IMPLICIT_DIRECTORY = "application/x-directory"
ALLOWED = "GET, HEAD, OPTIONS"


@dataclass
class Answer:
    """One request answered, for a log line or a test's assertions."""

    method: str
    path: str
    status: int
    range: str | None = None  # the Range header asked for
    sent: int = 0  # body bytes written (what linksharing's egress would bill)


@dataclass(frozen=True)
class Found:
    key: str
    info: ObjectInfo  # Content-Type as served
    body: bytes | None = None  # small objects, read with their metadata in one request


class UnsatisfiableRange(ValueError):
    """The Range header cannot be served: 416."""


class Preview:
    """Serve `storage` over plain HTTP on `host:port` (0: any free port) in background threads."""

    def __init__(
        self,
        storage: Storage,
        host: str = "127.0.0.1",
        port: int = 0,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> None:
        self.storage = storage
        self.on_answer = on_answer or (lambda answer: None)
        handler = type("BoundHandler", (_Handler,), {"preview": self})
        self.httpd = ThreadingHTTPServer((host, port), handler, bind_and_activate=True)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="preview", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Preview:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def lookup(self, key: str, with_body: bool) -> Found | None:
        """The object at exactly `key`, or None; a small one's body too when it will be sent."""
        info = self.stat(key)
        if info is None:
            return None
        if with_body and info.size <= SMALL_OBJECT_BYTES:
            found = self.storage.read_small(key)
            if found is None:
                return None
            body, info = found
            return Found(key, typed(key, info), body)
        return Found(key, typed(key, info))

    def stat(self, key: str) -> ObjectInfo | None:
        if not key or key.endswith("/"):
            return None
        try:
            info = self.storage.stat(check_key(key))
        except ValueError:  # outside the layout's grammar (`..`, empty components): no such object here
            return None
        return None if info is None or info.content_type == IMPLICIT_DIRECTORY else info


def typed(key: str, info: ObjectInfo) -> ObjectInfo:
    """The stored type, unless missing or generic: then the type guessed from the key's extension."""
    if info.content_type not in UNTYPED:
        return info
    guessed, _ = mimetypes.guess_type(key.rsplit("/", 1)[-1], strict=False)
    return replace(info, content_type=guessed or info.content_type or "application/octet-stream")


def key_for(url_path: str) -> str:
    """Object key for a URL path: the path without its leading `/`, percent-decoded."""
    return unquote(url_path).removeprefix("/")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as (first, last) inclusive, or None to send everything.

    Like Go's http.ServeContent behind linksharing, bad syntax and ranges starting past the end are 416. Several
    ranges are answered with the whole object here (linksharing would send multipart/byteranges, which no
    registry client asks for).
    """
    unit, equals, spec = header.partition("=")
    specs = [part.strip() for part in spec.split(",") if part.strip()]
    if unit.strip().lower() != "bytes" or not equals or not specs:
        raise UnsatisfiableRange(header)
    if len(specs) > 1:
        return None
    first_s, dash, last_s = (part.strip() for part in specs[0].partition("-"))
    numbers_ok = all(part == "" or (part.isascii() and part.isdigit()) for part in (first_s, last_s))
    if not dash or not numbers_ok or not (first_s or last_s):
        raise UnsatisfiableRange(header)
    if not first_s:  # suffix range: the last N bytes
        count = int(last_s)
        if count == 0 or size == 0:
            raise UnsatisfiableRange(header)
        return max(0, size - count), size - 1
    first = int(first_s)
    if first >= size or (last_s and int(last_s) < first):
        raise UnsatisfiableRange(header)
    return first, min(int(last_s), size - 1) if last_s else size - 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "storj-registry-preview"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are dropped after this
    preview: Preview
    answer: Answer | None = None

    def __getattr__(self, name: str) -> Any:
        """Any method other than GET/HEAD/OPTIONS (even unknown ones) is answered 405, never 501."""
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: each answer goes to `on_answer` instead."""

    def send_response(self, code: int, message: str | None = None) -> None:
        # A TLS handshake (docker and skopeo try HTTPS first) never becomes a request: no command, no path.
        headers = getattr(self, "headers", None)
        asked = headers.get("Range") if headers is not None else None
        self.answer = Answer(self.command or "", getattr(self, "path", ""), int(code), asked)
        self.preview.on_answer(self.answer)
        super().send_response(code, message)

    def do_OPTIONS(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", ALLOWED)
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _method_not_allowed(self) -> None:
        self.close_connection = True  # the request body is never read: the connection cannot be reused
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", ALLOWED)
        self._send_small_body(b"method not allowed\n", "text/plain; charset=utf-8", send_body=True, close=True)

    def _serve(self, send_body: bool) -> None:
        self.answer = None
        try:
            self._resolve_and_send(urlsplit(self.path).path, send_body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except KeyError:  # deleted between its metadata and its bytes (gc)
            self.close_connection = True
            if self.answer is None:
                self._send_not_found(send_body)
        except StorageFault:
            self.close_connection = True
            if self.answer is None:  # else it failed mid-body: all that can be done is to cut the connection
                self.send_response(HTTPStatus.BAD_GATEWAY)
                self._send_small_body(b"the store failed\n", "text/plain; charset=utf-8", send_body, close=True)

    def _resolve_and_send(self, url_path: str, send_body: bool) -> None:
        key = key_for(url_path)
        found = self.preview.lookup(key, send_body)
        if found is None and (key == "" or key.endswith("/")):
            found = self.preview.lookup(key + "index.html", send_body)
        if found is not None:
            self._send_object(found, send_body)
        elif not url_path.endswith("/") and self.preview.stat(key + "/index.html") is not None:
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", url_path + "/")
            self._send_small_body(b"", "text/html; charset=utf-8", send_body)
        else:
            self._send_not_found(send_body)

    def _send_not_found(self, send_body: bool) -> None:
        page = self.preview.lookup("404.html", send_body)
        if page is None:
            self.send_response(HTTPStatus.NOT_FOUND)
            self._send_small_body(b"404 page not found\n", "text/plain; charset=utf-8", send_body)
            return
        self._send_whole(HTTPStatus.NOT_FOUND, page, send_body)

    def _send_object(self, found: Found, send_body: bool) -> None:
        if self._not_modified(found.info):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self._send_common(found.info, with_type=False)
            self.end_headers()
            return
        size = found.info.size
        try:
            selected = parse_range(self.headers["Range"], size) if self.headers["Range"] else None
        except UnsatisfiableRange:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self._send_small_body(b"invalid range\n", "text/plain; charset=utf-8", send_body)
            return
        if selected is None:
            self._send_whole(HTTPStatus.OK, found, send_body)
            return
        first, last = selected
        body = self._body(found, first, last) if send_body else None  # opened first: a vanished object is a 404
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self._send_common(found.info)
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        self._stream(body)

    def _send_whole(self, status: HTTPStatus, found: Found, send_body: bool) -> None:
        body = self._body(found, 0, found.info.size - 1) if send_body and found.info.size else None
        self.send_response(status)
        self._send_common(found.info)
        self.send_header("Content-Length", str(found.info.size))
        self.end_headers()
        self._stream(body)

    def _body(self, found: Found, first: int, last: int) -> Iterator[bytes]:
        """Bytes `first..last`: from the object read with its metadata, or streamed from the store."""
        if found.body is not None:
            return iter([found.body[first : last + 1]])
        return self.preview.storage.read(found.key, first, last)

    def _not_modified(self, info: ObjectInfo) -> bool:
        since = self.headers["If-Modified-Since"]
        if not since or self.headers["If-None-Match"] or info.last_modified is None:  # as Go's ServeContent
            return False
        try:
            return int(info.last_modified) <= parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError):
            return False

    def _send_common(self, info: ObjectInfo, with_type: bool = True) -> None:
        if with_type:
            self.send_header("Content-Type", info.content_type)
        self.send_header("Accept-Ranges", "bytes")
        if info.last_modified is not None:
            self.send_header("Last-Modified", formatdate(info.last_modified, usegmt=True))
        self.send_header("Access-Control-Allow-Origin", "*")
        if info.cache_control:
            self.send_header("Cache-Control", info.cache_control)

    def _send_small_body(self, body: bytes, content_type: str, send_body: bool, close: bool = False) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if send_body and body:
            self._write(body)

    def _stream(self, body: Iterator[bytes] | None) -> None:
        """Copy the body to the client chunk by chunk: a blob is never held in memory whole."""
        for chunk in body or ():
            self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        if self.answer is not None:  # counted first: the client may read the bytes before this thread goes on
            self.answer.sent += len(chunk)
        self.wfile.write(chunk)
