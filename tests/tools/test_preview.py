"""`storj-registry preview` serves a store as Storj linksharing would, on both backends: headers, ranges, index.html,
the 303 of `/v2`, 404.html, methods, no registry logic; and a real client pulls through it."""

from __future__ import annotations

import ast
import http.client
import random
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage import Storage, open_storage
from app.tools import preview
from app.tools.preview import Preview, UnsatisfiableRange, parse_range
from tests.conftest import filesystem_settings, s3_settings
from tests.support import images
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer
from tests.support.tools import require_tool

BLOB = random.Random(42).randbytes(300_000)
BLOB_KEY = "v2/library/app/blobs/sha256:" + "ab" * 32
IMMUTABLE = "public, max-age=31536000, immutable"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
OCTET = "application/octet-stream"

Response = tuple[int, http.client.HTTPMessage, bytes]


def request(base: str, method: str, path: str, headers: dict[str, str] | None = None) -> Response:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        return send(conn, method, path, headers)
    finally:
        conn.close()


def send(conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str] | None = None) -> Response:
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.headers, response.read()


def store_settings(backend: str, s3_server: S3Server, tmp_path: Path) -> Settings:
    if backend == "filesystem":
        return filesystem_settings(tmp_path)
    return s3_settings(s3_server, s3_server.new_bucket("preview"), tmp_path)


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Storage:
    """A store laid out like the registry's, plus a few objects of other kinds, on either backend."""
    settings = store_settings(request.param, request.getfixturevalue("s3_server"), tmp_path_factory.mktemp("store"))
    storage = open_storage(settings)
    storage.put_bytes("v2/index.html", b"", "text/html")
    storage.put_bytes(BLOB_KEY, BLOB, OCTET)
    storage.put_bytes("v2/library/app/manifests/v1.json", b"{}", MANIFEST_TYPE, IMMUTABLE)
    storage.put_bytes("x.json", b"{}", "binary/octet-stream")  # what Storj stores untyped
    storage.put_bytes("page.html", b"<p>", OCTET)
    storage.put_bytes("with space/a b.txt", b"spaced", "text/plain")
    storage.put_bytes("docs/index.html", b"<h1>docs</h1>", "text/html")
    return storage


@pytest.fixture(scope="module")
def share(store: Storage) -> Iterator[Preview]:
    with Preview(store) as server:
        yield server


@pytest.fixture(scope="module")
def rooted(s3_server: S3Server) -> Iterator[StaticBucketServer]:
    """A share whose root is the prefix `root/` of its bucket (REGISTRY_S3_PREFIX), with a 404.html page."""
    s3_server.create_bucket("rooted")
    put = s3_server.client().put_object
    put(Bucket="rooted", Key="root/v2/index.html", Body=b"", ContentType="text/html")
    put(Bucket="rooted", Key="root/file.txt", Body=b"inside", ContentType="text/plain")
    put(Bucket="rooted", Key="root/404.html", Body=b"<h1>gone</h1>", ContentType="text/html")
    put(Bucket="rooted", Key="outside.txt", Body=b"outside", ContentType="text/plain")
    with StaticBucketServer(s3_server, "rooted", prefix="root") as server:
        yield server


def test_get_sends_the_object_with_linksharing_headers_only(share: Preview) -> None:
    status, headers, body = request(share.url, "GET", "/" + BLOB_KEY)

    assert (status, body) == (200, BLOB)
    assert headers["Content-Type"] == OCTET
    assert headers["Content-Length"] == str(len(BLOB))
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Access-Control-Allow-Origin"] == "*"
    modified = datetime.strptime(headers["Last-Modified"], "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    assert datetime.now(UTC) - modified < timedelta(minutes=5)
    for absent in ("ETag", "Docker-Content-Digest", "Docker-Distribution-API-Version", "Cache-Control"):
        assert absent not in headers


def test_head_sends_the_same_headers_without_a_body(share: Preview) -> None:
    status, headers, body = request(share.url, "HEAD", "/" + BLOB_KEY)
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(len(BLOB))
    assert headers["Content-Type"] == OCTET


def test_stored_type_and_cache_control_are_served(share: Preview) -> None:
    status, headers, body = request(share.url, "GET", "/v2/library/app/manifests/v1.json")
    assert (status, body) == (200, b"{}")
    assert headers["Content-Type"] == MANIFEST_TYPE  # not guessed from `.json`: a type was stored
    assert headers["Cache-Control"] == IMMUTABLE


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=299990-", 299_990, 299_999),
        ("bytes=-5", 299_995, 299_999),
        ("bytes=7-999999", 7, 299_999),
    ],
)
def test_single_range_is_206(share: Preview, spec: str, first: int, last: int) -> None:
    status, headers, body = request(share.url, "GET", "/" + BLOB_KEY, {"Range": spec})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(BLOB)}"
    assert body == BLOB[first : last + 1]


@pytest.mark.parametrize("spec", ["bytes=300000-", "bytes=9-3", "bytes=-0", "items=0-1", "bytes=a-b"])
def test_unsatisfiable_range_is_416(share: Preview, spec: str) -> None:
    status, headers, _ = request(share.url, "GET", "/" + BLOB_KEY, {"Range": spec})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(BLOB)}"


def test_parse_range_edge_cases() -> None:
    assert parse_range("bytes=0-0", 1) == (0, 0)
    assert parse_range("bytes=-10", 4) == (0, 3)
    assert parse_range("bytes=0-1,4-5", 10) is None  # several ranges: whole object
    with pytest.raises(UnsatisfiableRange):
        parse_range("bytes=0-", 0)


def test_if_modified_since(share: Preview) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    status, headers, body = request(share.url, "GET", "/" + BLOB_KEY, {"If-Modified-Since": later})
    assert (status, body) == (304, b"")
    assert "Last-Modified" in headers
    assert request(share.url, "GET", "/" + BLOB_KEY, {"If-Modified-Since": earlier})[0] == 200


@pytest.mark.parametrize(
    "path", ["/missing", "/v2/library/app/blobs/sha256:" + "00" * 32, "/v2/library/", "/nothing/", "/v2/../x.json"]
)
def test_missing_key_and_directory_without_index_are_404(share: Preview, path: str) -> None:
    # `/v2/library/` is an implicit directory that SeaweedFS would answer 200 for: Storj has no such object.
    status, headers, _ = request(share.url, "GET", path)
    assert status == 404
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH", "MKCOL"])
def test_writes_are_405(share: Preview, method: str) -> None:
    status, headers, _ = request(share.url, method, "/" + BLOB_KEY)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD, OPTIONS"
    assert request(share.url, "HEAD", "/" + BLOB_KEY)[0] == 200  # untouched


def test_options_answers_cors(share: Preview) -> None:
    status, headers, _ = request(share.url, "OPTIONS", "/v2/", {"Origin": "https://example.test"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_trailing_slash_serves_index_html(share: Preview) -> None:
    assert request(share.url, "GET", "/v2/")[0] == 200
    status, headers, body = request(share.url, "GET", "/docs/")
    assert (status, headers["Content-Type"], body) == (200, "text/html", b"<h1>docs</h1>")


def test_v2_without_slash_redirects_303(share: Preview) -> None:
    status, headers, _ = request(share.url, "GET", "/v2")
    assert (status, headers["Location"]) == (303, "/v2/")


@pytest.mark.parametrize(("path", "expected"), [("/x.json", "application/json"), ("/page.html", "text/html")])
def test_generic_stored_type_is_guessed_from_the_extension(share: Preview, path: str, expected: str) -> None:
    status, headers, _ = request(share.url, "GET", path)
    assert status == 200
    assert headers["Content-Type"].split(";")[0] == expected


def test_path_is_percent_decoded(share: Preview) -> None:
    assert request(share.url, "GET", "/" + BLOB_KEY.replace(":", "%3A"))[2] == BLOB
    assert request(share.url, "GET", "/with%20space/a%20b.txt")[2] == b"spaced"


def test_keep_alive_serves_several_requests_on_one_connection(share: Preview) -> None:
    host, port = share.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        assert send(conn, "GET", "/v2/")[0] == 200
        first_socket = conn.sock
        assert send(conn, "HEAD", "/" + BLOB_KEY)[0] == 200
        assert send(conn, "GET", "/missing")[0] == 404
        assert send(conn, "GET", "/x.json")[2] == b"{}"
        assert conn.sock is first_socket
    finally:
        conn.close()


def test_a_rewritten_object_is_served_whole_from_one_version(store: Storage, share: Preview) -> None:
    """A tag rewritten between two pulls: headers and bytes always of one version (read in one request)."""
    store.put_bytes("moving", b"old", "text/plain")
    assert request(share.url, "GET", "/moving")[2] == b"old"
    store.put_bytes("moving", b"newer", "text/plain")
    status, headers, body = request(share.url, "GET", "/moving")
    assert (status, headers["Content-Length"], body) == (200, "5", b"newer")


def test_answers_are_recorded_with_the_bytes_sent(s3_server: S3Server, rooted: StaticBucketServer) -> None:
    request(rooted.url, "GET", "/file.txt", {"Range": "bytes=0-1"})
    assert [(r.method, r.path, r.status, r.range, r.sent) for r in rooted.requests[-1:]] == [
        ("GET", "/file.txt", 206, "bytes=0-1", 2)
    ]


def test_the_s3_prefix_is_the_share_root(rooted: StaticBucketServer) -> None:
    assert request(rooted.url, "GET", "/file.txt")[::2] == (200, b"inside")
    assert request(rooted.url, "GET", "/v2/")[0] == 200
    assert request(rooted.url, "GET", "/v2")[0] == 303
    status, headers, body = request(rooted.url, "GET", "/outside.txt")
    assert (status, headers["Content-Type"], body) == (404, "text/html", b"<h1>gone</h1>")


def test_preview_holds_no_registry_logic() -> None:
    """It reads the store through `app.storage` and nothing else of the app: what it serves, the bucket holds."""
    tree = ast.parse(Path(preview.__file__).read_text())
    modules = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert {name for name in modules if name.startswith("app")} == {"app.storage", "app.storage.base"}


def test_skopeo_pulls_an_image_laid_out_by_hand(store: Storage, share: Preview, tmp_path: Path) -> None:
    """The static layout written without the registry, then pulled by a real client through the preview."""
    skopeo = require_tool("skopeo")
    image = images.write_image(tmp_path / "src", "v1", [images.make_layer(21, 50_000)])
    for digest in (image.config_digest, *image.layer_digests):
        store.put_bytes(f"v2/demo/blobs/{digest}", images.blob_path(tmp_path / "src", digest).read_bytes(), OCTET)
    for reference in (image.manifest_digest, "v1"):
        store.put_bytes(f"v2/demo/manifests/{reference}", image.manifest_bytes, image.media_type)

    source = f"docker://{share.url.removeprefix('http://')}/demo:v1"
    pulled = images.oci_ref(tmp_path / "pulled", "v1")
    subprocess.run(
        [skopeo, "copy", "--quiet", "--src-tls-verify=false", source, pulled], check=True, capture_output=True
    )
    raw = subprocess.run([skopeo, "inspect", "--raw", pulled], capture_output=True, check=True)
    assert raw.stdout == image.manifest_bytes
