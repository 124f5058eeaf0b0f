"""An upstream registry that lies, for `copy docker://…` and `sync`: the answers are scripted, every request logged.

The reference registry (tests/mirror/upstream.py) never sends a 64 MiB gzip bomb, an endless tags list, a `Link`
to another host or `Retry-After: ²`; this stand-in sends whatever a test scripts, over plain HTTP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app import layout
from app.storage import Storage
from tests.support.pushing import OCI_MANIFEST, descriptor, digest

EMPTY_CONFIG = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
LAYER = b"a layer of a hostile upstream\n"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class Answer:
    """One scripted answer: status, headers and body (sent chunked when `chunked`, gzip-encoded when `gzip`)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    gzip: bool = False


SHARED_KEYS = (layout.CATALOG, layout.INDEX_HTML)
SHARED_PREFIXES = (layout.BLOB_LOCATIONS,)  # where a blob of any repository is recorded


def keys_outside(storage: Storage, name: str) -> list[str]:
    """The keys under `v2/` that belong neither to repository `name` nor to the shared documents a copy updates."""
    own = (f"v2/{name}/", layout.catalog_entry(name))
    return sorted(
        key
        for key in storage.list("v2/")
        if key not in SHARED_KEYS and not key.startswith(own) and not key.startswith(SHARED_PREFIXES)
    )


def image_manifest() -> bytes:
    """A small valid image whose blobs the stand-in serves."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(EMPTY_TYPE, EMPTY_CONFIG),
        "layers": [descriptor(LAYER_TYPE, LAYER)],
    }
    return json.dumps(document).encode()


def tags_page(tags: list[Any], next_url: str | None = None) -> Answer:
    headers = {"Content-Type": "application/json"}
    if next_url is not None:
        headers["Link"] = f'<{next_url}>; rel="next"'
    return Answer(body=json.dumps({"name": "team/app", "tags": tags}).encode(), headers=headers)


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, list[str]]
    authorization: str | None


Script = Callable[[str, dict[str, list[str]], int], Answer | None]  # (path, query, nth request) -> answer


class HostileUpstream:
    """Answers `/v2/`, blobs and manifests of a small valid image; `script` overrides any request it answers.

    With `credentials`, every request without them gets a Basic challenge (as a registry behind htpasswd).
    """

    def __init__(self, script: Script | None = None, credentials: tuple[str, str] | None = None) -> None:
        self.script = script or (lambda _path, _query, _nth: None)
        self.credentials = credentials
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        manifest = image_manifest()
        self.manifest_digest = digest(manifest)
        self.documents = {
            "/v2/team/app/manifests/v1": Answer(body=manifest, headers={"Content-Type": OCI_MANIFEST}),
            f"/v2/team/app/manifests/{self.manifest_digest}": Answer(
                body=manifest, headers={"Content-Type": OCI_MANIFEST}
            ),
            f"/v2/team/app/blobs/{digest(EMPTY_CONFIG)}": Answer(body=EMPTY_CONFIG),
            f"/v2/team/app/blobs/{digest(LAYER)}": Answer(body=LAYER),
            "/v2/team/app/tags/list": tags_page(["v1"]),
        }
        self.server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)  # quick to stop

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HostileUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, path_part: str) -> int:
        with self.lock:
            return sum(path_part in seen.path for seen in self.seen)

    def answer(self, path: str, query: dict[str, list[str]], authorization: str | None) -> Answer:
        with self.lock:
            self.seen.append(Seen(path, query, authorization))
            nth = sum(seen.path == path for seen in self.seen)
        if self.credentials and authorization != _basic(self.credentials):
            return Answer(401, headers={"WWW-Authenticate": 'Basic realm="hostile"'})
        scripted = self.script(path, query, nth)
        if scripted is not None:
            return scripted
        if path == "/v2/":
            return Answer(body=b"{}")
        return self.documents.get(path, Answer(404, body=b'{"errors":[{"code":"NOT_FOUND"}]}'))


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is what a limit does: no traceback on the test's stderr."""


def _basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


def _handler_for(upstream: HostileUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            answer = upstream.answer(url.path, parse_qs(url.query), self.headers.get("Authorization"))
            body = gzip.compress(answer.body, compresslevel=1, mtime=0) if answer.gzip else answer.body
            try:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.gzip:
                    self.send_header("Content-Encoding", "gzip")
                if answer.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(body), 1 << 20):
                        piece = body[start : start + (1 << 20)]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what a limit does
                self.close_connection = True

    return Handler
