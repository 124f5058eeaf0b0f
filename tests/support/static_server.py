"""A stand-in for Storj linksharing serving a bucket on a custom domain (see docs: storj.md, "The pull side").

Read-only over S3 HeadObject/GetObject, deliberately independent of `app/`: pulls through it prove that the
bucket alone, as the service wrote it, is enough for `docker pull`. Only what linksharing does is done here:
no ETag, no Docker-Content-Digest, no Docker-Distribution-API-Version, `Accept` ignored.
"""

from __future__ import annotations

import mimetypes
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.exceptions import ClientError

from .seaweed import S3Server

CHUNK = 64 * 1024
UNTYPED = {"", "application/octet-stream", "binary/octet-stream"}
# SeaweedFS answers HEAD/GET on an implicit "directory" key such as `v2/` with 200 and this type; Storj (and
# S3) answer 404 because no such object was written, so treat it as absent.
SEAWEED_IMPLICIT_DIR = "application/x-directory"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str
    last_modified: datetime
    cache_control: str | None
    content_encoding: str | None
    etag: str | None  # only to read the same version that was HEADed; never sent


class ObjectChanged(Exception):
    """The object was rewritten between HeadObject and GetObject (a tag update during a pull)."""


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int
    range: str | None = None  # the Range header asked for
    sent: int = 0  # body bytes written to the client (what linksharing's egress would bill)


class StaticBucketServer:
    """Serve `bucket` (from key prefix `prefix`, the share root) over plain HTTP on 127.0.0.1."""

    def __init__(self, s3: S3Server, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self.root = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.s3 = s3.client()
        self.requests: list[RequestRecord] = []  # every request answered, for assertions about pulls
        self.url = ""
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        handler = type("BoundHandler", (_Handler,), {"share": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="static-bucket", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        return self.url

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StaticBucketServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def key_for(self, url_path: str) -> str:
        """Object key for a URL path: share root + path without its leading `/`, percent-decoded."""
        return self.root + unquote(url_path).removeprefix("/")

    def head(self, key: str) -> StoredObject | None:
        """The stored object's metadata, or None when there is no object at exactly `key`."""
        if not key or key == self.root:
            return None
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        stored_type = head.get("ContentType") or ""
        if stored_type == SEAWEED_IMPLICIT_DIR:
            return None
        return StoredObject(
            key=key,
            size=head["ContentLength"],
            content_type=served_content_type(key, stored_type),
            last_modified=head["LastModified"],
            cache_control=head.get("CacheControl"),
            content_encoding=head.get("ContentEncoding"),
            etag=head.get("ETag"),
        )

    def open_body(self, obj: StoredObject, byte_range: tuple[int, int] | None) -> Any:
        """The body of exactly the version `obj` describes, so headers and bytes always agree."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": obj.key}
        if obj.etag:
            kwargs["IfMatch"] = obj.etag
        if byte_range is not None:
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        try:
            return self.s3.get_object(**kwargs)["Body"]
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (404, 412):
                raise ObjectChanged(obj.key) from exc
            raise


def served_content_type(key: str, stored: str) -> str:
    """Stored type, unless missing or generic: then the type guessed from the key's extension."""
    if stored not in UNTYPED:
        return stored
    guessed, _ = mimetypes.guess_type(key.rsplit("/", 1)[-1], strict=False)
    return guessed or stored or "application/octet-stream"


class UnsatisfiableRange(ValueError):
    """The Range header cannot be served: 416."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as (first, last) inclusive, or None to ignore the header and send everything.

    Like Go's http.ServeContent behind linksharing, bad syntax and ranges starting past the end raise
    UnsatisfiableRange (416). Several ranges are answered with the whole object here (linksharing would send
    multipart/byteranges, which no registry client asks for).
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
    server_version = "linksharing-standin"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are dropped after this
    share: StaticBucketServer
    responded = False
    record: RequestRecord

    def __getattr__(self, name: str) -> Any:
        """Any method other than GET/HEAD/OPTIONS (even unknown ones) is answered 405, never 501."""
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self.responded = True
        # A TLS handshake (skopeo tries HTTPS first) never becomes a request: no command, no path.
        headers = getattr(self, "headers", None)
        range_header = headers.get("Range") if headers is not None else None
        self.record = RequestRecord(self.command or "", getattr(self, "path", ""), int(code), range_header)
        self.share.requests.append(self.record)
        super().send_response(code, message)

    def do_OPTIONS(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _method_not_allowed(self) -> None:
        # The request body is never read, so the connection cannot be reused.
        self.close_connection = True
        body = b"method not allowed\n"
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD, OPTIONS")
        self._send_small_body(body, "text/plain; charset=utf-8", send_body=True, close=True)

    def _serve(self, send_body: bool) -> None:
        url_path = urlsplit(self.path).path
        key = self.share.key_for(url_path)
        self.responded = False
        try:
            for attempt in range(3):
                try:
                    self._resolve_and_send(url_path, key, send_body)
                    break
                except ObjectChanged:
                    if attempt == 2:
                        raise
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except (ClientError, ObjectChanged) as exc:
            self.close_connection = True
            if self.responded:  # failed mid-body: all we can do is cut the connection
                return
            self.send_response(HTTPStatus.BAD_GATEWAY)
            self._send_small_body(f"storage error: {exc}\n".encode(), "text/plain", send_body, close=True)

    def _resolve_and_send(self, url_path: str, key: str, send_body: bool) -> None:
        share = self.share
        found = share.head(key)
        if found is None and (key == "" or key.endswith("/")):
            found = share.head(key + "index.html")
        if found is not None:
            self._send_object(found, send_body)
            return
        if not url_path.endswith("/") and share.head(key + "/index.html") is not None:
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", url_path + "/")
            self._send_small_body(b"", "text/html; charset=utf-8", send_body)
            return
        self._send_not_found(send_body)

    def _send_not_found(self, send_body: bool) -> None:
        page = self.share.head(self.share.root + "404.html")
        if page is None:
            self.send_response(HTTPStatus.NOT_FOUND)
            self._send_small_body(b"404 page not found\n", "text/plain; charset=utf-8", send_body)
            return
        body = self.share.open_body(page, None) if send_body else None
        self.send_response(HTTPStatus.NOT_FOUND)
        self._send_common(page)
        self.send_header("Content-Length", str(page.size))
        self.end_headers()
        self._stream(body)

    def _send_object(self, obj: StoredObject, send_body: bool) -> None:
        if self._not_modified(obj):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self._send_common(obj, with_type=False)
            self.end_headers()
            return
        try:
            byte_range = parse_range(self.headers["Range"], obj.size) if self.headers["Range"] else None
        except UnsatisfiableRange:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{obj.size}")
            self._send_small_body(b"invalid range\n", "text/plain; charset=utf-8", send_body)
            return
        length = obj.size if byte_range is None else byte_range[1] - byte_range[0] + 1
        body = self.share.open_body(obj, byte_range) if send_body and length > 0 else None
        self.send_response(HTTPStatus.PARTIAL_CONTENT if byte_range else HTTPStatus.OK)
        self._send_common(obj)
        if byte_range is not None:
            self.send_header("Content-Range", f"bytes {byte_range[0]}-{byte_range[1]}/{obj.size}")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self._stream(body)

    def _not_modified(self, obj: StoredObject) -> bool:
        since = self.headers["If-Modified-Since"]
        if not since or self.headers["If-None-Match"]:  # Go ignores the date when If-None-Match is sent
            return False
        try:
            when = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return obj.last_modified.replace(microsecond=0) <= when

    def _send_common(self, obj: StoredObject, with_type: bool = True) -> None:
        if with_type:
            self.send_header("Content-Type", obj.content_type)
            if obj.content_encoding:
                self.send_header("Content-Encoding", obj.content_encoding)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", format_datetime(obj.last_modified.astimezone(UTC), usegmt=True))
        self.send_header("Access-Control-Allow-Origin", "*")
        if obj.cache_control:
            self.send_header("Cache-Control", obj.cache_control)

    def _send_small_body(self, body: bytes, content_type: str, send_body: bool, close: bool = False) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def _stream(self, body: Any) -> None:
        """Copy an open S3 body to the client chunk by chunk; never holds a whole object in memory."""
        if body is None:
            return
        try:
            for chunk in body.iter_chunks(CHUNK):
                self.wfile.write(chunk)
                self.record.sent += len(chunk)
        finally:
            body.close()
