"""The test support code works: real SeaweedFS, daemonless OCI images, tool lookup."""

from __future__ import annotations

import gzip
import io
import json
import random
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import images
from tests.support.seaweed import S3Server, start_seaweed
from tests.support.tools import free_port, require_tool

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


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
