"""What a push costs in S3 requests, by operation, for each shape of client: a later change that adds a request
to a push fails here. Counted by a proxy between the service and SeaweedFS, which also applies Storj's limit of
about one write per second to a key (so a push that writes one key twice in a second is seen).

The layout needs, for an image of N blobs pushed to a new repository: N blob writes, the manifest by digest and
by tag, `tags/list`, and the catalog (its entry and the document); `v2/index.html` once per process (create-only).
Reads: one listing of the repository's blobs and one of its manifests, and a read of its tags list, when the first
HEAD comes (one round trip). A derived document is written naming the version read (If-Match) on a store that
honours it (SeaweedFS here). On a store that does not (Storj's rules), each write of a document writes its next
version first (create-only) and looks for a later one after (app/registry/documents.py): one PUT and one GET more
per document, none of them listings, so a push costs the same in a repository of any size; the first HEAD also
lists the tags list's versions, and a document without versions yet (a new repository, or the catalog of a new
bucket) lists its versions and the truth once, at the same time. The catalog and the location records are read
once at start, off any push (`Registry.warm`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.registry import build_registry
from app.settings import Settings
from tests.conftest import proxied_settings
from tests.support.fault_proxy import FaultProxy, no_conditional_overwrite, storj_write_limit
from tests.support.images import Image, make_layer, oci_ref, write_image
from tests.support.pushing import OCI_MANIFEST, digest, image_manifest, monolithic_push
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.tools import require_tool

LAYERS = 8
BLOBS = LAYERS + 1  # and the config
# blobs, manifest by digest and tag, tags/list, catalog entry and document, and v2/index.html (once per process)
NEW_REPOSITORY_WRITES = {"PutObject": BLOBS + 2 + 1 + 2 + 1}
HEAD_TIME_READS = {"ListObjectsV2": 2, "GetObject": 1}  # the repository's blobs, manifests and tags list
STORES = ["if-match", "storj-rules"]
STORJ_KEY_INTERVAL = 1.0  # Storj's write limit per key (tests/support/fault_proxy.py, storj_write_limit)


def costs(store: str, writes: int, written: int = 0, new: int = 0) -> dict[str, int]:
    """A push's requests: `writes` PUTs of the layout, of which `written` are derived documents (`new` of them
    without versions yet), and the first HEAD's reads."""
    if store == "if-match":
        found = {"PutObject": writes} | HEAD_TIME_READS
    else:
        listings = HEAD_TIME_READS["ListObjectsV2"] + 1 + 2 * new  # the tags list's versions; a new chain's start
        found = {"PutObject": writes + written, "ListObjectsV2": listings, "GetObject": 1 + written}
    return {operation: count for operation, count in found.items() if count}


def new_repository(store: str) -> dict[str, int]:
    return costs(store, NEW_REPOSITORY_WRITES["PutObject"], written=2, new=2)  # tags/list and the catalog


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def proxy(s3_server: S3Server, store: str) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as proxy:
        if store == "storj-rules":
            proxy.add(no_conditional_overwrite())
        yield proxy


@pytest.fixture
def storj_limits(proxy: FaultProxy) -> Iterator[None]:
    """Storj's per-key write limit: a push that writes one key twice within a second meets `SlowDown`."""
    throttle = proxy.add(storj_write_limit())
    yield
    assert throttle.hits == 0, f"a push met Storj's per-key write limit (SlowDown) on {throttle.throttled}"


def counted_settings(s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy) -> Settings:
    # publishing in the background is the default; the gc watch (one GET a replica every 10 s) is not a push's
    return proxied_settings(s3_server, bucket, tmp_path, proxy, publish_in_background=True, gc_watch_seconds=300)


@contextmanager
def started(settings: Settings, proxy: FaultProxy) -> Iterator[str]:
    """A registry whose start-up work (gc announcement, store probe, warm-up) is over, its requests forgotten."""
    registry = build_registry(settings)
    with running_registry(settings, registry) as url:
        assert registry.started_up.wait(30)
        proxy.quiet()
        proxy.forget_requests()
        yield url


@pytest.fixture
def registry(s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy, storj_limits: None) -> Iterator[str]:
    with started(counted_settings(s3_server, bucket, tmp_path, proxy), proxy) as url:
        yield url


@pytest.fixture
def image(tmp_path: Path) -> Image:
    layers = [make_layer(seed, 2048 + seed) for seed in range(LAYERS)]
    return write_image(tmp_path / "src", "1", layers)


def skopeo_push(image_dir: Path, url: str, reference: str) -> None:
    command = [require_tool("skopeo"), "--insecure-policy", "copy", "--dest-tls-verify=false"]
    command += [oci_ref(image_dir, "1"), f"docker://{url.removeprefix('http://')}/{reference}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_skopeo_push_to_a_new_repository(
    registry: str, proxy: FaultProxy, tmp_path: Path, image: Image, store: str
) -> None:
    skopeo_push(tmp_path / "src", registry, "team/app:1")
    proxy.quiet()
    assert proxy.operations() == new_repository(store)


def test_retag_of_an_image_already_pushed(
    s3_server: S3Server, bucket: str, registry: str, proxy: FaultProxy, tmp_path: Path, image: Image, store: str
) -> None:
    skopeo_push(tmp_path / "src", registry, "team/app:1")
    fresh_settings = counted_settings(s3_server, bucket, tmp_path, proxy)
    with started(fresh_settings, proxy) as fresh:  # another replica, or a restart: it remembers nothing
        time.sleep(STORJ_KEY_INTERVAL)  # tags/list was written just now: Storj takes one write a second to a key
        proxy.forget_requests()
        skopeo_push(tmp_path / "src", fresh, "team/app:2")
        proxy.quiet()
        # the tag, then tags/list; the reads of the first HEAD answer every other question
        assert proxy.operations() == costs(store, 2, written=1)

        time.sleep(STORJ_KEY_INTERVAL)
        proxy.forget_requests()
        skopeo_push(tmp_path / "src", fresh, "team/app:2")  # the same tag again, as a CI retry does
        proxy.quiet()
        assert proxy.operations() == {"PutObject": 1}


def test_replicas_starting_together_write_no_key_within_a_second(
    s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy, storj_limits: None
) -> None:
    """A rollout starts replicas together: their start-up writes (presence, the If-Match probe, the page) must not
    meet Storj's per-key limit (asserted by `storj_limits`)."""
    first, second = (counted_settings(s3_server, bucket, tmp_path, proxy) for _ in range(2))
    with started(first, proxy), started(second, proxy):
        pass


def docker_style_push(client: httpx.Client, name: str, tag: str, blobs: list[bytes]) -> None:
    """docker's sequence: HEAD, POST, one streamed PATCH (no length), empty PUT, HEAD again; then the manifest."""
    for blob in blobs:
        assert client.head(f"/v2/{name}/blobs/{digest(blob)}").status_code == 404
        location = client.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
        patched = client.patch(location, content=iter([blob[: len(blob) // 2], blob[len(blob) // 2 :]]))
        assert patched.status_code == 202
        assert client.put(patched.headers["Location"], params={"digest": digest(blob)}).status_code == 201
        assert client.head(f"/v2/{name}/blobs/{digest(blob)}").status_code == 200
    manifest = image_manifest(blobs[0], blobs[1:])
    pushed = client.put(f"/v2/{name}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert pushed.status_code == 201


@pytest.mark.parametrize("push", [docker_style_push, monolithic_push])
def test_client_shapes_cost_the_same(registry: str, proxy: FaultProxy, push: object, store: str) -> None:
    blobs = [b'{"architecture":"amd64","os":"linux"}'] + [f"layer {i}".encode() * 500 for i in range(LAYERS)]
    with httpx.Client(base_url=registry) as client:
        push(client, "team/app", "1", blobs)  # type: ignore[operator]
    proxy.quiet()
    assert proxy.operations() == new_repository(store)


def test_concurrent_first_heads_read_the_repository_once(registry: str, proxy: FaultProxy, store: str) -> None:
    """docker and containerd push four layers at a time: their first HEADs share one listing and one read."""
    digests = [digest(f"layer {i}".encode()) for i in range(4)]

    def head(blob: str) -> int:
        with httpx.Client(base_url=registry) as client:
            return client.head(f"/v2/team/app/blobs/{blob}").status_code

    with ThreadPoolExecutor(len(digests)) as pool:
        assert list(pool.map(head, digests)) == [404] * len(digests)
    proxy.quiet()
    assert proxy.operations() == costs(store, 0)


def test_mount_is_one_copy(registry: str, proxy: FaultProxy) -> None:
    blob = b"a layer to mount" * 100
    with httpx.Client(base_url=registry) as client:
        location = client.post("/v2/base/blobs/uploads/").headers["Location"]
        assert client.put(location, params={"digest": digest(blob)}, content=blob).status_code == 201
        proxy.quiet()
        proxy.forget_requests()
        mounted = client.post("/v2/team/app/blobs/uploads/", params={"mount": digest(blob), "from": "base"})
        assert mounted.status_code == 201
        missing = client.post("/v2/team/app/blobs/uploads/", params={"mount": digest(b"nowhere"), "from": "base"})
        assert missing.status_code == 202
    proxy.quiet()
    assert proxy.operations() == {"CopyObject": 2}  # one that copied, one that found nothing to copy
