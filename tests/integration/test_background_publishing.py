"""A verified blob is acknowledged before its write to the bucket completes (REGISTRY_PUBLISH_IN_BACKGROUND, the
default), and a tag still never points at anything missing: the manifest waits for its blobs, retries a write
that failed, and another process sharing the staging disk publishes what the first one acknowledged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.conftest import proxied_settings, s3_settings
from tests.support.fault_proxy import FaultProxy, delay, unavailable
from tests.support.pushing import OCI_MANIFEST, digest, image_manifest
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server

NAME = "behind/app"
CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"a layer written behind the answer" * 100


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as proxy:
        yield proxy


def background(s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy | None, **extra: object) -> Settings:
    if proxy is not None:
        return proxied_settings(s3_server, bucket, tmp_path, proxy, publish_in_background=True, **extra)
    return s3_settings(s3_server, bucket, tmp_path, publish_in_background=True, **extra)


def put_blob(client: httpx.Client, data: bytes) -> httpx.Response:
    location = client.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    return client.put(location, params={"digest": digest(data)}, content=data)


def put_manifest(client: httpx.Client) -> httpx.Response:
    body = image_manifest(CONFIG, [LAYER])
    return client.put(f"/v2/{NAME}/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})


def blob_key(data: bytes) -> str:
    return f"v2/{NAME}/blobs/{digest(data)}"


def test_the_answer_comes_first_and_the_manifest_waits_for_the_write(
    s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    proxy.add(delay(1.5, method="PUT", path=f"/blobs/{digest(LAYER)}$"))
    with running_registry(background(s3_server, bucket, tmp_path, proxy)) as url, httpx.Client(base_url=url) as client:
        assert put_blob(client, CONFIG).status_code == 201
        assert put_blob(client, LAYER).status_code == 201
        assert blob_key(LAYER) not in s3_server.objects(bucket), "answered before the write completed"
        head = client.head(f"/v2/{NAME}/blobs/{digest(LAYER)}")  # docker asks right after its PUT
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(LAYER))

        assert put_manifest(client).status_code == 201
    stored = s3_server.objects(bucket)
    assert stored[blob_key(LAYER)].size == len(LAYER)
    writes = [seen.path for seen in proxy.seen if seen.operation == "PutObject"]
    layer_written = next(i for i, path in enumerate(writes) if path.endswith(digest(LAYER)))
    tag_written = next(i for i, path in enumerate(writes) if path.endswith("/manifests/v1"))
    assert layer_written < tag_written, "the tag was written before a blob it needs"


def test_a_write_that_failed_is_retried_by_the_manifest(
    s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    outage = proxy.add(unavailable(method="PUT", path=f"/blobs/{digest(LAYER)}$"))
    settings = background(s3_server, bucket, tmp_path, proxy, s3_max_attempts=1)
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert put_blob(client, CONFIG).status_code == 201
        assert put_blob(client, LAYER).status_code == 201  # verified; the store's trouble comes later
        refused = put_manifest(client)
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert f"v2/{NAME}/manifests/v1" not in s3_server.objects(bucket)

        proxy.faults.remove(outage)
        assert put_manifest(client).status_code == 201  # the client's retry: the blob is written first
    assert s3_server.objects(bucket)[blob_key(LAYER)].size == len(LAYER)


def test_a_retried_final_put_gets_the_same_answer(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    with running_registry(background(s3_server, bucket, tmp_path, None)) as url, httpx.Client(base_url=url) as client:
        location = client.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
        first = client.put(location, params={"digest": digest(LAYER)}, content=LAYER)
        again = client.put(location, params={"digest": digest(LAYER)}, content=LAYER)  # its answer was lost
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers["Docker-Content-Digest"] == digest(LAYER)
        other = client.put(location, params={"digest": digest(b"something else")})
        assert other.status_code == 404  # the session is done: it takes nothing more


def test_a_replica_sharing_the_staging_disk_waits_for_the_write_in_flight_and_writes_nothing(
    s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    """Replicas sharing one staging disk: the blob one acknowledged is written once, by the replica writing it; the
    other's manifest waits for that write (the session's lock), instead of writing the same key again."""
    proxy.add(delay(2, method="PUT", path=f"/blobs/{digest(LAYER)}$"))  # the first replica's write takes a while
    slow = background(s3_server, bucket, tmp_path, proxy)
    with FaultProxy(s3_server.endpoint) as counted:
        other = background(s3_server, bucket, tmp_path, counted)
        assert slow.staging_dir == other.staging_dir
        with running_registry(slow) as first_url, httpx.Client(base_url=first_url) as first:
            assert put_blob(first, CONFIG).status_code == 201
            assert put_blob(first, LAYER).status_code == 201
            with running_registry(other) as second_url, httpx.Client(base_url=second_url, timeout=30) as second:
                head = second.head(f"/v2/{NAME}/blobs/{digest(LAYER)}")
                assert head.status_code == 200  # acknowledged, so known to every replica on the staging disk
                assert put_manifest(second).status_code == 201
                assert second.get(f"/v2/{NAME}/blobs/{digest(LAYER)}").content == LAYER
        assert counted.count("PUT", path=f"/blobs/{digest(LAYER)}$") == 0
    assert proxy.count("PUT", path=f"/blobs/{digest(LAYER)}$") == 1
    assert s3_server.objects(bucket)[blob_key(LAYER)].size == len(LAYER)


def test_a_blob_get_redirected_to_the_bucket_right_after_its_201_finds_it_there(
    s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    """With REGISTRY_PUBLIC_URL a GET redirects to the bucket: not before the write behind the 201 is done."""
    proxy.add(delay(1, method="PUT", path=f"/blobs/{digest(LAYER)}$"))
    settings = background(s3_server, bucket, tmp_path, proxy, public_url="http://pull.example.com")
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert put_blob(client, LAYER).status_code == 201
        redirected = client.get(f"/v2/{NAME}/blobs/{digest(LAYER)}", follow_redirects=False)
        assert redirected.status_code == 307
        assert redirected.headers["Location"] == f"http://pull.example.com/{blob_key(LAYER)}"
        assert blob_key(LAYER) in s3_server.objects(bucket)
