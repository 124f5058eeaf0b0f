"""The test support code works: real SeaweedFS, the linksharing stand-in, daemonless OCI images, tool lookup."""

from __future__ import annotations

import ast
import gzip
import http.client
import io
import json
import random
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.support import images, static_server
from tests.support.seaweed import S3Server, start_seaweed
from tests.support.static_server import StaticBucketServer, UnsatisfiableRange, parse_range
from tests.support.tools import free_port, require_tool

BLOB = random.Random(42).randbytes(300_000)
BLOB_KEY = "v2/library/app/blobs/sha256:" + "ab" * 32
IMMUTABLE = "public, max-age=31536000, immutable"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"

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


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def share(s3: S3Server) -> Iterator[StaticBucketServer]:
    """A bucket laid out like the registry's, served from the bucket root."""
    s3.create_bucket("share")
    put = s3.client().put_object
    put(Bucket="share", Key="v2/index.html", Body=b"", ContentType="text/html")
    put(Bucket="share", Key=BLOB_KEY, Body=BLOB, ContentType="application/octet-stream")
    put(
        Bucket="share",
        Key="v2/library/app/manifests/v1.json",
        Body=b"{}",
        ContentType=MANIFEST_TYPE,
        CacheControl=IMMUTABLE,
    )
    put(Bucket="share", Key="x.json", Body=b"{}", ContentType="binary/octet-stream")  # what Storj stores untyped
    put(Bucket="share", Key="page.html", Body=b"<p>", ContentType="application/octet-stream")
    put(Bucket="share", Key="with space/a b.txt", Body=b"spaced", ContentType="text/plain")
    put(Bucket="share", Key="docs/index.html", Body=b"<h1>docs</h1>", ContentType="text/html")
    with StaticBucketServer(s3, "share") as server:
        yield server


@pytest.fixture(scope="module")
def rooted(s3: S3Server) -> Iterator[StaticBucketServer]:
    """A share whose root is the prefix `root/` of its bucket, with a 404.html page."""
    s3.create_bucket("rooted")
    put = s3.client().put_object
    put(Bucket="rooted", Key="root/v2/index.html", Body=b"", ContentType="text/html")
    put(Bucket="rooted", Key="root/file.txt", Body=b"inside", ContentType="text/plain")
    put(Bucket="rooted", Key="root/404.html", Body=b"<h1>gone</h1>", ContentType="text/html")
    put(Bucket="rooted", Key="outside.txt", Body=b"outside", ContentType="text/plain")
    with StaticBucketServer(s3, "rooted", prefix="root") as server:
        yield server


# --- SeaweedFS ---------------------------------------------------------------------------------------


def test_seaweed_stores_content_type_and_cache_control(s3: S3Server) -> None:
    s3.create_bucket("meta")
    client = s3.client()
    client.put_object(Bucket="meta", Key="p/m", Body=b"{}", ContentType=MANIFEST_TYPE, CacheControl="no-cache")
    client.put_object(Bucket="meta", Key="p/b", Body=b"12345", ContentType="application/octet-stream")
    client.put_object(Bucket="meta", Key="q/other", Body=b"x", ContentType="text/plain")

    found = s3.objects("meta", "p/")

    assert list(found) == ["p/b", "p/m"]
    assert found["p/m"].content_type == MANIFEST_TYPE
    assert found["p/m"].cache_control == "no-cache"
    assert (found["p/b"].size, found["p/b"].cache_control) == (5, None)
    assert set(s3.objects("meta")) == {"p/b", "p/m", "q/other"}


def test_client_ignores_a_dangling_aws_ca_bundle(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", "/nonexistent/ca.pem")
    assert "Buckets" in s3.client().list_buckets()


def test_empty_put_does_not_stall_the_next_put(s3: S3Server) -> None:
    """The client drops `Expect: 100-continue` (see seaweed.drop_expect_continue)."""
    s3.create_bucket("expect")
    client = s3.client(read_timeout=5, retries={"max_attempts": 1})
    started = time.monotonic()
    client.put_object(Bucket="expect", Key="empty", Body=b"")
    client.put_object(Bucket="expect", Key="full", Body=b"{}")
    assert time.monotonic() - started < 3


def test_two_seaweed_instances_run_side_by_side_and_stop_cleanly(s3: S3Server, tmp_path: Path) -> None:
    other = start_seaweed(tmp_path / "other")
    try:
        assert other.endpoint != s3.endpoint
        assert not set(other.ports) & set(s3.ports)
        assert other.client().list_buckets()["Buckets"] == []
    finally:
        process = other.process
        other.stop()
    assert process is not None and process.poll() is not None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other.ports[0]), timeout=2).close()
    assert not [p for port in other.ports for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]


# --- the linksharing stand-in ----------------------------------------------------------------------


def test_get_sends_the_object_with_linksharing_headers_only(share: StaticBucketServer) -> None:
    status, headers, body = request(share.url, "GET", "/" + BLOB_KEY)

    assert (status, body) == (200, BLOB)
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Length"] == str(len(BLOB))
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert datetime.now(UTC) - datetime.strptime(headers["Last-Modified"], "%a, %d %b %Y %H:%M:%S GMT").replace(
        tzinfo=UTC
    ) < timedelta(minutes=5)
    for absent in ("ETag", "Docker-Content-Digest", "Docker-Distribution-API-Version", "Cache-Control"):
        assert absent not in headers


def test_head_sends_the_same_headers_without_a_body(share: StaticBucketServer) -> None:
    status, headers, body = request(share.url, "HEAD", "/" + BLOB_KEY)
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(len(BLOB))
    assert headers["Content-Type"] == "application/octet-stream"


def test_stored_type_and_cache_control_are_served(share: StaticBucketServer) -> None:
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
        ("bytes=7-999999999", 7, 299_999),
    ],
)
def test_single_range_is_206(share: StaticBucketServer, spec: str, first: int, last: int) -> None:
    status, headers, body = request(share.url, "GET", "/" + BLOB_KEY, {"Range": spec})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(BLOB)}"
    assert body == BLOB[first : last + 1]


@pytest.mark.parametrize("spec", ["bytes=300000-", "bytes=9-3", "bytes=-0", "items=0-1", "bytes=a-b"])
def test_unsatisfiable_range_is_416(share: StaticBucketServer, spec: str) -> None:
    status, headers, _ = request(share.url, "GET", "/" + BLOB_KEY, {"Range": spec})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(BLOB)}"


def test_parse_range_edge_cases() -> None:
    assert parse_range("bytes=0-0", 1) == (0, 0)
    assert parse_range("bytes=-10", 4) == (0, 3)
    assert parse_range("bytes=0-1,4-5", 10) is None  # several ranges: whole object
    with pytest.raises(UnsatisfiableRange):
        parse_range("bytes=0-", 0)


def test_if_modified_since(share: StaticBucketServer) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    status, headers, body = request(share.url, "GET", "/" + BLOB_KEY, {"If-Modified-Since": later})
    assert (status, body) == (304, b"")
    assert "Last-Modified" in headers
    assert request(share.url, "GET", "/" + BLOB_KEY, {"If-Modified-Since": earlier})[0] == 200


@pytest.mark.parametrize("path", ["/missing", "/v2/library/app/blobs/sha256:" + "00" * 32, "/v2/library/", "/nothing/"])
def test_missing_key_and_directory_without_index_are_404(share: StaticBucketServer, path: str) -> None:
    # `/v2/library/` is an implicit directory that SeaweedFS would answer 200 for: Storj has no such object.
    status, headers, _ = request(share.url, "GET", path)
    assert status == 404
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH", "MKCOL"])
def test_writes_are_405(share: StaticBucketServer, method: str) -> None:
    status, headers, _ = request(share.url, method, "/" + BLOB_KEY)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD, OPTIONS"
    assert request(share.url, "HEAD", "/" + BLOB_KEY)[0] == 200  # untouched


def test_options_answers_cors(share: StaticBucketServer) -> None:
    status, headers, _ = request(share.url, "OPTIONS", "/v2/", {"Origin": "https://example.test"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_trailing_slash_serves_index_html(share: StaticBucketServer) -> None:
    assert request(share.url, "GET", "/v2/")[0] == 200
    status, headers, body = request(share.url, "GET", "/docs/")
    assert (status, headers["Content-Type"], body) == (200, "text/html", b"<h1>docs</h1>")


def test_v2_without_slash_redirects_303(share: StaticBucketServer) -> None:
    status, headers, _ = request(share.url, "GET", "/v2")
    assert (status, headers["Location"]) == (303, "/v2/")


@pytest.mark.parametrize(("path", "expected"), [("/x.json", "application/json"), ("/page.html", "text/html")])
def test_generic_stored_type_is_guessed_from_the_extension(share: StaticBucketServer, path: str, expected: str) -> None:
    status, headers, _ = request(share.url, "GET", path)
    assert status == 200
    assert headers["Content-Type"].split(";")[0] == expected


def test_path_is_percent_decoded(share: StaticBucketServer) -> None:
    assert request(share.url, "GET", "/" + BLOB_KEY.replace(":", "%3A"))[2] == BLOB
    assert request(share.url, "GET", "/with%20space/a%20b.txt")[2] == b"spaced"


def test_keep_alive_serves_several_requests_on_one_connection(share: StaticBucketServer) -> None:
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
    assert any(record.path == "/missing" and record.status == 404 for record in share.requests)


def test_prefix_is_the_share_root(rooted: StaticBucketServer) -> None:
    assert request(rooted.url, "GET", "/file.txt")[::2] == (200, b"inside")
    assert request(rooted.url, "GET", "/v2/")[0] == 200
    assert request(rooted.url, "GET", "/v2")[0] == 303
    status, headers, body = request(rooted.url, "GET", "/outside.txt")
    assert (status, headers["Content-Type"], body) == (404, "text/html", b"<h1>gone</h1>")


def test_body_is_read_from_the_version_that_was_headed(s3: S3Server, share: StaticBucketServer) -> None:
    """A tag rewritten between HEAD and GET must not mix old headers with new bytes."""
    put = s3.client().put_object
    put(Bucket="share", Key="moving", Body=b"old", ContentType="text/plain")
    stale = share.head("moving")
    put(Bucket="share", Key="moving", Body=b"newer", ContentType="text/plain")
    assert stale is not None
    with pytest.raises(static_server.ObjectChanged):
        share.open_body(stale, None)
    status, headers, body = request(share.url, "GET", "/moving")
    assert (status, headers["Content-Length"], body) == (200, "5", b"newer")


def test_static_server_does_not_import_the_service() -> None:
    tree = ast.parse(Path(static_server.__file__).read_text())
    modules = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in modules if name == "app" or name.startswith("app.")]


# --- daemonless images ---------------------------------------------------------------------------------


def test_make_layer_is_a_deterministic_gzip_tar_of_random_bytes() -> None:
    layer = images.make_layer(3, 10_000)
    assert layer == images.make_layer(3, 10_000)
    assert layer != images.make_layer(4, 10_000)
    assert len(layer) > 10_000  # incompressible
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        (member,) = tar.getmembers()
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == random.Random(3).randbytes(10_000)


def test_write_image_passes_skopeo_inspect(tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    layout = tmp_path / "layout"
    image = images.write_image(layout, "v1", [images.make_layer(1, 2048), images.make_layer(2, 100)], arch="arm64")
    images.write_image(layout, "v2", [images.make_layer(5, 10)])
    retagged = images.write_image(layout, "v1", [images.make_layer(1, 2048)])  # v1 now names this one

    raw = subprocess.run([skopeo, "inspect", "--raw", images.oci_ref(layout, "v1")], capture_output=True, check=True)
    assert raw.stdout == retagged.manifest_bytes
    config = json.loads(images.blob_path(layout, image.config_digest).read_bytes())
    assert config["architecture"] == "arm64"
    assert config["rootfs"]["diff_ids"][0] == images.diff_id(images.make_layer(1, 2048))
    inspected = subprocess.run([skopeo, "inspect", images.oci_ref(layout, "v2")], capture_output=True, check=True)
    assert json.loads(inspected.stdout)["Os"] == "linux"
    names = [m["annotations"][images.REF_NAME] for m in json.loads((layout / "index.json").read_text())["manifests"]]
    assert sorted(names) == ["v1", "v2"]


def test_write_index_copies_with_skopeo_all(tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    source, copy = tmp_path / "src", tmp_path / "copy"
    index = images.write_index(source, "multi", [("linux", "amd64"), ("linux", "arm64")], layer_size=512, seed=9)
    assert len(set(index.child_digests)) == 2

    subprocess.run(
        [skopeo, "copy", "--quiet", "--all", images.oci_ref(source, "multi"), images.oci_ref(copy, "multi")],
        check=True,
        capture_output=True,
    )
    raw = subprocess.run([skopeo, "inspect", "--raw", images.oci_ref(copy, "multi")], capture_output=True, check=True)
    assert raw.stdout == index.index_bytes
    for digest in index.child_digests:
        assert images.file_digest(images.blob_path(copy, digest)) == digest


def test_umoci_unpacks_a_generated_image(tmp_path: Path) -> None:
    umoci = require_tool("umoci")
    layout = tmp_path / "layout"
    images.write_image(layout, "t", [images.make_layer(11, 4096)])
    subprocess.run(
        [umoci, "unpack", "--rootless", "--image", f"{layout}:t", str(tmp_path / "bundle")],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "bundle/rootfs/layer-11.bin").read_bytes() == random.Random(11).randbytes(4096)


def test_skopeo_pulls_an_image_through_the_static_server(
    s3: S3Server, share: StaticBucketServer, tmp_path: Path
) -> None:
    """The stand-in is enough for a real client: the static layout written by hand, then pulled."""
    skopeo = require_tool("skopeo")
    image = images.write_image(tmp_path / "src", "v1", [images.make_layer(21, 50_000)])
    put = s3.client().put_object
    for digest in (image.config_digest, *image.layer_digests):
        body = images.blob_path(tmp_path / "src", digest).read_bytes()
        put(Bucket="share", Key=f"v2/demo/blobs/{digest}", Body=body, ContentType="application/octet-stream")
    for reference in (image.manifest_digest, "v1"):
        put(
            Bucket="share",
            Key=f"v2/demo/manifests/{reference}",
            Body=image.manifest_bytes,
            ContentType=image.media_type,
        )

    source = f"docker://{share.url.removeprefix('http://')}/demo:v1"
    subprocess.run(
        [skopeo, "copy", "--quiet", "--src-tls-verify=false", source, images.oci_ref(tmp_path / "pulled", "v1")],
        check=True,
        capture_output=True,
    )
    raw = subprocess.run(
        [skopeo, "inspect", "--raw", images.oci_ref(tmp_path / "pulled", "v1")], capture_output=True, check=True
    )
    assert raw.stdout == image.manifest_bytes


# --- tools -----------------------------------------------------------------------------------------------


def test_require_tool_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install skopeo"), monkeypatch.context() as patched:
        patched.setenv("PATH", "/nonexistent")
        patched.setattr("tests.support.tools.sys.executable", "/nonexistent/python")
        require_tool("skopeo")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-xyz"):
        require_tool("no-such-tool-xyz")
    assert require_tool("python").endswith("python")


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
