"""Two replicas sharing one staging directory behind a per-request round-robin proxy: a real push succeeds.

This is the design the chart uses for several replicas (a ReadWriteMany staging volume): an upload session is a
directory on the shared volume, so whichever replica gets the next request of a push finds it there.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ops._service import ServiceProcess, s3_environment
from tests.support import images
from tests.support.pushing import digest
from tests.support.round_robin import RoundRobinProxy
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer
from tests.support.tools import require_tool

UPLOAD_PATH = "/blobs/uploads/"
PART_SIZE = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def replica_bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket("replicas")


@pytest.fixture(scope="module")
def proxy(
    s3_server: S3Server, replica_bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RoundRobinProxy]:
    workdir = tmp_path_factory.mktemp("replicas")
    # The smallest S3 part size, so the largest layer below is sent as several parts by one replica while it
    # arrives and completed by the other one, from the state both find on the shared staging directory.
    environment = s3_environment(
        s3_server, replica_bucket, workdir / "shared-staging", REGISTRY_S3_PART_SIZE=str(PART_SIZE)
    )
    replicas = [ServiceProcess(workdir / name, environment) for name in ("a", "b")]
    try:
        for replica in replicas:
            replica.wait_ready()
        with RoundRobinProxy([replica.url for replica in replicas]) as round_robin:
            yield round_robin
    finally:
        for replica in replicas:
            replica.stop()


def sessions_by_backend(proxy: RoundRobinProxy) -> dict[str, set[int]]:
    """Which backends served each upload session: POSTs are matched to their session by the Location answered."""
    served: dict[str, set[int]] = defaultdict(set)
    for entry in proxy.forwarded:
        url = entry.location if entry.method == "POST" else entry.path
        if UPLOAD_PATH in url:
            session = url.split(UPLOAD_PATH, 1)[1].split("?", 1)[0]
            if session:
                served[session].add(entry.backend)
    return served


def test_requests_alternate_and_a_chunked_upload_spans_both_replicas(proxy: RoundRobinProxy) -> None:
    blob = b"streamed through the proxy " * 20_000
    already = len(proxy.forwarded)
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        started = client.post("/v2/ops/chunked/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
        # A generator body goes out with Transfer-Encoding: chunked, as docker and skopeo send PATCH bodies.
        patched = client.patch(location, content=(blob[i : i + 65_536] for i in range(0, len(blob), 65_536)))
        assert patched.status_code == 202, patched.text
        finished = client.put(location, params={"digest": digest(blob)})
        assert finished.status_code == 201, finished.text
        fetched = client.get(f"/v2/ops/chunked/blobs/{digest(blob)}")
    assert fetched.content == blob
    assert [entry.backend for entry in proxy.forwarded[already:]] == [already % 2, 1 - already % 2] * 2
    session = location.rsplit("/", 1)[1]
    assert sessions_by_backend(proxy)[session] == {0, 1}


def test_skopeo_push_through_two_replicas_pulls_intact_from_the_bucket(
    proxy: RoundRobinProxy, s3_server: S3Server, replica_bucket: str, tmp_path: Path
) -> None:
    skopeo = require_tool("skopeo")
    sizes = ((71, 2 * PART_SIZE + 300_000), (72, 40_000), (73, 1_000))
    layers = [images.make_layer(seed, size) for seed, size in sizes]
    image = images.write_image(tmp_path / "source", "v1", layers)
    already = len(proxy.forwarded)

    push = [skopeo, "copy", "--quiet", "--dest-tls-verify=false", "--retry-times=0"]
    target = f"docker://{proxy.address}/ops/replicated:v1"
    subprocess.run([*push, images.oci_ref(tmp_path / "source", "v1"), target], check=True, capture_output=True)

    pushed = proxy.forwarded[already:]
    assert [entry.backend for entry in pushed] == [(already + i) % 2 for i in range(len(pushed))]
    assert proxy.counts()[0] > 5 and proxy.counts()[1] > 5
    assert all(entry.status < 500 for entry in pushed), [(e.method, e.path, e.status) for e in pushed]
    assert any(backends == {0, 1} for backends in sessions_by_backend(proxy).values())

    with StaticBucketServer(s3_server, replica_bucket) as share:
        source = f"docker://{share.url.removeprefix('http://')}/ops/replicated:v1"
        pulled = tmp_path / "pulled"
        pull = [skopeo, "copy", "--quiet", "--src-tls-verify=false", source, images.oci_ref(pulled, "v1")]
        subprocess.run(pull, check=True, capture_output=True)
    raw = subprocess.run([skopeo, "inspect", "--raw", images.oci_ref(pulled, "v1")], check=True, capture_output=True)
    assert raw.stdout == image.manifest_bytes
    for blob_digest in (image.config_digest, *image.layer_digests):
        assert images.file_digest(images.blob_path(pulled, blob_digest)) == blob_digest
